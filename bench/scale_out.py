"""Scale-out: plans per minute on 1 and 2 worker processes, and the database load per plan.

A sandbox (the simulated exchange behind the Alpaca-compatible API, in accelerated time)
hosts N accounts; K plans per account are queued; W `trimtab worker` processes run them
(each account's plans one after another, accounts in parallel). Each run gets a fresh
database of its own on the server, so PostgreSQL's statistics for it count only trimtab:
transactions and rows written and read per plan, split between the queue (procrastinate)
and the ledger. pg_stat_statements is used when the server preloads it.

    python bench/scale_out.py [--workers 1,2] [--accounts 10] [--plans 4] [--concurrency 5]
        [--speed 20] [--database postgresql://postgres@127.0.0.1:5432/test]

Plans per minute are counted from the first plan's start to the last plan's end in the
ledger (worker start-up excluded); the wall time from the workers' launch is shown too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy.engine import make_url

from trimtab.adapters.clock import SystemClock
from trimtab.adapters.sandbox import AccountConfig, start_sandbox
from trimtab.domain.plan import RebalancePlan
from trimtab.worker import (
    Database,
    SubmitOutcome,
    Submitter,
    ensure_ledger_schema,
    ensure_queue_schema,
    load_accounts,
)

BOOT = (
    "import typer; from trimtab.cli.scale import register; "
    "app = typer.Typer(pretty_exceptions_enable=False); register(app); app(prog_name='trimtab')"
)
EXECUTION = {
    "lease_ttl": 5,
    "ladders": {"NORMAL": {"fill_wait": 0.5, "steps": ["0", "0.5", "1"]}},
    "settlement_timeout": 10,
    "sell_phase_timeout": 30,
    "buy_phase_timeout": 30,
    "plan_timeout": 60,
}
WORKER_TIMING = ("--heartbeat", "1", "--stalled-after", "5", "--stall-check", "1", "--poll", "0.5")
STAT_COLUMNS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")


def plan_items(number: int) -> list[dict[str, Any]]:
    """A sell and a buy, or a single buy, in turn: small realistic daily plans."""
    if number % 2 == 0:
        return [
            {"symbol": "SPY", "action": "SELL", "trade_amount": "-800"},
            {"symbol": "QQQ", "action": "BUY", "trade_amount": "700"},
        ]
    return [{"symbol": "IBM", "action": "BUY", "trade_amount": "500"}]


@dataclass
class RunFigures:
    workers: int
    plans: int
    span: float
    mean_plan: float
    wall: float
    queue_submit: dict[str, float]
    load: dict[str, float]
    tables: dict[str, tuple[int, int, int]]
    statements: int | None
    peak_connections: int
    worker_cpu: float
    sandbox_cpu: float
    postgres_cpu: float | None

    @property
    def per_minute(self) -> float:
        return self.plans / self.span * 60 if self.span > 0 else float("nan")


@contextmanager
def fresh_database(server_url: str) -> Iterator[Database]:
    """A new, empty database on the server, dropped afterwards."""
    url = make_url(server_url).set(drivername="postgresql")
    name = f"trimtab_bench_{uuid.uuid4().hex[:10]}"
    admin = url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Database.from_url(url.set(database=name).render_as_string(hide_password=False))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_stats(database: Database) -> dict[str, float]:
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            f"SELECT {', '.join(STAT_COLUMNS)} FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return {column: float(value) for column, value in zip(STAT_COLUMNS, row, strict=True)}


def table_stats(database: Database) -> dict[str, tuple[int, int, int]]:
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        ).fetchall()
    return {name: (ins, upd, dele) for name, ins, upd, dele in rows}


def statement_count(database: Database) -> int | None:
    """Statements executed in the database, if pg_stat_statements is loaded (else None)."""
    try:
        with psycopg.connect(database.conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            row = conn.execute(
                "SELECT sum(calls) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = current_database()"
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0] or 0) if row else 0


class ConnectionSampler(threading.Thread):
    """The most connections the database had at once, sampled every 100 ms."""

    def __init__(self, database: Database) -> None:
        super().__init__(daemon=True)
        self._database = database
        self._done = threading.Event()
        self.peak = 0

    def run(self) -> None:
        with psycopg.connect(self._database.conninfo, autocommit=True) as conn:
            while not self._done.wait(0.1):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) - 1 if row else 0)

    def stop(self) -> None:
        self._done.set()
        self.join()


def postgres_cpu(database: Database) -> float | None:
    """CPU seconds used by the PostgreSQL server so far: the postmaster and its children,
    exited ones included (read from /proc, when the server runs on this machine)."""
    try:
        with psycopg.connect(database.conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            # Read while the backend lives: its parent is the postmaster.
            status = Path(f"/proc/{row[0]}/status").read_text()
        postmaster = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        total = _proc_cpu(postmaster, children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = next(
                        line.split()[1]
                        for line in (entry / "status").read_text().splitlines()
                        if line.startswith("PPid:")
                    )
                    if parent == postmaster:
                        total += _proc_cpu(entry.name, children=False)
                except (OSError, StopIteration):
                    continue  # the process ended meanwhile
        return total
    except (OSError, psycopg.Error, StopIteration):
        return None


def _proc_cpu(pid: str, *, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: utime, stime, cutime, cstime are fields 12..15 (0-based, from state).
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def plan_span(database: Database) -> tuple[float, float]:
    """Seconds from the first plan's claim to the last plan's finish, and a plan's mean
    duration (claim to finish), from the ledger."""
    with psycopg.connect(database.conninfo) as conn:
        rows = conn.execute(
            "SELECT min(time), max(time) FROM ledger_plan_history GROUP BY plan_ref"
        ).fetchall()
    assert rows
    first = min(row[0] for row in rows)
    last = max(row[1] for row in rows)
    mean = sum((row[1] - row[0]).total_seconds() for row in rows) / len(rows)
    return float((last - first).total_seconds()), mean


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


def _launcher(folder: str, profile: Path | None, number: int) -> list[str]:
    """How to start a worker: `trimtab` from the app that register() builds, maybe profiled."""
    if profile is None:
        return [sys.executable, "-c", BOOT]
    script = Path(folder) / "worker.py"
    script.write_text(BOOT.replace("; ", "\n"))
    return [sys.executable, "-m", "cProfile", "-o", f"{profile}.{number}", str(script)]


def run(
    server_url: str,
    workers: int,
    accounts: int,
    plans_per_account: int,
    concurrency: int,
    speed: float,
    profile: Path | None = None,
) -> RunFigures:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as folder, fresh_database(server_url) as database:
        configs, entries, env = [], [], {}
        for number in range(accounts):
            key_id, secret = f"PKBENCH{number:03d}", uuid.uuid4().hex
            configs.append(
                AccountConfig(
                    key_id=key_id,
                    secret_key=secret,
                    name=f"bench{number:03d}",
                    account={"cash": "100000", "positions": {"SPY": "1000"}},
                )
            )
            env[f"BENCH_KEY_{number}"], env[f"BENCH_SECRET_{number}"] = key_id, secret
            entries.append(
                {
                    "name": f"bench{number:03d}",
                    "broker": "sandbox",
                    "key_id_env": f"BENCH_KEY_{number}",
                    "secret_key_env": f"BENCH_SECRET_{number}",
                }
            )
        handle = start_sandbox(configs, speed=speed, seed=5)
        try:
            for entry in entries:
                entry["url"] = handle.url
            accounts_file = Path(folder) / "accounts.yaml"
            accounts_file.write_text(
                yaml.safe_dump({"defaults": {"execution": EXECUTION}, "accounts": entries})
            )
            loaded = load_accounts(accounts_file)
            work = [
                (
                    entry["name"],
                    RebalancePlan.model_validate({"plan_id": f"plan-{k}", "items": plan_items(k)}),
                )
                for k in range(plans_per_account)
                for entry in entries
            ]

            async def submit() -> None:
                async with Submitter(database, loaded) as submitter:
                    for account, plan in work:
                        assert (await submitter.submit(account, plan)).outcome is SubmitOutcome.QUEUED

            # Create the schemas first, so the submit figures count only the queueing.
            asyncio.run(ensure_queue_schema(database))
            ensure_ledger_schema(database)
            before_submit = database_stats(database)
            asyncio.run(submit())
            before = database_stats(database)
            tables_before = table_stats(database)
            statements_before = statement_count(database)
            process_env = {**os.environ, **env, "TRIMTAB_DATABASE_URL": database.conninfo}
            started = clock.monotonic()
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            pg_before = postgres_cpu(database)
            self_before = resource.getrusage(resource.RUSAGE_SELF)
            processes = [
                subprocess.Popen(
                    [
                        *_launcher(folder, profile, n),
                        "worker",
                        "--accounts",
                        str(accounts_file),
                        "--burst",
                        "--concurrency",
                        str(concurrency),
                        "--name",
                        f"bench-w{n}",
                        *WORKER_TIMING,
                    ],
                    env=process_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for n in range(workers)
            ]
            sampler = ConnectionSampler(database)
            sampler.start()
            for process in processes:
                _, err = process.communicate(timeout=1800)
                if process.returncode != 0:
                    raise RuntimeError(f"a worker failed:\n{err.decode(errors='replace')[-4000:]}")
            wall = clock.monotonic() - started
            sampler.stop()
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            pg_after = postgres_cpu(database)
            self_after = resource.getrusage(resource.RUSAGE_SELF)
            after = database_stats(database)
            tables_after = table_stats(database)
            statements_after = statement_count(database)
            span, mean_plan = plan_span(database)
        finally:
            handle.stop()
    tables: dict[str, tuple[int, int, int]] = {}
    for name, (ins, upd, dele) in tables_after.items():
        ins0, upd0, dele0 = tables_before.get(name, (0, 0, 0))
        tables[name] = (ins - ins0, upd - upd0, dele - dele0)
    statements = (
        statements_after - statements_before
        if statements_after is not None and statements_before is not None
        else None
    )
    return RunFigures(
        workers=workers,
        plans=len(work),
        span=span,
        mean_plan=mean_plan,
        wall=wall,
        queue_submit=delta(before, before_submit),
        load=delta(after, before),
        tables=tables,
        statements=statements,
        peak_connections=sampler.peak,
        worker_cpu=_cpu(children_after) - _cpu(children_before),
        sandbox_cpu=_cpu(self_after) - _cpu(self_before),
        postgres_cpu=pg_after - pg_before if pg_after is not None and pg_before is not None else None,
    )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def report(figures: RunFigures) -> None:
    n = figures.plans
    load = figures.load
    print(
        f"\n{figures.workers} worker(s): {n} plans in {figures.span:.1f}s of trading "
        f"({figures.wall:.1f}s from launch) = {figures.per_minute:.0f} plans/minute; "
        f"a plan takes {figures.mean_plan:.2f}s on average"
    )
    print(
        f"  per plan: {load['xact_commit'] / n:.1f} transactions committed, "
        f"{load['xact_rollback'] / n:.1f} rolled back, "
        f"{(load['tup_inserted'] + load['tup_updated'] + load['tup_deleted']) / n:.1f} rows written "
        f"({load['tup_inserted'] / n:.1f} inserted, {load['tup_updated'] / n:.1f} updated, "
        f"{load['tup_deleted'] / n:.1f} deleted), {load['tup_fetched'] / n:.0f} rows fetched"
    )
    print(
        f"  CPU per plan: {figures.worker_cpu / n * 1000:.0f} ms in the workers (start-up included), "
        f"{figures.sandbox_cpu / n * 1000:.0f} ms in the sandbox"
        + (
            f", {figures.postgres_cpu / n * 1000:.0f} ms in PostgreSQL"
            if figures.postgres_cpu is not None
            else ""
        )
    )
    print(f"  database connections at the peak: {figures.peak_connections}")
    if figures.statements is not None:
        print(f"  per plan: {figures.statements / n:.1f} statements (pg_stat_statements)")
    queue = [v for k, v in figures.tables.items() if k.startswith("procrastinate")]
    ledger = [v for k, v in figures.tables.items() if k.startswith("ledger")]
    for label, group in (("queue (procrastinate)", queue), ("ledger", ledger)):
        ins, upd, dele = (sum(v[i] for v in group) for i in range(3))
        print(f"  {label}: {ins / n:.1f} inserts, {upd / n:.1f} updates, {dele / n:.1f} deletes per plan")
    busiest = sorted(figures.tables.items(), key=lambda kv: -sum(kv[1]))[:6]
    print(
        "  busiest tables (rows written per plan): " + ", ".join(f"{k} {sum(v) / n:.1f}" for k, v in busiest)
    )
    submit = figures.queue_submit
    print(
        f"  queueing: {submit['xact_commit'] / n:.1f} transactions and "
        f"{(submit['tup_inserted'] + submit['tup_updated']) / n:.1f} rows written per submitted plan"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma separated")
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--plans", type=int, default=4, help="plans per account")
    parser.add_argument("--concurrency", type=int, default=5, help="plans at once per worker")
    parser.add_argument("--speed", type=float, default=20.0, help="the sandbox market's speed factor")
    parser.add_argument(
        "--database",
        default=os.environ.get("TRIMTAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server URL (a fresh database is created on it per run)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run the workers under cProfile, writing PROFILE.<n> (pstats files)"
    )
    args = parser.parse_args()
    print(
        f"scale-out: {args.accounts} sandbox accounts x {args.plans} plans, concurrency {args.concurrency} "
        f"per worker, sandbox speed {args.speed:g}x, {os.cpu_count()} CPUs"
    )
    for count in (int(part) for part in args.workers.split(",")):
        report(
            run(args.database, count, args.accounts, args.plans, args.concurrency, args.speed, args.profile)
        )


if __name__ == "__main__":
    main()

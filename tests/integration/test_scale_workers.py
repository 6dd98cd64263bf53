"""Plans on a pool of worker processes over the real PostgreSQL of this machine.

The queue (procrastinate) and the ledger share one database; every test gets a schema
of its own (search_path in the URL), dropped afterwards. Workers are real processes
running `trimtab worker`; the sandbox (the simulated exchange behind an Alpaca-compatible
API) runs on a thread of the test process. Set TRIMTAB_TEST_POSTGRES_URL to use another
server; without a reachable PostgreSQL the tests are skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import pytest
import typer
import yaml
from procrastinate import App
from procrastinate.jobs import Job, Status
from typer.testing import CliRunner

from tests.pgkit import scratch_schema_url
from trimtab.adapters.clock import SystemClock
from trimtab.adapters.ledger import SqlLedger
from trimtab.adapters.sandbox import AccountConfig, SandboxHandle, start_sandbox
from trimtab.adapters.sim import SimBroker
from trimtab.cli.scale import register
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.ports.ledger import ClaimOutcome, PlanState, StateChange
from trimtab.worker import (
    QUEUE,
    TASK_NAME,
    Database,
    PlanBusyError,
    PlanPhase,
    PlanRetry,
    SubmitOutcome,
    Submitter,
    accounts_from_data,
    ensure_ledger_schema,
    execute_for_account,
    load_accounts,
    queue_status,
)
from trimtab.worker.queue import JobRuntime, build_app

# `trimtab submit|worker|status` without depending on the main app's wiring.
BOOT = (
    "import typer; from trimtab.cli.scale import register; "
    "app = typer.Typer(pretty_exceptions_enable=False); register(app); app(prog_name='trimtab')"
)
WORKER_TIMING = ("--heartbeat", "0.5", "--stalled-after", "2.5", "--stall-check", "0.5", "--poll", "0.5")
EXECUTION = {
    "lease_ttl": 3,
    "ladders": {"NORMAL": {"fill_wait": 0.5, "steps": ["0", "0.5", "1"]}},
    "settlement_timeout": 10,
    "sell_phase_timeout": 30,
    "buy_phase_timeout": 30,
    "plan_timeout": 60,
    "order_ack_timeout": 5,
}
T = TypeVar("T")
ACCOUNTS = 10
INITIAL: dict[str, Any] = {"cash": "50000", "positions": {"SPY": "100"}}
SANDBOX_SPEED = 10.0


def plans() -> list[dict[str, Any]]:
    """Each account's four plans, in order. Every account uses the same plan_ids (they are
    scoped by account), and daily-2 closes what daily-0 bought, so order matters."""
    return [
        {
            "plan_id": "daily-0",
            "items": [
                {"symbol": "SPY", "action": "SELL", "trade_amount": "-1000"},
                {"symbol": "AAPL", "action": "BUY", "trade_amount": "1500"},
            ],
        },
        {"plan_id": "daily-1", "items": [{"symbol": "QQQ", "action": "BUY", "trade_amount": "2000"}]},
        {"plan_id": "daily-2", "items": [{"symbol": "AAPL", "action": "SELL", "target_weight": "0"}]},
        {
            "plan_id": "daily-3",
            "items": [
                {"symbol": "QQQ", "action": "SELL", "trade_amount": "-500"},
                {"symbol": "IBM", "action": "BUY", "trade_amount": "1000"},
            ],
        },
    ]


# --- fixtures ---


@pytest.fixture
def database() -> Iterator[Database]:
    """The queue and the ledgers in a fresh schema of their own, dropped afterwards."""
    with scratch_schema_url("trimtab_scale") as url:
        yield Database.from_url(url)


class Workers:
    """Worker processes, their logs in files; whatever is left is killed at the end."""

    def __init__(self, folder: Path, database: Database, accounts_file: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = {
            **os.environ,
            **env,
            "TRIMTAB_DATABASE_URL": database.conninfo,
            "TRIMTAB_HOME": str(folder / "home"),
        }
        self.accounts_file = accounts_file
        self.conninfo = database.conninfo
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.application_names: dict[str, str] = {}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", BOOT, *args]

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        # Every database session of the worker carries this name (libpq's PGAPPNAME), so the
        # test can see in pg_stat_activity what the worker is doing.
        application_name = self.application_names[name] = f"trimtab-test-{name}-{uuid.uuid4().hex[:8]}"
        process = subprocess.Popen(
            self.command("worker", "--accounts", str(self.accounts_file), "--name", name, "-v", *args),
            env={**self.env, "PGAPPNAME": application_name},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[name] = process
        return process

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def sessions(self, name: str, *, active: bool = False) -> int:
        """The worker's database sessions (only those running a statement, with active)."""
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        if active:
            query += " AND state = 'active'"
        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute(query, (self.application_names[name],)).fetchone()
        return row[0] if row else 0

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.processes[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {name} did not finish in {timeout}s:\n{self.tail(name)}") from None

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def tail(self, name: str) -> str:
        return self.log(name)[-6000:]

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


@dataclass
class Firm:
    """Ten sandbox accounts, their accounts file and key pairs (in the workers' environment only)."""

    handle: SandboxHandle
    accounts_file: Path
    env: dict[str, str]
    keys: dict[str, str]
    """Account name to sandbox key id."""
    secrets: list[str]


@pytest.fixture
def firm(tmp_path: Path) -> Iterator[Firm]:
    configs, entries, env, keys = [], [], {}, {}
    for number in range(ACCOUNTS):
        name = f"acct{number:02d}"
        key_id, secret = f"PKSCALE{number:02d}", f"scale-secret-{uuid.uuid4().hex}"
        configs.append(AccountConfig(key_id=key_id, secret_key=secret, name=name, account=dict(INITIAL)))
        env[f"SCALE_KEY_{number}"], env[f"SCALE_SECRET_{number}"] = key_id, secret
        keys[name] = key_id
        entries.append(
            {
                "name": name,
                "broker": "sandbox",
                "key_id_env": f"SCALE_KEY_{number}",
                "secret_key_env": f"SCALE_SECRET_{number}",
            }
        )
    handle = start_sandbox(configs, speed=SANDBOX_SPEED, seed=21)
    try:
        for entry in entries:
            entry["url"] = handle.url
        accounts_file = tmp_path / "accounts.yaml"
        accounts_file.write_text(yaml.safe_dump({"defaults": {"execution": EXECUTION}, "accounts": entries}))
        secrets = [v for k, v in env.items() if k.startswith("SCALE_SECRET_")]
        yield Firm(handle, accounts_file, env, keys, secrets)
    finally:
        handle.stop()


@pytest.fixture
def workers(tmp_path: Path, database: Database, firm: Firm) -> Iterator[Workers]:
    pool = Workers(tmp_path, database, firm.accounts_file, firm.env)
    try:
        yield pool
    finally:
        pool.close()


# --- helpers ---


def submit_all(
    database: Database, accounts_file: Path, submissions: list[tuple[str, dict[str, Any]]]
) -> list[SubmitOutcome]:
    accounts = load_accounts(accounts_file)

    async def main() -> list[SubmitOutcome]:
        async with Submitter(database, accounts) as submitter:
            return [
                (await submitter.submit(account, RebalancePlan.model_validate(plan))).outcome
                for account, plan in submissions
            ]

    return asyncio.run(main())


def everything(names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, plan) for name in names for plan in plans()]


def scale_cli(database: Database, *args: str) -> tuple[int, str, str]:
    """`trimtab submit|worker|status` in this process."""
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    result = CliRunner().invoke(
        app, list(args), env={"TRIMTAB_DATABASE_URL": database.conninfo, "COLUMNS": "200"}
    )
    return result.exit_code, result.stdout, result.stderr


def poll(condition: Callable[[], bool], timeout: float, every: float = 0.01) -> bool:
    """Whether condition became true within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    if not poll(condition, timeout, every):
        raise AssertionError(f"timed out waiting for {what}")


def jobs_by_plan(database: Database) -> dict[tuple[str, str], list[tuple[int, str, int]]]:
    """(account, plan_id) -> [(job id, status, attempts)] from procrastinate's table."""
    with psycopg.connect(database.conninfo) as conn:
        rows = conn.execute(
            "SELECT args->>'account', args->>'plan_id', id, status::text, attempts "
            "FROM procrastinate_jobs ORDER BY id"
        ).fetchall()
    found: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for account, plan_id, job_id, status, attempts in rows:
        found[(account, plan_id)].append((job_id, status, attempts))
    return found


def broker_orders(firm: Firm, name: str) -> list[tuple[str, str, str, Decimal]]:
    """Every order the sandbox account received: (client order id, symbol, side, filled qty)."""
    account = firm.handle.account(firm.keys[name])
    return firm.handle.call(
        lambda: [
            (str(r.snapshot.client_order_id), r.snapshot.symbol, r.snapshot.side.value, r.snapshot.filled_qty)
            for r in account.records.values()
        ]
    )


def broker_positions(firm: Firm, name: str) -> dict[str, Decimal]:
    exchange: SimBroker = firm.handle.exchange(firm.keys[name])

    async def read() -> dict[str, Decimal]:
        return {s: p.qty for s, p in (await exchange.get_positions()).items() if p.qty != 0}

    positions: dict[str, Decimal] = firm.handle.call(cast("Callable[[], Any]", read))
    return positions


@dataclass
class Outcome:
    results: dict[str, ExecutionResult]
    intervals: list[tuple[Any, Any, str]]
    resumed: list[str]
    owners: set[str]
    histories: dict[str, list[StateChange]]


def check_account(database: Database, firm: Firm, name: str) -> Outcome:
    """Every plan done exactly once, in order, matching the broker's orders and positions."""
    with SqlLedger(database.ledger_url, account=name, migrate=False) as ledger:
        summaries = {s.plan_id: s for s in ledger.list_plans(limit=None)}
        assert sorted(summaries) == [p["plan_id"] for p in plans()], name
        results: dict[str, ExecutionResult] = {}
        intervals = []
        resumed = []
        owners: set[str] = set()
        histories: dict[str, list[StateChange]] = {}
        ledger_cids: list[str] = []
        before_takeover: set[str] = set()  # intents recorded before another owner took over
        result_filled: defaultdict[str, Decimal] = defaultdict(Decimal)
        for plan_id, summary in summaries.items():
            assert summary.state is PlanState.DONE, (name, plan_id, summary.state)
            result = ledger.stored_result(plan_id)
            assert result is not None
            assert result.status is ExecutionStatus.SUCCESS, (name, plan_id, result.model_dump_json(indent=1))
            results[plan_id] = result
            history = histories[plan_id] = ledger.history(plan_id)
            assert [h.note for h in history].count("new") == 1, (name, plan_id, history)
            resumed += [plan_id for h in history if h.note.startswith("resumed")]
            owners |= {h.owner.split("#")[0] for h in history if h.owner}
            intervals.append((history[0].time, history[-1].time, plan_id))
            intents = ledger.intents(plan_id)
            ledger_cids += [str(i.client_order_id) for i in intents]
            takeovers = [h.time for h in history if h.note.startswith("resumed (lease of")]
            if takeovers:
                before_takeover |= {str(i.client_order_id) for i in intents if i.time <= max(takeovers)}
            for order in result.orders:
                for attempt in order.attempts:
                    result_filled[str(attempt.client_order_id)] += attempt.filled_qty
    # No two plans of the account overlapped, and they ran in the order they were queued.
    intervals.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(intervals):
        assert start >= end, f"{name}: {second} started before {first} ended"
    assert [plan_id for _, _, plan_id in intervals] == [p["plan_id"] for p in plans()]
    # The broker saw each client order id once, and only orders the ledger recorded first.
    orders = broker_orders(firm, name)
    broker_cids = [cid for cid, _, _, _ in orders]
    assert len(broker_cids) == len(set(broker_cids)), f"{name}: duplicate client order ids at the broker"
    assert len(ledger_cids) == len(set(ledger_cids)), f"{name}: duplicate intents in the ledger"
    assert set(broker_cids) <= set(ledger_cids), (name, set(broker_cids) - set(ledger_cids))
    # The ledger records an order before it is sent: a worker killed in between leaves an
    # intent the broker never saw. Only a run that was taken over may have left one, and
    # nothing of it was filled; every other intent reached the broker.
    unsent = set(ledger_cids) - set(broker_cids)
    assert unsent <= before_takeover, (name, "intents never sent by a run that finished", unsent)
    assert not any(result_filled[cid] for cid in unsent), (name, unsent)
    for cid, _, _, filled in orders:
        assert result_filled[cid] == filled, (name, cid, result_filled[cid], filled)
    # Positions: the initial ones plus every fill, and each plan traded what it asked for.
    expected: defaultdict[str, Decimal] = defaultdict(Decimal, {"SPY": Decimal(INITIAL["positions"]["SPY"])})
    for plan in plans():
        result = results[plan["plan_id"]]
        for order, item in zip(result.orders, plan["items"], strict=True):
            assert order.symbol == item["symbol"]
            assert order.success, (name, plan["plan_id"], order)
            assert order.filled_shares <= order.shares, (name, plan["plan_id"], order)
            if "trade_amount" in item:
                planned = abs(Decimal(item["trade_amount"]))
                assert abs(order.filled_notional - planned) <= planned * Decimal("0.03"), (name, order)
            sign = 1 if order.side == "buy" else -1
            expected[order.symbol] += sign * order.filled_shares
    assert broker_positions(firm, name) == {s: q for s, q in expected.items() if q != 0}
    assert "AAPL" not in broker_positions(firm, name)
    return Outcome(results, intervals, resumed, owners, histories)


def check_queue(database: Database, names: list[str]) -> dict[tuple[str, str], list[tuple[int, str, int]]]:
    jobs = jobs_by_plan(database)
    assert set(jobs) == {(name, p["plan_id"]) for name in names for p in plans()}
    for key, entries in jobs.items():
        assert len(entries) == 1, f"{key} was queued {len(entries)} times"
        assert entries[0][1] == "succeeded", (key, entries)
    return jobs


def kill_mid_plan(
    workers: Workers, database: Database, name: str, finished_first: int
) -> list[tuple[str, str]]:
    """SIGKILL worker name at a moment it holds plans mid-trade (orders recorded), once it has
    finished finished_first plans; the plans it held then.

    Seeing a plan mid-trade and killing the worker are two steps: in between, the plan may
    finish (seen on a loaded machine), and then nothing is left to resume. So the worker is
    frozen first (SIGSTOP), the statements it has in flight on the server are let finish,
    and it is looked at again: what it holds while frozen is what it holds when killed. If
    it holds nothing mid-trade by then, it is thawed (SIGCONT) and watched further.
    """
    process = workers.processes[name]
    held: list[tuple[str, str]] = []

    def ready() -> bool:
        finished, holding = mid_plan(database, f"{name}#")
        return finished >= finished_first and bool(holding)

    def frozen_mid_plan() -> bool:
        if not ready():
            return False
        process.send_signal(signal.SIGSTOP)
        killed = False
        try:
            # Frozen only briefly (well under --stalled-after), then thawed and tried again.
            if not poll(lambda: workers.sessions(name, active=True) == 0, timeout=0.5):
                return False
            finished, holding = mid_plan(database, f"{name}#")
            if finished < finished_first or not holding:
                return False
            process.send_signal(signal.SIGKILL)
            killed = True
            held.extend(holding)
            return True
        finally:
            if not killed:
                process.send_signal(signal.SIGCONT)

    wait_until(frozen_mid_plan, timeout=60, what=f"worker {name} to be mid-plan, with plans done")
    process.wait(30)
    return held


def mid_plan(database: Database, owner_prefix: str) -> tuple[int, list[tuple[str, str]]]:
    """Plans a worker finished, and those it holds in a trading phase with orders sent."""
    with psycopg.connect(database.conninfo) as conn:
        finished = conn.execute(
            "SELECT count(*) FROM ledger_plan_history WHERE owner LIKE %s AND note LIKE 'finished%%'",
            (owner_prefix + "%",),
        ).fetchone()
        rows = conn.execute(
            "SELECT p.account, p.plan_id FROM ledger_plans p "
            "WHERE p.owner LIKE %s AND p.state IN ('SELLING', 'BUYING') "
            "AND EXISTS (SELECT 1 FROM ledger_intents i WHERE i.plan_ref = p.id)",
            (owner_prefix + "%",),
        ).fetchall()
    return (finished[0] if finished else 0), [(a, p) for a, p in rows]


# --- the tests ---


@pytest.mark.slow

def claim_plan(
    database: Database, account: str, plan: RebalancePlan, owner: str, *, lease: float, ago: float = 0.0
) -> None:
    """Take the plan in the account's ledger for owner, as a run elsewhere would have:
    `ago` seconds ago, with a lease of `lease` seconds."""
    ensure_ledger_schema(database)
    now = SystemClock().now() - timedelta(seconds=ago)
    with SqlLedger(database.ledger_url, account=account, migrate=False) as ledger:
        claim = ledger.begin_plan(
            plan.plan_id, plan.content_hash(), plan.model_dump_json(), None, owner,
            now=now, lease_ttl=timedelta(seconds=lease),
        )
        assert claim.outcome is ClaimOutcome.NEW

def test_two_workers_run_forty_plans_of_ten_accounts_each_exactly_once(
    database: Database, firm: Firm, workers: Workers
) -> None:
    names = [f"acct{n:02d}" for n in range(ACCOUNTS)]
    first = submit_all(database, firm.accounts_file, everything(names))
    assert first == [SubmitOutcome.QUEUED] * 40
    # The same plans again, before any worker runs: nothing more is queued.
    again = submit_all(database, firm.accounts_file, [(n, plans()[1]) for n in names])
    assert again == [SubmitOutcome.ALREADY_QUEUED] * ACCOUNTS

    started = time.monotonic()
    for worker in ("wA", "wB"):
        workers.start(worker, "--concurrency", "5", "--burst", *WORKER_TIMING)
    # And again while they run: queued, running or done, never a second job.
    time.sleep(1.0)
    during = submit_all(database, firm.accounts_file, [(n, plans()[0]) for n in names[:5]])
    assert SubmitOutcome.QUEUED not in during
    for worker in ("wA", "wB"):
        assert workers.wait(worker, timeout=90) == 0, workers.tail(worker)
    elapsed = time.monotonic() - started

    check_queue(database, names)
    outcomes = {name: check_account(database, firm, name) for name in names}
    assert not any(o.resumed for o in outcomes.values())
    # Both workers took part, and different accounts ran at the same time.
    assert set().union(*(o.owners for o in outcomes.values())) == {"wA", "wB"}
    spans = sorted((start, end) for o in outcomes.values() for start, end, _ in o.intervals)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))

    # The key pairs stayed in the workers' environment: not in jobs, ledger rows or logs.
    with psycopg.connect(database.conninfo) as conn:
        stored = " ".join(
            str(row)
            for table in ("procrastinate_jobs", "ledger_plans", "ledger_plan_history", "ledger_intents")
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()
        )
    for secret in firm.secrets:
        assert secret not in stored
        assert secret not in workers.log("wA") + workers.log("wB")

    # A plan already executed is not run again; status shows everything done.
    assert submit_all(database, firm.accounts_file, [("acct03", plans()[1])]) == [SubmitOutcome.ALREADY_DONE]
    statuses = asyncio.run(queue_status(database, load_accounts(firm.accounts_file)))
    counts = {s.account: tuple(s.count(phase) for phase in PlanPhase) for s in statuses}
    assert counts == {name: (0, 0, 4, 0, 0) for name in names}
    print(f"40 plans on 2 workers in {elapsed:.1f}s")


@pytest.mark.slow
def test_a_worker_killed_mid_plan_is_replaced_without_duplicate_orders(
    database: Database, firm: Firm, workers: Workers
) -> None:
    names = [f"acct{n:02d}" for n in range(ACCOUNTS)]
    assert submit_all(database, firm.accounts_file, everything(names)) == [SubmitOutcome.QUEUED] * 40
    workers.start("wA", "--concurrency", "5", *WORKER_TIMING)
    workers.start("wB", "--concurrency", "5", "--burst", *WORKER_TIMING)
    held = kill_mid_plan(workers, database, "wA", finished_first=3)
    assert workers.wait("wB", timeout=180) == 0, workers.tail("wB")

    jobs = check_queue(database, names)
    outcomes = {name: check_account(database, firm, name) for name in names}
    # The plans wA was working on when it died: it claimed them, wB finished them.
    interrupted = {
        (name, plan_id): history
        for name, outcome in outcomes.items()
        for plan_id, history in outcome.histories.items()
        if any((h.owner or "").startswith("wA#") for h in history)
        and (history[-1].owner or "").startswith("wB#")
    }
    assert interrupted, f"wA was killed holding {held} mid-plan, yet nothing was resumed"
    for key, history in interrupted.items():
        notes = [h.note for h in history]
        assert any(note.startswith("resumed (lease of wA#") for note in notes), (key, notes)
        assert jobs[key][0][2] >= 2, f"the job of {key} should have run twice: {jobs[key]}"
    assert "stalled job handed back to the queue" in workers.log("wB")


def test_simulated_accounts_through_the_command_line_and_a_graceful_stop(
    database: Database, tmp_path: Path
) -> None:
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(
        yaml.safe_dump(
            {
                "defaults": {"execution": {"lease_ttl": 3}},
                "accounts": [
                    {
                        # Paced at 10x real time with a patient ladder, so a stop finds it mid-plan.
                        "name": "sim-one",
                        "broker": "sim",
                        "state_dir": "state/one",
                        "seed": 1,
                        "speed": 10,
                        "initial": {"cash": "20000", "positions": {"SPY": "50"}},
                        "execution": {
                            "ladders": {"NORMAL": {"fill_wait": 20, "steps": ["0", "0", "0.5", "1"]}}
                        },
                    },
                    {"name": "sim-two", "broker": "sim", "state_dir": "state/two", "seed": 2},
                    {
                        "name": "guarded",
                        "broker": "sim",
                        "state_dir": "state/three",
                        "risk": {"max_plan_turnover": "0.01"},
                    },
                ],
            }
        )
    )
    rebalance = {
        "plan_id": "rebalance",
        "items": [
            {"symbol": "SPY", "action": "SELL", "target_weight": "0"},
            {"symbol": "AAPL", "action": "BUY", "trade_amount": "1500"},
        ],
    }
    top_up = {"plan_id": "rebalance", "items": [{"symbol": "QQQ", "action": "BUY", "trade_amount": "5000"}]}
    plan_file = tmp_path / "rebalance.json"
    plan_file.write_text(json.dumps(rebalance))
    accounts = ("--accounts", str(accounts_file))
    code, out, err = scale_cli(database, "submit", str(plan_file), "--account", "sim-one", *accounts)
    assert code == 0, err
    assert "queued plan rebalance for account sim-one" in out
    code, out, err = scale_cli(database, "submit", str(plan_file), "--account", "sim-one", *accounts)
    assert code == 0, err
    assert "already queued" in out
    code, _, err = scale_cli(database, "submit", str(plan_file), "--account", "nobody", *accounts)
    assert code == 2
    assert "unknown account 'nobody'" in err
    outcomes = submit_all(
        database, accounts_file, [("sim-two", top_up), ("guarded", top_up), ("sim-two", top_up)]
    )
    assert outcomes == [SubmitOutcome.QUEUED, SubmitOutcome.QUEUED, SubmitOutcome.ALREADY_QUEUED]

    pool = Workers(tmp_path, database, accounts_file, {})
    try:
        # A worker stopped by SIGTERM with no grace period hands its running plan back.
        first = pool.start("first", "--concurrency", "3", "--shutdown-timeout", "0", *WORKER_TIMING)
        wait_until(lambda: bool(mid_plan(database, "first#")[1]), timeout=30, what="sim-one to be mid-plan")
        first.send_signal(signal.SIGTERM)
        assert pool.wait("first", timeout=30) == 0, pool.tail("first")
        assert "the plan goes back to the queue" in pool.log("first")
        pool.start("second", "--concurrency", "3", "--burst", *WORKER_TIMING)
        assert pool.wait("second", timeout=60) == 0, pool.tail("second")
    finally:
        pool.close()

    code, out, err = scale_cli(database, "status", *accounts, "--json")
    assert code == 0, err
    counts = {
        a["account"]: (a["queued"], a["running"], a["done"], a["failed"]) for a in json.loads(out)["accounts"]
    }
    # The guarded account refused the plan (turnover above its limit): the job failed, nothing traded.
    assert counts == {"sim-one": (0, 0, 1, 0), "sim-two": (0, 0, 1, 0), "guarded": (0, 0, 0, 1)}
    code, out, err = scale_cli(database, "status", *accounts, "--plans")
    assert code == 0, err
    assert "SUCCESS" in out
    assert "failed" in out
    assert submit_all(database, accounts_file, [("sim-one", rebalance)]) == [SubmitOutcome.ALREADY_DONE]
    with SqlLedger(database.ledger_url, account="sim-one", migrate=False) as ledger:
        history = ledger.history("rebalance")
        result = ledger.stored_result("rebalance")
    notes = [h.note for h in history]
    assert any(note.startswith("released by first#") for note in notes), notes
    assert "resumed (lease released)" in notes
    assert result is not None
    assert result.status is ExecutionStatus.SUCCESS
    # Each simulated account kept its own state: SPY closed and AAPL bought on one, QQQ on two.
    held = {}
    for name in ("one", "two", "three"):
        state_file = tmp_path / "state" / name / "sim-account.json"
        positions = json.loads(state_file.read_text())["positions"] if state_file.exists() else {}
        held[name] = {s for s, p in positions.items() if Decimal(p["qty"]) != 0}
    assert held == {"one": {"AAPL"}, "two": {"QQQ"}, "three": set()}


def test_a_plan_another_owner_holds_is_retried_when_its_lease_runs_out(
    database: Database, tmp_path: Path
) -> None:
    accounts = accounts_from_data(
        {
            "defaults": {"execution": {"lease_ttl": 30}},
            "accounts": [{"name": "held", "broker": "sim", "state_dir": "held"}],
        },
        base_dir=tmp_path,
    )
    plan = RebalancePlan.model_validate(plans()[1])
    claim_plan(database, "held", plan, "elsewhere:1#w9", lease=20)
    with pytest.raises(PlanBusyError) as caught:
        asyncio.run(execute_for_account(accounts["held"], plan, database, "here:2#w1"))
    assert 19 < caught.value.retry_in <= 20.5
    assert "elsewhere:1#w9" in str(caught.value)
    decision = PlanRetry().get_retry_decision(
        exception=caught.value,
        job=Job(id=1, queue="trimtab", lock=None, queueing_lock=None, task_name="t", attempts=1),
    )
    assert decision is not None
    assert decision.retry_at is not None
    assert timedelta(seconds=19) < decision.retry_at - SystemClock().now() <= timedelta(seconds=20.5)


def test_a_job_handed_back_while_its_first_run_still_trades_does_not_run_the_plan_twice(
    database: Database, tmp_path: Path
) -> None:
    """A live worker taken for dead (its heartbeat late on a loaded machine) has its running
    job handed back to the queue, and may fetch it again itself: the second run of the job
    must find the plan busy, not resume it alongside the first."""
    accounts = accounts_from_data(
        {
            "defaults": {"execution": {"lease_ttl": 30}},
            "accounts": [{"name": "twice", "broker": "sim", "state_dir": "twice"}],
        },
        base_dir=tmp_path,
    )
    runtime = JobRuntime(accounts=accounts, database=database, name="host:7")
    job = Job(id=12, queue=QUEUE, lock=None, queueing_lock=None, task_name=TASK_NAME, attempts=0, worker_id=3)
    first, again = runtime.owner(job), runtime.owner(job.evolve(attempts=1))
    assert first.startswith("host:7#w3")
    assert again.startswith("host:7#w3")
    assert first != again
    assert len(runtime.owner(job)) <= 200
    long_name = JobRuntime(accounts=accounts, database=database, name="n" * 300).owner(job)
    assert len(long_name) == 200
    assert long_name.endswith(first.removeprefix("host:7"))

    plan = RebalancePlan.model_validate(plans()[1])
    claim_plan(database, "twice", plan, first, lease=20)
    with pytest.raises(PlanBusyError) as caught:
        asyncio.run(execute_for_account(accounts["twice"], plan, database, again))
    assert first in str(caught.value)
    # Nothing ran, so nothing was saved over the simulated account the first run keeps.
    sim = accounts["twice"].sim
    assert sim is not None
    assert not sim.state_file.exists()
    with SqlLedger(database.ledger_url, account="twice", migrate=False) as ledger:
        record = ledger.get_plan(plan.plan_id)
        assert record is not None
        assert record.owner == first
        assert ledger.intents(plan.plan_id) == []


# --- a worker's own heartbeat, runs of a job handed back, and the worker's log ---


SLOW_STALL = ("--heartbeat", "30", "--stalled-after", "61", "--stall-check", "0.2", "--poll", "0.2")
"""Heartbeats far apart (none after registration within a test) and frequent stall checks,
so a heartbeat the test backdates stays late while the worker looks for stalled workers."""


def sim_accounts(tmp_path: Path, *names: str) -> Path:
    """An accounts file of simulated accounts (not paced: a plan takes milliseconds)."""
    path = tmp_path / "accounts.yaml"
    entries = [
        {
            "name": name,
            "broker": "sim",
            "state_dir": f"state/{name}",
            "seed": number,
            "initial": {"cash": "20000", "positions": {"SPY": "50"}},
        }
        for number, name in enumerate(names)
    ]
    path.write_text(yaml.safe_dump({"defaults": {"execution": {"lease_ttl": 30}}, "accounts": entries}))
    return path


@dataclass
class HeldRow:
    """A ledger plan row locked FOR UPDATE in an open transaction: a run that claims the
    plan waits on it, for as long as the test wants."""

    conn: psycopg.Connection[Any]

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.commit()
        self.close()

    def close(self) -> None:
        self.conn.close()


def hold_plan_row(database: Database, account: str, plan_id: str) -> HeldRow:
    conn = psycopg.connect(database.conninfo)
    row = conn.execute(
        "SELECT id FROM ledger_plans WHERE account = %s AND plan_id = %s FOR UPDATE", (account, plan_id)
    ).fetchone()
    assert row is not None, (account, plan_id)
    return HeldRow(conn)


def job_row(database: Database, job_id: int) -> tuple[str, int | None, int]:
    """(status, worker_id, attempts) of a job."""
    with psycopg.connect(database.conninfo) as conn:
        row = conn.execute(
            "SELECT status::text, worker_id, attempts FROM procrastinate_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def state_file_version(path: Path) -> tuple[int, int] | None:
    """Which write of a file this is (it is replaced whole on each save), or None without one."""
    if not path.exists():
        return None
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def waiting_on_a_lock(workers: Workers, name: str) -> bool:
    with psycopg.connect(workers.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (workers.application_names[name],),
        ).fetchone()
    return bool(row and row[0])


def test_worker_log_lines_carry_their_time_and_the_account_and_job_they_belong_to(
    database: Database, tmp_path: Path
) -> None:
    """One plan_id on two accounts gives the same client order ids: in one worker's log, each
    line of a job says whose it is, and every line when it was written (UTC)."""
    accounts_file = sim_accounts(tmp_path, "north", "south")
    assert (
        submit_all(database, accounts_file, [("north", plans()[0]), ("south", plans()[0])])
        == [SubmitOutcome.QUEUED] * 2
    )
    pool = Workers(tmp_path, database, accounts_file, {})
    try:
        pool.start("both", "--concurrency", "2", "--burst", *WORKER_TIMING)
        assert pool.wait("both", timeout=60) == 0, pool.tail("both")
        lines = pool.log("both").splitlines()
    finally:
        pool.close()
    job_of = {account: entries[0][0] for (account, _), entries in jobs_by_plan(database).items()}
    stamped = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (DEBUG|INFO|WARNING|ERROR) \S+ ")
    assert lines
    assert [line for line in lines if not stamped.match(line)] == []
    for line in (lines[0], lines[-1]):
        match = stamped.match(line)
        assert match is not None
        written = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
        assert abs(SystemClock().now() - written) < timedelta(minutes=2), line
    # Every line of a job, the ledger's included, ends with its account and job id.
    of_jobs = [line for line in lines if "plan_id=daily-0" in line]
    assert any(" ledger plan " in line for line in of_jobs)
    for line in of_jobs:
        assert re.search(r" account=(north|south) job_id=\d+$", line), line
    orders: dict[str, set[str]] = {}
    for account, job_id in job_of.items():
        sent = [
            line for line in of_jobs if "order sent" in line and f" account={account} job_id={job_id}" in line
        ]
        orders[account] = {re.sub(r".* cid=(\S+) .*", r"\1", line) for line in sent}
    # The same client order ids on both accounts, told apart by the account on the line.
    assert orders["north"] & orders["south"]


def test_a_worker_whose_own_heartbeat_is_late_keeps_its_running_jobs(
    database: Database, tmp_path: Path
) -> None:
    """A worker's stall check finds its own heartbeat late (a loaded machine): it does not
    hand its own running job back to the queue, where it would be fetched a second time."""
    accounts_file = sim_accounts(tmp_path, "late")
    plan = RebalancePlan.model_validate(plans()[1])
    assert submit_all(database, accounts_file, [("late", plans()[1])]) == [SubmitOutcome.QUEUED]
    # A claim long gone (its lease ran out a minute ago): the job's run takes the plan up,
    # once the test lets go of the plan's row. Until then the run waits on it.
    claim_plan(database, "late", plan, "gone:1#w0.j0.a0", lease=1, ago=60)
    held = hold_plan_row(database, "late", plan.plan_id)
    pool = Workers(tmp_path, database, accounts_file, {})
    try:
        pool.start("late", "--concurrency", "1", "--burst", *SLOW_STALL)
        (job_id,) = [entries[0][0] for entries in jobs_by_plan(database).values()]
        wait_until(
            lambda: job_row(database, job_id)[0] == "doing" and waiting_on_a_lock(pool, "late"),
            timeout=30,
            what="the job's run to wait for the plan",
        )
        running = job_row(database, job_id)
        with psycopg.connect(database.conninfo) as conn:
            conn.execute(
                "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s",
                (running[1],),
            )
        wait_until(
            lambda: "heartbeat is late" in pool.log("late") or "handed back" in pool.log("late"),
            timeout=10,
            what="the worker's stall check to see its own heartbeat late",
        )
        time.sleep(0.6)  # three more stall checks
        assert job_row(database, job_id) == running
        held.release()
        assert pool.wait("late", timeout=30) == 0, pool.tail("late")
        log = pool.log("late")
    finally:
        held.close()
        pool.close()
    assert "stalled job handed back" not in log, log
    assert log.count("this worker's own heartbeat is late") == 1, log
    assert job_row(database, job_id)[::2] == ("succeeded", 1)
    with SqlLedger(database.ledger_url, account="late", migrate=False) as ledger:
        history = ledger.history(plan.plan_id)
    owners = {h.owner for h in history if h.owner and h.owner.startswith("late#")}
    assert owners == {f"late#w{running[1]}.j{job_id}.a0"}, history
    assert history[-1].to_state is PlanState.DONE


@pytest.mark.parametrize("second_run_finds", ["plan-busy", "plan-done"])
def test_a_second_run_of_a_job_its_first_run_finished_ends_with_one_line(
    database: Database, tmp_path: Path, second_run_finds: str
) -> None:
    """A job handed back while its first run still trades is fetched again (a second run);
    then the first run finishes, and its worker ends the job under the second run. The
    second run, whether it finds the plan done or still held (the first run's last write
    not seen yet), ends with one line: no error, no orders, nothing written."""
    accounts_file = sim_accounts(tmp_path, "twice")
    accounts = load_accounts(accounts_file)
    plan = RebalancePlan.model_validate(plans()[1])
    assert submit_all(database, accounts_file, [("twice", plans()[1])]) == [SubmitOutcome.QUEUED]

    async def on_queue(action: Callable[[App], Awaitable[T]]) -> T:
        app = build_app(database)
        async with app.open_async():
            return await action(app)

    async def first_run_starts(app: App) -> Job | None:
        worker_id = await app.job_manager.register_worker()
        return await app.job_manager.fetch_job(queues=[QUEUE], worker_id=worker_id)

    first = asyncio.run(on_queue(first_run_starts))
    assert first is not None
    assert first.id is not None
    job_id = first.id
    owner = JobRuntime(accounts=accounts, database=database, name="first").owner(first)
    if second_run_finds == "plan-done":
        asyncio.run(execute_for_account(accounts["twice"], plan, database, owner))
    else:
        claim_plan(database, "twice", plan, owner, lease=30)
    sim = accounts["twice"].sim
    assert sim is not None
    saved = state_file_version(sim.state_file)

    # A stall check hands the job back while its first run still goes on.
    asyncio.run(on_queue(lambda app: app.job_manager.retry_job(first)))
    held = hold_plan_row(database, "twice", plan.plan_id)
    pool = Workers(tmp_path, database, accounts_file, {})
    try:
        pool.start("second", "--concurrency", "2", "--burst", *WORKER_TIMING)
        wait_until(
            lambda: job_row(database, job_id)[0] == "doing" and waiting_on_a_lock(pool, "second"),
            timeout=30,
            what="the second run to wait for the plan",
        )
        assert job_row(database, job_id)[1] != first.worker_id
        # The first run finishes: its worker ends the job, though the second run holds it.
        asyncio.run(
            on_queue(lambda app: app.job_manager.finish_job(first, status=Status.SUCCEEDED, delete_job=False))
        )
        held.release()
        assert pool.wait("second", timeout=30) == 0, pool.tail("second")
        log = pool.log("second")
    finally:
        held.close()
        pool.close()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    ends = [line for line in log.splitlines() if "no longer held by this run" in line]
    assert len(ends) == 1, log
    outcome = "retry" if second_run_finds == "plan-busy" else "succeeded"
    assert f"it has ended (succeeded); this run's outcome is not recorded outcome={outcome} " in ends[0]
    assert " attempt=1 " in ends[0]
    assert ends[0].endswith(f"account=twice job_id={job_id}")
    assert job_row(database, job_id)[0] == "succeeded"
    # The plan is the first run's alone; the second left the account as it found it.
    with SqlLedger(database.ledger_url, account="twice", migrate=False) as ledger:
        history = ledger.history(plan.plan_id)
        intents = ledger.intents(plan.plan_id)
    assert {h.owner for h in history} == {owner}, history
    assert [h.note for h in history].count("new") == 1
    if second_run_finds == "plan-done":
        assert intents
        assert history[-1].to_state is PlanState.DONE
    else:
        assert intents == []
    assert state_file_version(sim.state_file) == saved

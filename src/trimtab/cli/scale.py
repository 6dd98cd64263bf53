"""`trimtab submit`, `trimtab worker` and `trimtab status`: plans on a pool of workers."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from trimtab.cli.common import (
    CliHandler,
    ExitCode,
    console,
    guard,
    read_plan,
    setup_logging,
    trimtab_home,
)
from trimtab.domain.errors import TrimtabError
from trimtab.logs import JobFilter, UtcFormatter
from trimtab.worker import (
    Accounts,
    AccountStatus,
    Database,
    PlanPhase,
    SubmitOutcome,
    WorkerSettings,
    default_accounts_path,
    load_accounts,
    queue_status,
    run_worker,
    submit_plan,
)

AccountsOpt = Annotated[
    Path | None,
    typer.Option(
        "--accounts",
        help="The accounts file (default: $TRIMTAB_ACCOUNTS, else accounts.yaml in $TRIMTAB_HOME).",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="PostgreSQL URL of the queue and the ledger (default: $TRIMTAB_DATABASE_URL).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the answer as JSON on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log every state change on stderr.")]


def _accounts(option: Path | None) -> Accounts:
    return load_accounts(option if option is not None else default_accounts_path(trimtab_home()))


def submit(
    plan: Annotated[Path, typer.Argument(help="The plan file: JSON, YAML or CSV.")],
    account: Annotated[str, typer.Option("--account", help="The account (a name in the accounts file).")],
    accounts: AccountsOpt = None,
    database: DatabaseOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Queue a plan for an account's workers; a plan already queued or done is not queued again."""
    setup_logging(verbose)

    def body() -> ExitCode:
        rebalance_plan = read_plan(plan)
        target = Database.resolve(database)
        known = _accounts(accounts)
        result = asyncio.run(submit_plan(target, known, account, rebalance_plan))
        if json_output:
            sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
            return ExitCode.OK
        if result.outcome is SubmitOutcome.QUEUED:
            text = f"queued plan {result.plan_id} for account {result.account} (job {result.job_id})"
        elif result.outcome is SubmitOutcome.ALREADY_QUEUED:
            job = f" (job {result.job_id})" if result.job_id is not None else ""
            text = f"plan {result.plan_id} of account {result.account} is already queued or running{job}"
        else:
            text = (
                f"plan {result.plan_id} of account {result.account} was already executed "
                f"({result.result_status or result.ledger_state}); not queued again"
            )
        console.print(text, markup=False, highlight=False)
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Plans run at once (never two of one account).")
    ] = 4,
    accounts: AccountsOpt = None,
    database: DatabaseOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="This worker's name in logs and leases (default host:pid).")
    ] = None,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between heartbeats.")] = 10.0,
    stalled_after: Annotated[
        float,
        typer.Option(
            "--stalled-after", help="Seconds without a heartbeat after which a worker counts as dead."
        ),
    ] = 30.0,
    stall_check: Annotated[
        float, typer.Option("--stall-check", help="Seconds between checks for jobs of dead workers.")
    ] = 10.0,
    poll: Annotated[
        float, typer.Option("--poll", help="Longest wait in seconds before looking for jobs.")
    ] = 5.0,
    shutdown_timeout: Annotated[
        float | None,
        typer.Option(
            "--shutdown-timeout",
            help="On SIGTERM, seconds running plans get to finish before they go back to the queue "
            "(default: wait for them).",
        ),
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Stop once no plan is waiting or running in the queue.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run queued plans until stopped (Ctrl-C or SIGTERM)."""
    setup_logging(verbose)

    def body() -> ExitCode:
        settings = WorkerSettings(
            concurrency=concurrency,
            name=name,
            heartbeat_interval=heartbeat,
            stalled_after=stalled_after,
            stall_check_interval=stall_check,
            poll_interval=poll,
            shutdown_timeout=shutdown_timeout,
            wait=not burst,
        )
        target = Database.resolve(database)
        known = _accounts(accounts)
        with worker_log_lines():
            asyncio.run(run_worker(target, known, settings))
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


@contextmanager
def worker_log_lines() -> Iterator[None]:
    """The worker's log lines: its own format while the block runs.

    Each line starts with its time (UTC, ISO 8601 with milliseconds), and the lines of a
    job carry its account and job id (trimtab.logs.JobFilter, for the loggers that do not
    add them themselves, such as the ledger's): workers run many accounts at once, their
    logs are read side by side, and one plan_id on many accounts gives the same client
    order ids. Warnings of other libraries (procrastinate, asyncio), which would otherwise
    go out bare through logging's last resort, get the same format. Other commands keep
    setup_logging's plain lines.
    """
    formatter = UtcFormatter()
    job_filter = JobFilter()
    handlers = [h for h in logging.getLogger("trimtab").handlers if isinstance(h, CliHandler)]
    kept = [h.formatter for h in handlers]
    others = CliHandler()  # on the root logger, for the other libraries
    others.setLevel(logging.WARNING)
    others.setFormatter(formatter)
    others.addFilter(lambda record: record.name != "trimtab" and not record.name.startswith("trimtab."))
    others.addFilter(_without_our_tracebacks)
    others.addFilter(job_filter)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(job_filter)
    root = logging.getLogger()
    root.addHandler(others)
    try:
        yield
    finally:
        root.removeHandler(others)
        for handler, previous in zip(handlers, kept, strict=True):
            handler.removeFilter(job_filter)
            handler.setFormatter(previous)


def _without_our_tracebacks(record: logging.LogRecord) -> bool:
    """A job that failed on one of trimtab's own errors (a refusal, a bad plan) was told in
    one line by the job; the queue's line of its outcome keeps its text, not the traceback."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, TrimtabError):
        record.exc_info = None
        record.exc_text = None
        note = f" ({type(error).__name__}: {error})"
        record.msg = f"{record.msg}{note.replace('%', '%%') if record.args else note}"
    return True


def status(
    accounts: AccountsOpt = None,
    database: DatabaseOpt = None,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="Only this account (repeat for several).")
    ] = None,
    plans: Annotated[bool, typer.Option("--plans", help="List every plan, not only the counts.")] = False,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show queued, running, done and failed plans per account."""
    setup_logging(verbose)

    def body() -> ExitCode:
        target = Database.resolve(database)
        path = accounts if accounts is not None else default_accounts_path(trimtab_home())
        # Without an explicit file, accounts come from the queue when there is no default one.
        known = load_accounts(path) if accounts is not None or path.exists() else None
        statuses = asyncio.run(queue_status(target, known, only=tuple(account or ())))
        if json_output:
            payload = {"accounts": [s.as_dict() for s in statuses]}
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
            return ExitCode.OK
        console.print(_counts_table(statuses))
        if plans:
            console.print(_plans_table(statuses))
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


def _counts_table(statuses: list[AccountStatus]) -> Table:
    table = Table(title="plans per account")
    table.add_column("account")
    for phase in PlanPhase:
        table.add_column(phase.value, justify="right")
    for entry in statuses:
        table.add_row(entry.account, *(str(entry.count(phase)) for phase in PlanPhase))
    return table


def _plans_table(statuses: list[AccountStatus]) -> Table:
    table = Table(title="plans")
    for column in ("account", "plan_id", "phase", "result", "job", "attempts", "updated"):
        table.add_column(column)
    for entry in statuses:
        for plan in entry.plans:
            table.add_row(
                plan.account,
                plan.plan_id,
                plan.phase.value,
                plan.result_status or plan.ledger_state or "-",
                str(plan.job_id) if plan.job_id is not None else "-",
                str(plan.attempts),
                plan.updated_at.isoformat(timespec="seconds") if plan.updated_at else "-",
            )
    return table


def register(app: typer.Typer) -> None:
    """Add submit, worker and status to the trimtab app."""
    app.command()(submit)
    app.command()(worker)
    app.command()(status)

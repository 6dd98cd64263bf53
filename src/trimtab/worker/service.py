"""What `trimtab submit`, `trimtab worker` and `trimtab status` do, as async functions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from procrastinate import App
from procrastinate.app import WorkerOptions
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import Job
from procrastinate.worker import Worker

from trimtab.adapters.clock import SystemClock
from trimtab.adapters.ledger import SqlLedger
from trimtab.domain.errors import ConfigurationError, PlanValidationError
from trimtab.domain.plan import RebalancePlan
from trimtab.logs import bind_run, get_logger
from trimtab.ports.ledger import PlanState, PlanSummary
from trimtab.worker.accounts import Accounts
from trimtab.worker.database import Database, ensure_ledger_schema, ensure_queue_schema
from trimtab.worker.execution import LedgerPool
from trimtab.worker.queue import (
    QUEUE,
    TASK_NAME,
    JobRuntime,
    RunJobManager,
    account_lock,
    build_app,
    plan_queueing_lock,
)

log = get_logger(__name__)

_LIVE_JOB_STATUSES = ("todo", "doing")


# --- submit ---


class SubmitOutcome(StrEnum):
    QUEUED = "queued"
    """A job was queued for the plan."""
    ALREADY_QUEUED = "already_queued"
    """A job for this plan is already waiting or running: nothing was added."""
    ALREADY_DONE = "already_done"
    """The ledger holds the plan's result: it is not run again."""


@dataclass(frozen=True, slots=True)
class Submission:
    outcome: SubmitOutcome
    account: str
    plan_id: str
    job_id: int | None
    """The job queued, or the one already waiting or running."""
    ledger_state: str | None = None
    result_status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "account": self.account,
            "plan_id": self.plan_id,
            "job_id": self.job_id,
            "ledger_state": self.ledger_state,
            "result_status": self.result_status,
        }


async def submit_plan(
    database: Database, accounts: Accounts, account: str, plan: RebalancePlan
) -> Submission:
    """Queue plan for account, unless it is already queued, running or done (see Submitter)."""
    async with Submitter(database, accounts) as submitter:
        return await submitter.submit(account, plan)


class Submitter:
    """Queues plans; keeps one connection pool and one ledger per account open for many.

    Use as ``async with Submitter(database, accounts) as submitter:`` and call
    ``await submitter.submit(account, plan)``.
    """

    def __init__(self, database: Database, accounts: Accounts) -> None:
        self._database = database
        self._accounts = accounts
        self._app = build_app(database, pool_size=2)
        self._ledgers: dict[str, SqlLedger] = {}
        self._open = False

    async def __aenter__(self) -> Self:
        await ensure_queue_schema(self._database)
        await self._app.open_async()
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False
        try:
            await self._app.close_async()
        finally:
            ledgers, self._ledgers = list(self._ledgers.values()), {}
            for ledger in ledgers:
                ledger.close()

    async def submit(self, account: str, plan: RebalancePlan) -> Submission:
        """Queue plan for account, unless it is already queued, running or done.

        Raises ConfigurationError for an unknown account and PlanValidationError when the
        account's ledger already holds another plan under this plan_id.
        """
        if not self._open:
            raise RuntimeError("use the Submitter as 'async with Submitter(...) as submitter'")
        self._accounts.require(account)
        with bind_run(plan.plan_id, plan.correlation_id):
            ledger = self._ledgers.get(account)
            if ledger is None:
                ledger = self._ledgers[account] = self._database.ledger(account)
            record = await asyncio.to_thread(ledger.get_plan, plan.plan_id)
            if record is not None:
                if record.content_hash != plan.content_hash():
                    raise PlanValidationError(
                        f"account {account!r} already has a different plan with plan_id {plan.plan_id}; "
                        "use a new plan_id"
                    )
                if record.state.is_terminal:
                    log.info("plan already executed; not queued account=%s", account)
                    return Submission(
                        SubmitOutcome.ALREADY_DONE,
                        account,
                        plan.plan_id,
                        None,
                        record.state.value,
                        record.status,
                    )
            key = plan_queueing_lock(account, plan.plan_id)
            jobs = await self._app.job_manager.list_jobs_async(queueing_lock=key, task=TASK_NAME)
            live = [job for job in jobs if job.status in _LIVE_JOB_STATUSES]
            if live:
                log.info("plan already queued account=%s job_id=%s", account, live[-1].id)
                return Submission(SubmitOutcome.ALREADY_QUEUED, account, plan.plan_id, live[-1].id)
            deferrer = self._app.configure_task(
                TASK_NAME, queue=QUEUE, lock=account_lock(account), queueing_lock=key
            )
            try:
                job_id = await deferrer.defer_async(
                    account=account, plan_id=plan.plan_id, plan_json=plan.model_dump_json()
                )
            except AlreadyEnqueued:
                log.info("plan already queued account=%s", account)
                return Submission(SubmitOutcome.ALREADY_QUEUED, account, plan.plan_id, None)
            log.info("plan queued account=%s job_id=%s", account, job_id)
            return Submission(SubmitOutcome.QUEUED, account, plan.plan_id, job_id)


# --- worker ---


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker runs. Durations are seconds of real time."""

    concurrency: int = 4
    """Plans run at once by this worker (never two of one account). Each takes about two
    database connections (its account's ledger), and the queue concurrency + 3 more: mind
    the server's max_connections when adding workers."""
    name: str | None = None
    """The worker's name in logs and in the ledger's leases; default host:pid."""
    heartbeat_interval: float = 10.0
    stalled_after: float = 30.0
    """A worker whose heartbeat is older than this is dead: its jobs go back to the queue."""
    stall_check_interval: float = 10.0
    poll_interval: float = 5.0
    """Longest wait before looking for jobs (new jobs are also announced by NOTIFY)."""
    shutdown_timeout: float | None = None
    """On SIGTERM/SIGINT, how long running plans may finish before they are stopped and
    handed back to the queue; None waits for them."""
    wait: bool = True
    """False: stop once no job of the queue is waiting or running (a batch run)."""
    install_signal_handlers: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("--concurrency must be at least 1")
        for name in ("heartbeat_interval", "stalled_after", "stall_check_interval", "poll_interval"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.stalled_after <= 2 * self.heartbeat_interval:
            raise ConfigurationError(
                "stalled_after must be more than twice the heartbeat interval, "
                "or a live worker could be taken for a dead one"
            )
        if self.shutdown_timeout is not None and self.shutdown_timeout < 0:
            raise ConfigurationError("shutdown_timeout must not be negative")

    def worker_name(self) -> str:
        return self.name or f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    database: Database,
    accounts: Accounts,
    settings: WorkerSettings | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run plan jobs until stopped (SIGINT/SIGTERM), or until the queue is empty with wait=False.

    Applies the queue's and the ledger's schemas first (idempotent). Alongside the jobs it
    watches for stalled ones: a job whose worker stopped sending heartbeats goes back to
    the queue, where a live worker picks it up and the Executor resumes the plan. A worker
    never takes itself for dead.
    """
    settings = settings or WorkerSettings()
    name = settings.worker_name()
    await ensure_queue_schema(database)
    await asyncio.to_thread(ensure_ledger_schema, database)
    threads = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="trimtab-plan")
    ledgers = LedgerPool(database, size=settings.concurrency)
    runtime = JobRuntime(
        accounts=accounts, database=database, name=name, environ=environ, threads=threads, ledgers=ledgers
    )
    app = build_app(database, runtime, pool_size=settings.concurrency + 3)
    worker = Worker(app=app, **_worker_options(settings, name))
    log.info(
        "worker starting name=%s concurrency=%d accounts=%d database=%s",
        name,
        settings.concurrency,
        len(accounts),
        database.display,
    )
    try:
        async with app.open_async():
            watcher = asyncio.create_task(
                _retry_stalled_jobs(app, worker, runtime, settings), name="trimtab-stall-watch"
            )
            work = asyncio.create_task(_run(worker))
            try:
                if settings.wait:
                    await work
                else:
                    await _until_queue_drained(app, work, settings.poll_interval)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    finally:
        threads.shutdown(wait=True)
        ledgers.close()
    log.info("worker stopped name=%s", name)


async def _until_queue_drained(app: App, work: asyncio.Task[None], interval: float) -> None:
    """Let the worker run until no job of the queue is waiting or running, then stop it.

    (procrastinate's own wait=False stops at the first fetch that finds nothing ready, even
    when a job waits only for its account's lock.)
    """
    while not work.done():
        done, _ = await asyncio.wait({work}, timeout=interval)
        if done:
            break
        row = await app.connector.execute_query_one_async(
            "SELECT count(*) AS live FROM procrastinate_jobs "
            "WHERE queue_name = %(queue)s AND status IN ('todo', 'doing')",
            queue=QUEUE,
        )
        if row["live"] == 0:
            log.info("queue drained; stopping")
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return
    await work


def _worker_options(settings: WorkerSettings, name: str) -> WorkerOptions:
    options: WorkerOptions = {
        "queues": [QUEUE],
        "name": name,
        "concurrency": settings.concurrency,
        "fetch_job_polling_interval": settings.poll_interval,
        "abort_job_polling_interval": settings.poll_interval,
        "update_heartbeat_interval": settings.heartbeat_interval,
        "stalled_worker_timeout": settings.stalled_after,
        "install_signal_handlers": settings.install_signal_handlers,
    }
    if settings.shutdown_timeout is not None:
        options["shutdown_graceful_timeout"] = settings.shutdown_timeout
    return options


async def _run(worker: Worker) -> None:
    # Worker.run (what App.run_worker_async runs) is not annotated in procrastinate.
    await worker.run()  # type: ignore[no-untyped-call]


async def _retry_stalled_jobs(
    app: App, worker: Worker, runtime: JobRuntime, settings: WorkerSettings
) -> None:
    """Hand the jobs of dead workers (no heartbeat for stalled_after) back to the queue.

    Never this worker's own: alive enough to look, it is not dead, whatever its heartbeat
    says (late on a loaded machine); handing its running jobs back would only start second
    runs of them that wait for the first. Other workers may still take it for dead.
    """
    manager = app.job_manager
    assert isinstance(manager, RunJobManager)
    own_late = False
    while True:
        await asyncio.sleep(settings.stall_check_interval)
        try:
            stalled = await manager.get_stalled_jobs(
                queue=QUEUE, task_name=TASK_NAME, seconds_since_heartbeat=settings.stalled_after
            )
        except ConnectorException as exc:
            log.warning("stalled-job check failed: %s", exc)
            continue
        own = {job.id for job in stalled if _own_job(job, worker, runtime)}
        if own and not own_late:
            log.warning(
                "this worker's own heartbeat is late; it keeps its running jobs, but other workers "
                "may take it for dead and hand them back name=%s jobs=%d",
                runtime.name,
                len(own),
            )
        own_late = bool(own)
        for job in stalled:
            if job.id in own:
                continue
            try:
                handed_back = await manager.hand_back(job)
            except ConnectorException as exc:
                log.warning("stalled job not handed back job_id=%s: %s", job.id, exc)
                continue
            if not handed_back:
                # Another worker handed it back first, or it finished meanwhile.
                log.info("stalled job already handled job_id=%s", job.id)
                continue
            log.warning(
                "stalled job handed back to the queue job_id=%s account=%s plan_id=%s dead_worker=%s",
                job.id,
                job.task_kwargs.get("account"),
                job.task_kwargs.get("plan_id"),
                job.worker_id,
            )


def _own_job(job: Job, worker: Worker, runtime: JobRuntime) -> bool:
    """A job this worker runs: fetched under its id, or (its id gone from the workers
    table, as another worker prunes a late one) one whose run is under way here."""
    if job.worker_id is not None and job.worker_id == worker.worker_id:
        return True
    return job.id is not None and job.id in runtime.running


# --- status ---


class PlanPhase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """Unfinished in the ledger with no job waiting or running (e.g. a `trimtab run` that died)."""


@dataclass(frozen=True, slots=True)
class PlanStatus:
    account: str
    plan_id: str
    phase: PlanPhase
    ledger_state: str | None
    result_status: str | None
    job_id: int | None
    job_status: str | None
    attempts: int
    scheduled_at: datetime | None
    updated_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "plan_id": self.plan_id,
            "phase": self.phase.value,
            "ledger_state": self.ledger_state,
            "result_status": self.result_status,
            "job_id": self.job_id,
            "job_status": self.job_status,
            "attempts": self.attempts,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class AccountStatus:
    account: str
    plans: tuple[PlanStatus, ...] = field(default=())

    def count(self, phase: PlanPhase) -> int:
        return sum(1 for p in self.plans if p.phase is phase)

    def as_dict(self) -> dict[str, Any]:
        counts = {phase.value: self.count(phase) for phase in PlanPhase}
        return {"account": self.account, **counts, "plans": [p.as_dict() for p in self.plans]}


async def queue_status(
    database: Database, accounts: Accounts | None = None, only: Sequence[str] = ()
) -> list[AccountStatus]:
    """Queued, running, done and failed plans per account, from the queue and the ledgers.

    Accounts: those of the accounts file plus any with jobs in the queue; only narrows
    them to the names given.
    """
    await ensure_queue_schema(database)
    app = build_app(database, pool_size=2)
    async with app.open_async():
        jobs = list(await app.job_manager.list_jobs_async(task=TASK_NAME, queue=QUEUE))
    by_plan: dict[tuple[str, str], Job] = {}
    names: list[str] = list(accounts or ())
    for job in jobs:
        account = str(job.task_kwargs.get("account", ""))
        plan_id = str(job.task_kwargs.get("plan_id", ""))
        if account not in names:
            names.append(account)
        key = (account, plan_id)
        if key not in by_plan or (job.id or 0) > (by_plan[key].id or 0):
            by_plan[key] = job
    if only:
        names = list(only)
    return await asyncio.to_thread(_account_statuses, database, names, by_plan)


def _account_statuses(
    database: Database, names: Iterable[str], by_plan: Mapping[tuple[str, str], Job]
) -> list[AccountStatus]:
    now = SystemClock().now()
    statuses = []
    for account in names:
        ledger = database.ledger(account)
        try:
            summaries = {s.plan_id: s for s in ledger.list_plans(limit=None)}
            plan_ids = list(summaries)
            plan_ids += [p for (a, p) in by_plan if a == account and p not in summaries]
            plans = []
            for plan_id in plan_ids:
                summary = summaries.get(plan_id)
                job = by_plan.get((account, plan_id))
                lease_live = False
                if summary is not None and not summary.state.is_terminal and job is None:
                    record = ledger.get_plan(plan_id)
                    lease_live = bool(record and record.lease_expires_at and record.lease_expires_at > now)
                plans.append(_plan_status(account, plan_id, summary, job, lease_live))
        finally:
            ledger.close()
        plans.sort(key=lambda p: (p.updated_at is None, p.updated_at, p.job_id or 0), reverse=True)
        statuses.append(AccountStatus(account, tuple(plans)))
    return statuses


def _plan_status(
    account: str, plan_id: str, summary: PlanSummary | None, job: Job | None, lease_live: bool
) -> PlanStatus:
    job_status = job.status if job is not None else None
    state = summary.state if summary is not None else None
    if job_status == "todo":
        phase = PlanPhase.QUEUED
    elif job_status == "doing":
        phase = PlanPhase.RUNNING
    elif state is PlanState.DONE:
        phase = PlanPhase.DONE
    elif state is PlanState.FAILED or job is not None:
        # A finished job whose plan is not done in the ledger: refused, failed or aborted.
        phase = PlanPhase.FAILED
    elif lease_live:
        phase = PlanPhase.RUNNING
    else:
        phase = PlanPhase.INTERRUPTED
    return PlanStatus(
        account=account,
        plan_id=plan_id,
        phase=phase,
        ledger_state=state.value if state is not None else None,
        result_status=summary.status if summary is not None else None,
        job_id=job.id if job is not None else None,
        job_status=job_status,
        attempts=job.attempts if job is not None else 0,
        scheduled_at=job.scheduled_at if job is not None else None,
        updated_at=summary.updated_at if summary is not None else None,
    )

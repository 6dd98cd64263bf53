"""The procrastinate side: the app, the plan task, its retry strategy, the job locks.

A job's arguments are the account name, the plan_id and the plan (JSON): never a key.
Each job carries two locks:

- lock ``trimtab:account:<name>``: procrastinate never runs two jobs with the same lock
  at once and runs them in the order they were queued, so one account's plans run one
  after another while other accounts' plans run in parallel.
- queueing lock ``trimtab:plan:<account>:<plan_id>``: at most one waiting job per plan,
  so submitting a plan twice queues it once. plan_ids are scoped by account (as in the
  ledger): two accounts may both run a plan called "2026-11-24-daily".

A job handed back to the queue while its run goes on (its worker taken for dead) can be
fetched again: two runs of one job at once, of which the ledger lets one trade (each run
is an owner of its own). RunJobManager writes each run's outcome to the job only where it
still applies (see there), so the run that no longer holds the job ends with one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy.exc
from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.job_context import AbortReason
from procrastinate.jobs import Job, Status
from procrastinate.manager import JobManager

from trimtab.adapters.clock import SystemClock
from trimtab.domain.errors import PlanValidationError, RetryableError, TrimtabError
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.planfile import parse_plan_text
from trimtab.domain.results import ExecutionResult
from trimtab.logs import bind_job, bind_run, get_logger
from trimtab.worker.accounts import Account, Accounts
from trimtab.worker.database import Database
from trimtab.worker.execution import LedgerPool, PlanBusyError, execute_for_account

log = get_logger(__name__)

TASK_NAME = "trimtab.execute_plan"
QUEUE = "trimtab"


def account_lock(account: str) -> str:
    """The procrastinate lock that serializes an account's jobs."""
    return f"trimtab:account:{account}"


def plan_queueing_lock(account: str, plan_id: str) -> str:
    """The procrastinate queueing lock of a plan: one waiting job per (account, plan_id)."""
    return f"trimtab:plan:{account}:{plan_id}"


class WorkerStoppedError(RetryableError):
    """The worker stopped before the plan finished; the plan goes back to the queue."""


@dataclass(frozen=True, slots=True)
class PlanRetry(BaseRetryStrategy):
    """When a failed plan job is tried again.

    - PlanBusyError (another owner holds the plan's lease, e.g. a worker that died and
      whose lease has not run out yet): when the lease runs out.
    - WorkerStoppedError (the worker shut down mid-plan; the Executor released the
      lease): at once, by any worker.
    - Other RetryableErrors (the broker unreachable or rate limiting) and lost database
      connections: exponential backoff.
    - Anything else (invalid plan or account, a safety refusal, a bug): not retried.
    """

    max_busy_attempts: int = 1000
    max_retryable_attempts: int = 5
    backoff_cap: float = 60.0

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, PlanBusyError):
            if job.attempts >= self.max_busy_attempts:
                return None
            return _retry_after(exception.retry_in)
        if isinstance(exception, WorkerStoppedError):
            if job.attempts >= self.max_busy_attempts:
                return None
            return _retry_after(0.0)
        if isinstance(exception, _TRANSIENT):
            if job.attempts >= self.max_retryable_attempts:
                return None
            return _retry_after(min(2.0**job.attempts, self.backoff_cap))
        return None


async def _execute(runtime: JobRuntime, account: Account, plan: RebalancePlan, owner: str) -> ExecutionResult:
    if runtime.ledgers is None:
        return await execute_for_account(
            account, plan, runtime.database, owner, runtime.environ, threads=runtime.threads
        )
    with runtime.ledgers.ledger(account.name) as ledger:
        return await execute_for_account(
            account, plan, runtime.database, owner, runtime.environ, ledger=ledger, threads=runtime.threads
        )


_TRANSIENT = (RetryableError, sqlalchemy.exc.OperationalError, psycopg.OperationalError)
"""Failures that may pass: the broker or the database briefly unreachable."""


def _retry_after(seconds: float) -> RetryDecision:
    return RetryDecision(retry_at=SystemClock().now() + timedelta(seconds=seconds))


@dataclass(frozen=True, slots=True)
class JobRuntime:
    """What the plan task needs on a worker: the accounts, the database, the worker's name,
    the threads plans run on and the ledgers they reuse."""

    accounts: Accounts
    database: Database
    name: str
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    threads: Executor | None = None
    ledgers: LedgerPool | None = None
    running: set[int] = field(default_factory=set, repr=False)
    """The ids of the jobs whose run is under way on this worker."""

    def owner(self, job: Job) -> str:
        """The owner of the job's plan in the ledger: this worker (its name and queue id) and
        this run of the job (its id and attempt), as ``name#w<worker>.j<job>.a<attempt>``.

        Every run of a job is an owner of its own. A worker taken for dead while alive (its
        heartbeat late: a loaded machine, a stalled loop) has its running jobs handed back
        to the queue, and may fetch one of them again while the first run still trades; the
        ledger resumes a plan for its own owner at once, so with one owner per worker both
        runs would send orders. With one per run, the second finds the plan busy and waits
        for the first (PlanBusyError).
        """
        run = f"#w{job.worker_id}.j{job.id}.a{job.attempts}"
        return self.name[: 200 - len(run)] + run


def build_app(database: Database, runtime: JobRuntime | None = None, *, pool_size: int = 4) -> App:
    """A procrastinate app on database. With a runtime it can run plan jobs (a worker)."""
    connector = PsycopgConnector(conninfo=database.conninfo, min_size=1, max_size=max(pool_size, 2))
    app = App(connector=connector)
    app.job_manager = RunJobManager(connector)
    if runtime is not None:
        _register_plan_task(app, runtime)
    return app


def _register_plan_task(app: App, runtime: JobRuntime) -> None:
    @app.task(name=TASK_NAME, queue=QUEUE, pass_context=True, retry=PlanRetry())
    async def execute_plan(context: JobContext, account: str, plan_id: str, plan_json: str) -> dict[str, Any]:
        return await run_plan_job(runtime, context, account, plan_id, plan_json)


async def run_plan_job(
    runtime: JobRuntime, context: JobContext, account: str, plan_id: str, plan_json: str
) -> dict[str, Any]:
    """The body of a plan job: execute the plan on the account, return a short summary.

    Every line logged meanwhile carries the account and the job id (bind_job).
    """
    job = context.job
    with bind_job(account, job.id), _running(runtime, job):
        return await _run_plan(runtime, context, account, plan_id, plan_json)


@contextmanager
def _running(runtime: JobRuntime, job: Job) -> Iterator[None]:
    if job.id is None:
        yield
        return
    runtime.running.add(job.id)
    try:
        yield
    finally:
        runtime.running.discard(job.id)


async def _run_plan(
    runtime: JobRuntime, context: JobContext, account: str, plan_id: str, plan_json: str
) -> dict[str, Any]:
    job = context.job
    with bind_run(plan_id, None):
        try:
            settings = runtime.accounts.require(account)
            plan = parse_plan_text(plan_json, "json")
            if plan.plan_id != plan_id:
                raise PlanValidationError(
                    f"the job's plan_id {plan_id} differs from its plan's {plan.plan_id}"
                )
        except TrimtabError as exc:
            log.error("job refused reason=%s", exc)
            raise
    owner = runtime.owner(job)
    with bind_run(plan.plan_id, plan.correlation_id):
        log.info("job started attempt=%d owner=%s", job.attempts, owner)
        try:
            result = await _execute(runtime, settings, plan, owner)
        except asyncio.CancelledError:
            if context.abort_reason() is AbortReason.SHUTDOWN:
                log.warning("worker stopping mid-plan; the plan goes back to the queue")
                raise WorkerStoppedError(f"worker {runtime.name} stopped mid-plan") from None
            raise
        except PlanBusyError as exc:
            log.warning("plan held by another owner; trying again in %.1fs", exc.retry_in)
            raise
        except TrimtabError as exc:
            log.error("job failed error=%s: %s", type(exc).__name__, exc)
            raise
        log.info("job finished status=%s already_executed=%s", result.status.value, result.already_executed)
        return {
            "plan_id": result.plan_id,
            "status": result.status.value,
            "already_executed": result.already_executed,
        }


# --- writing a run's outcome to its job ---

# A run of a job is its worker and its attempt: procrastinate counts an attempt when the job
# goes back to the queue, and a worker fetches a job once per attempt. Each statement locks
# the job's row, checks it, and applies procrastinate's own function, in one transaction;
# it returns the job's id when it applied it, nothing when the check failed.
_HELD = """
    SELECT id FROM procrastinate_jobs
     WHERE id = %(job_id)s AND status = 'doing'
       AND worker_id IS NOT DISTINCT FROM %(worker_id)s AND attempts = %(attempts)s
       FOR UPDATE
"""
_RETRY_IF_HELD = (
    "WITH held AS MATERIALIZED ("
    + _HELD
    + """) SELECT held.id FROM held, LATERAL procrastinate_retry_job_v2(
        held.id, COALESCE(%(retry_at)s::timestamptz, now()), %(new_priority)s::integer,
        %(new_queue_name)s::varchar, %(new_lock)s::varchar) AS retried"""
)
_FINISH_IF_HELD = (
    "WITH held AS MATERIALIZED ("
    + _HELD
    + """) SELECT held.id FROM held, LATERAL procrastinate_finish_job_v1(
        held.id, %(status)s::procrastinate_job_status, %(delete_job)s) AS finished"""
)
_FINISH_IF_UNFINISHED = """
    WITH open AS MATERIALIZED (
        SELECT id FROM procrastinate_jobs WHERE id = %(job_id)s AND status IN ('todo', 'doing') FOR UPDATE
    ) SELECT open.id FROM open, LATERAL procrastinate_finish_job_v1(
        open.id, %(status)s::procrastinate_job_status, %(delete_job)s) AS finished
"""
_JOB_NOW = "SELECT status::text AS status, worker_id, attempts FROM procrastinate_jobs WHERE id = %(job_id)s"


class RunJobManager(JobManager):
    """procrastinate's JobManager, writing a run's outcome to its job only where it applies.

    procrastinate writes the outcome of every run to the job, whichever run holds it now.
    After a hand-back that goes wrong both ways: the first run, finishing, ends the job
    under the second; the second's retry then finds the job ended and procrastinate fails
    on it (an exception in the worker); and a run's failure or retry would end or requeue
    a job another run holds. Here:

    - a success ends the job unless it has ended: a run succeeds only once the plan is
      over in the ledger, so the job is done, whichever run holds it;
    - a retry, a failure or an abort applies only while this run still holds the job
      (status doing, its worker, its attempt), as does a hand-back of a stalled job;
    - otherwise the run ends with one line saying so. The ledger, not the queue, decides
      who trades: whatever becomes of the job, the plan runs once.
    """

    async def hand_back(
        self,
        job: Job,
        retry_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> bool:
        """Put the job back in the queue if this run of it (job.worker_id, job.attempts)
        still holds it; False when it does not (ended, or handed back already)."""
        rows = await self.connector.execute_query_all_async(
            _RETRY_IF_HELD,
            job_id=job.id,
            worker_id=job.worker_id,
            attempts=job.attempts,
            retry_at=retry_at,
            new_priority=priority,
            new_queue_name=queue,
            new_lock=lock,
        )
        return bool(rows)

    async def retry_job(
        self,
        job: Job,
        retry_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        if not await self.hand_back(job, retry_at, priority, queue, lock):
            await self._not_recorded(job, "retry")

    async def finish_job(self, job: Job, status: Status, delete_job: bool) -> None:
        query = _FINISH_IF_UNFINISHED if status is Status.SUCCEEDED else _FINISH_IF_HELD
        rows = await self.connector.execute_query_all_async(
            query,
            job_id=job.id,
            worker_id=job.worker_id,
            attempts=job.attempts,
            status=status.value,
            delete_job=delete_job,
        )
        if not rows:
            await self._not_recorded(job, status.value)

    async def _not_recorded(self, job: Job, outcome: str) -> None:
        rows = await self.connector.execute_query_all_async(_JOB_NOW, job_id=job.id)
        status = rows[0]["status"] if rows else None
        if status is None:
            now = "it was deleted"
        elif status == "doing":
            now = "another run holds it"
        elif status == "todo":
            now = "it is back in the queue"
        else:
            now = f"it has ended ({status})"
        plan_id = job.task_kwargs.get("plan_id")
        account = job.task_kwargs.get("account")
        with (
            bind_run(str(plan_id) if plan_id else None, None),
            bind_job(str(account) if account else None, job.id),
        ):
            log.info(
                "job no longer held by this run: %s; this run's outcome is not recorded "
                "outcome=%s attempt=%d",
                now,
                outcome,
                job.attempts,
            )

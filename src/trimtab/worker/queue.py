"""The procrastinate side: the app, the plan task, its retry strategy, the job locks.

A job's arguments are the account name, the plan_id and the plan (JSON): never a key.
Each job carries two locks:

- lock ``trimtab:account:<name>``: procrastinate never runs two jobs with the same lock
  at once and runs them in the order they were queued, so one account's plans run one
  after another while other accounts' plans run in parallel.
- queueing lock ``trimtab:plan:<account>:<plan_id>``: at most one waiting job per plan,
  so submitting a plan twice queues it once. plan_ids are scoped by account (as in the
  ledger): two accounts may both run a plan called "2026-11-24-daily".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import sqlalchemy.exc
from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.job_context import AbortReason
from procrastinate.jobs import Job

from trimtab.adapters.clock import SystemClock
from trimtab.domain.errors import PlanValidationError, RetryableError, TrimtabError
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.planfile import parse_plan_text
from trimtab.domain.results import ExecutionResult
from trimtab.logs import bind_run, get_logger
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
    """The body of a plan job: execute the plan on the account, return a short summary."""
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
            log.error("job refused job_id=%s account=%s reason=%s", job.id, account, exc)
            raise
    owner = runtime.owner(job)
    with bind_run(plan.plan_id, plan.correlation_id):
        log.info("job started job_id=%s account=%s attempt=%d owner=%s", job.id, account, job.attempts, owner)
        try:
            result = await _execute(runtime, settings, plan, owner)
        except asyncio.CancelledError:
            if context.abort_reason() is AbortReason.SHUTDOWN:
                log.warning("worker stopping mid-plan; the plan goes back to the queue job_id=%s", job.id)
                raise WorkerStoppedError(f"worker {runtime.name} stopped mid-plan") from None
            raise
        except PlanBusyError as exc:
            log.warning(
                "plan held by another owner; trying again in %.1fs job_id=%s account=%s",
                exc.retry_in,
                job.id,
                account,
            )
            raise
        except TrimtabError as exc:
            log.error(
                "job failed job_id=%s account=%s error=%s: %s", job.id, account, type(exc).__name__, exc
            )
            raise
        log.info(
            "job finished job_id=%s account=%s status=%s already_executed=%s",
            job.id,
            account,
            result.status.value,
            result.already_executed,
        )
        return {
            "plan_id": result.plan_id,
            "status": result.status.value,
            "already_executed": result.already_executed,
        }

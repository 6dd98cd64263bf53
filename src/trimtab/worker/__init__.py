"""Many accounts on a pool of workers: a procrastinate queue and the ledger in one PostgreSQL.

``submit_plan`` queues a plan for an account, ``run_worker`` runs queued plans (one at a
time per account, accounts in parallel), ``queue_status`` reports them. The accounts
file (``load_accounts``) says which broker each account trades through.
"""

from trimtab.worker.accounts import (
    ACCOUNTS_ENV,
    Account,
    Accounts,
    AlpacaSettings,
    SimSettings,
    accounts_from_data,
    default_accounts_path,
    load_accounts,
)
from trimtab.worker.database import DATABASE_ENV, Database, ensure_ledger_schema, ensure_queue_schema
from trimtab.worker.execution import LedgerPool, PlanBusyError, execute_for_account
from trimtab.worker.queue import (
    QUEUE,
    TASK_NAME,
    PlanRetry,
    WorkerStoppedError,
    account_lock,
    build_app,
    plan_queueing_lock,
)
from trimtab.worker.service import (
    AccountStatus,
    PlanPhase,
    PlanStatus,
    Submission,
    SubmitOutcome,
    Submitter,
    WorkerSettings,
    queue_status,
    run_worker,
    submit_plan,
)

__all__ = [
    "ACCOUNTS_ENV",
    "DATABASE_ENV",
    "QUEUE",
    "TASK_NAME",
    "Account",
    "AccountStatus",
    "Accounts",
    "AlpacaSettings",
    "Database",
    "LedgerPool",
    "PlanBusyError",
    "PlanPhase",
    "PlanRetry",
    "PlanStatus",
    "SimSettings",
    "Submission",
    "SubmitOutcome",
    "Submitter",
    "WorkerSettings",
    "WorkerStoppedError",
    "account_lock",
    "accounts_from_data",
    "build_app",
    "default_accounts_path",
    "ensure_ledger_schema",
    "ensure_queue_schema",
    "execute_for_account",
    "load_accounts",
    "plan_queueing_lock",
    "queue_status",
    "run_worker",
    "submit_plan",
]

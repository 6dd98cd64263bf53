"""One plan on one account: open the account's broker and ledger, run the Executor.

What a job does, without the queue: usable on its own. Each plan runs on a thread with
an event loop of its own, as `trimtab run` runs it: the simulated exchange on a
virtual-time loop, Alpaca and sandbox accounts on a normal one. The ledger's writes are
synchronous (a commit is milliseconds on a busy server); on a loop of its own a plan
waits only for its own writes, and the worker's loop keeps its heartbeats on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor as Executor_
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from trimtab.adapters.alpaca import AlpacaBroker
from trimtab.adapters.clock import SystemClock
from trimtab.adapters.ledger import SqlLedger
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.errors import ConfigurationError, PlanInProgressError
from trimtab.domain.orders import OrderEvent, OrderEventKind
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult
from trimtab.engine.executor import Executor
from trimtab.logs import get_logger
from trimtab.ports.broker import Broker
from trimtab.worker.accounts import Account, SimSettings
from trimtab.worker.database import Database

log = get_logger(__name__)
T = TypeVar("T")

_DURABLE_EVENTS = frozenset(
    {
        OrderEventKind.FILL,
        OrderEventKind.PARTIAL_FILL,
        OrderEventKind.CANCELED,
        OrderEventKind.REJECTED,
        OrderEventKind.EXPIRED,
        OrderEventKind.REPLACED,
    }
)
MIN_BUSY_RETRY = 0.25
"""Seconds: the shortest wait before trying a plan another owner holds again."""


class PlanBusyError(PlanInProgressError):
    """Another owner holds a live lease on the plan; try again after retry_in seconds."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


async def execute_for_account(
    account: Account,
    plan: RebalancePlan,
    database: Database,
    owner: str,
    environ: Mapping[str, str] | None = None,
    *,
    ledger: SqlLedger | None = None,
    threads: Executor_ | None = None,
) -> ExecutionResult:
    """Execute plan on account, recorded in the account's ledger in database.

    Idempotent and resumable through the ledger: a plan already done returns its stored
    result; one an earlier owner left unfinished is reconciled and resumed. A plan whose
    lease another owner still holds raises PlanBusyError with the time left on it.

    The plan runs on a thread of threads (default: the loop's) with an event loop of its
    own, as `trimtab run` runs it, so the ledger's blocking writes and one plan's work
    never stall the caller's loop or other plans. Cancelling the call cancels the plan on
    its loop (the Executor cancels its open orders and releases the lease) and waits for
    it to stop. ledger: the account's ledger, left open (default: one opened and closed here).
    """
    own_ledger = ledger is None
    store = database.ledger(account.name) if ledger is None else ledger
    try:
        try:
            if account.sim is not None:
                run = _run_sim(account, account.sim, plan, store, owner)
            else:
                run = _run_alpaca(account, plan, store, owner, environ)
            return await _on_own_loop(run, threads)
        except PlanInProgressError as exc:
            raise PlanBusyError(str(exc), _lease_left(store, plan.plan_id, account)) from None
    finally:
        if own_ledger:
            store.close()


class _PlanThread:
    """The loop and task of a plan running on a thread, so it can be cancelled from outside."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def enter(self) -> None:
        with self.lock:
            if self.cancelled:
                raise asyncio.CancelledError
            self.loop = asyncio.get_running_loop()
            self.task = asyncio.current_task()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.loop is not None and self.task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the plan has ended
                    self.loop.call_soon_threadsafe(self.task.cancel)


async def _on_own_loop(run: Callable[[_PlanThread], T], threads: Executor_ | None) -> T:
    """Run run(handle) on a thread; on cancellation, cancel it there and wait for it to end."""
    handle = _PlanThread()
    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(threads, context.run, run, handle)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        handle.cancel()
        # Let the plan wind down (cancel its open orders, release its lease) before going.
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the outcome is this cancellation
        raise


def _executor(account: Account, broker: Broker, ledger: SqlLedger, owner: str) -> Executor:
    return Executor(
        broker,
        account.execution,
        ledger=ledger,
        owner=owner,
        lease_clock=SystemClock(),
        risk=account.risk,
    )


def _run_alpaca(
    account: Account,
    plan: RebalancePlan,
    ledger: SqlLedger,
    owner: str,
    environ: Mapping[str, str] | None,
) -> Callable[[_PlanThread], ExecutionResult]:
    if account.alpaca is None:
        raise ConfigurationError(f"account {account.name!r} has no Alpaca settings")
    config = account.alpaca.config(account.name, environ)

    def run(handle: _PlanThread) -> ExecutionResult:
        async def main() -> ExecutionResult:
            handle.enter()
            async with _executor(account, AlpacaBroker(config), ledger, owner) as executor:
                return await executor.execute_rebalance_plan(plan)

        return asyncio.run(main())

    return run


def _run_sim(
    account: Account, settings: SimSettings, plan: RebalancePlan, ledger: SqlLedger, owner: str
) -> Callable[[_PlanThread], ExecutionResult]:
    """The plan on the simulated account, in virtual time (paced by settings.speed).

    The account's state file is saved after every fill and final order state, as a real
    broker keeps its record, so a worker killed mid-plan leaves the account as it was.
    Only one process may use a state folder at a time: the queue's per-account lock
    guarantees it for jobs.
    """

    def run(handle: _PlanThread) -> ExecutionResult:
        broker = _load_sim(account, settings)
        state = settings.state_file

        def save_on_change(event: OrderEvent) -> None:
            if event.kind in _DURABLE_EVENTS:
                broker.save(state)

        async def main() -> ExecutionResult:
            handle.enter()
            async with _executor(account, broker, ledger, owner) as executor:
                return await executor.execute_rebalance_plan(plan)

        settings.state_dir.mkdir(parents=True, exist_ok=True)
        remove = broker.add_order_listener(save_on_change)
        idle = False
        try:
            result = run_virtual(main(), speed=settings.speed)
            idle = result.already_executed
            return result
        except PlanInProgressError:
            idle = True
            raise
        finally:
            remove()
            # A run that found the plan held by another run, or already done, did nothing:
            # saving the state it loaded would write over what the run that traded saved
            # (after this one loaded it), or what the account's next plan saves since.
            if not idle:
                broker.save(state)

    return run


class LedgerPool:
    """Open ledgers of the accounts a worker runs, reused from plan to plan.

    Reuse keeps each ledger's connection and compiled statements. Idle ledgers beyond
    size are closed (least recently used first); one in use is never closed. Use it from
    one thread (the worker's loop); the ledgers themselves may be used from any.
    """

    def __init__(self, database: Database, size: int) -> None:
        self._database = database
        self._size = max(size, 1)
        self._idle: OrderedDict[str, SqlLedger] = OrderedDict()
        self._busy: dict[str, tuple[SqlLedger, int]] = {}

    @contextmanager
    def ledger(self, account: str) -> Iterator[SqlLedger]:
        """The account's ledger for the duration of the block."""
        busy = self._busy.get(account)
        if busy is not None:
            store, users = busy
        else:
            idle = self._idle.pop(account) if account in self._idle else None
            store = idle if idle is not None else self._database.ledger(account, migrate=False)
            users = 0
        self._busy[account] = (store, users + 1)
        try:
            yield store
        finally:
            store, users = self._busy.pop(account)
            if users > 1:
                self._busy[account] = (store, users - 1)
            else:
                self._idle[account] = store
                while len(self._idle) + len(self._busy) > self._size and self._idle:
                    _, evicted = self._idle.popitem(last=False)
                    evicted.close()

    def close(self) -> None:
        idle, self._idle = list(self._idle.values()), OrderedDict()
        for store in idle:
            store.close()


def _load_sim(account: Account, settings: SimSettings) -> SimBroker:
    day = SystemClock().now().date()
    state = settings.state_file
    try:
        if state.exists():
            return SimBroker.load(state, seed=settings.seed, market_date=day)
        if settings.initial is not None:
            text = json.dumps(dict(settings.initial), default=str)
            return SimBroker.from_account_text(text, seed=settings.seed, market_date=day)
    except ValueError as exc:
        raise ConfigurationError(
            f"account {account.name!r}: the simulated account in {settings.state_dir} is unreadable ({exc})"
        ) from None
    return SimBroker(seed=settings.seed, market_date=day)


def _lease_left(ledger: SqlLedger, plan_id: str, account: Account) -> float:
    """Seconds until the current owner's lease on the plan runs out (a little more)."""
    record = ledger.get_plan(plan_id)
    ttl = account.execution.lease_ttl
    if record is None or record.lease_expires_at is None:
        return MIN_BUSY_RETRY
    left = (record.lease_expires_at - SystemClock().now()) / timedelta(seconds=1)
    return min(max(left + MIN_BUSY_RETRY, MIN_BUSY_RETRY), ttl + 1.0)

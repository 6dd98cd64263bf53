"""The Executor: sells first, a settlement gate, then buys sized from what the sells raised."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Self, TypeVar

from trimtab.domain.account import Account, Asset
from trimtab.domain.errors import (
    BrokerUnavailableError,
    LeaseLostError,
    PlanInProgressError,
    PlanValidationError,
    RateLimitedError,
    SafetyRefusalError,
    TrimtabError,
)
from trimtab.domain.money import BPS, ONE, ZERO, money
from trimtab.domain.orders import ClientOrderId, OrderSnapshot, Side
from trimtab.domain.plan import Action, RebalancePlan, RebalancePlanItem
from trimtab.domain.quotes import Quote
from trimtab.domain.results import (
    ExecutionResult,
    ExecutionStats,
    ExecutionStatus,
    OrderResult,
    PhaseStats,
    PlannedOrder,
    PreviewResult,
)
from trimtab.engine.algos import SmartAlgorithm, ladder_price
from trimtab.engine.algos import algorithm as make_algorithm
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.journal import Journal, reconciled_fill
from trimtab.engine.quotes import QuoteService
from trimtab.engine.risk import RiskConfig, RiskGuard
from trimtab.engine.sizing import SizedItem, buy_budget, size_buys, size_sell
from trimtab.engine.tracker import OrderTracker
from trimtab.engine.working import AttemptRecord, OrderAlgorithm, OrderIntent, OrderSession, WorkOutcome
from trimtab.logs import bind_run, get_logger
from trimtab.ports.broker import Broker
from trimtab.ports.clock import Clock
from trimtab.ports.ledger import ClaimOutcome, Ledger, PlanState
from trimtab.ports.quotes import QuoteFeed

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class ItemRun:
    """The progress of one plan item through sizing and working."""

    item: RebalancePlanItem
    sized: SizedItem | None = None
    outcome: WorkOutcome | None = None


@dataclass(slots=True)
class PhaseRun:
    name: str
    items: list[ItemRun] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timed_out: bool = False


@dataclass(slots=True)
class PriorWork:
    """What an interrupted run of the plan already did for one symbol (from the ledger)."""

    qty: Decimal
    arrival: Quote | None
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def filled_qty(self) -> Decimal:
        return sum((a.filled_qty for a in self.attempts), ZERO)


class Executor:
    """Executes rebalance plans against a broker.

    Use as ``async with Executor(broker) as executor:`` and call
    ``await executor.execute_rebalance_plan(plan)``. The constructor does no I/O.

    With a ledger, every order intent is recorded before it is sent and every event as it
    arrives; a plan_id already done returns its stored result, a plan another process
    holds is refused, and a plan an earlier process left unfinished is reconciled with
    the broker and resumed. owner names this process in the ledger's leases, which run
    on lease_clock (the broker's clock unless given).
    """

    def __init__(
        self,
        broker: Broker,
        execution_config: ExecutionConfig | None = None,
        *,
        quote_feed: QuoteFeed | None = None,
        order_algorithm: OrderAlgorithm | None = None,
        clock: Clock | None = None,
        ledger: Ledger | None = None,
        owner: str | None = None,
        lease_clock: Clock | None = None,
        risk: RiskConfig | None = None,
    ) -> None:
        if broker is None:
            raise ValueError("Executor needs a broker, got None")
        config = execution_config if execution_config is not None else ExecutionConfig()
        if not isinstance(config, ExecutionConfig):
            raise TypeError(f"execution_config must be an ExecutionConfig, got {type(config).__name__}")
        self._broker = broker
        self._config = config
        self._feed = (
            quote_feed if quote_feed is not None else (broker if isinstance(broker, QuoteFeed) else None)
        )
        self._clock = clock if clock is not None else broker.clock
        self._algorithm: OrderAlgorithm = order_algorithm or make_algorithm(config.algo)
        self._ledger = ledger
        self._owner = owner or f"executor-{uuid.uuid4().hex[:12]}"
        self._lease_clock = lease_clock if lease_clock is not None else self._clock
        self._risk = RiskGuard(risk if risk is not None else RiskConfig(), ledger)
        self._tracker = OrderTracker(broker)
        self._quotes = QuoteService(self._feed, self._clock, config)
        self._results: OrderedDict[str, tuple[str, ExecutionResult]] = OrderedDict()
        self._tasks: set[asyncio.Task[ExecutionResult]] = set()
        self._lock: asyncio.Lock | None = None
        self._started = False
        self._closed = False

    @property
    def config(self) -> ExecutionConfig:
        return self._config

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    async def finish_markouts(self) -> None:
        """Keep recording the market after the last plan's fills until the markout window
        (60 s after a fill) has passed for each lingering quote stream, then return.

        A run that ends right after its plan leaves the last fills without their later
        markouts; this waits for them (instant on the simulated exchange's virtual time).
        Returns at once without a ledger or when no stream lingers.
        """
        await self._quotes.settle()

    async def start(self) -> None:
        """Start the broker connection and the order event stream."""
        if self._closed:
            raise RuntimeError("this Executor has been shut down")
        if self._started:
            return
        self._lock = asyncio.Lock()
        await self._broker.start()
        self._tracker.start()
        self._started = True

    async def shutdown(self) -> None:
        """Stop everything start() and the runs started. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._quotes.stop()
        self._tracker.stop()
        if self._started:
            await self._broker.close()

    async def execute_rebalance_plan(self, plan: RebalancePlan) -> ExecutionResult:
        """Execute a plan: sells, the settlement gate, buys. Returns what was filled."""
        if plan is None:
            raise ValueError("execute_rebalance_plan needs a plan, got None")
        if not isinstance(plan, RebalancePlan):
            raise TypeError(f"plan must be a RebalancePlan, got {type(plan).__name__}")
        if self._closed:
            raise RuntimeError("this Executor has been shut down")
        if not self._started or self._lock is None:
            raise RuntimeError("start the Executor first: use 'async with Executor(...) as executor'")
        content = plan.content_hash()
        async with self._lock:
            cached = self._results.get(plan.plan_id)
            if cached is not None:
                if cached[0] != content:
                    raise PlanValidationError(
                        f"plan_id {plan.plan_id} was already executed with different content"
                    )
                with bind_run(plan.plan_id, plan.correlation_id):
                    log.info("plan already executed; nothing sent")
                return cached[1].model_copy(update={"already_executed": True})
            resume_from: PlanState | None = None
            if self._ledger is not None:
                claim = self._ledger.begin_plan(
                    plan.plan_id,
                    content,
                    plan.model_dump_json(),
                    plan.correlation_id,
                    self._owner,
                    now=self._lease_clock.now(),
                    lease_ttl=timedelta(seconds=self._config.lease_ttl),
                )
                with bind_run(plan.plan_id, plan.correlation_id):
                    if claim.outcome is ClaimOutcome.ALREADY_DONE and claim.result is not None:
                        log.info("plan already executed (ledger); nothing sent")
                        return claim.result.model_copy(update={"already_executed": True})
                    if claim.outcome is ClaimOutcome.BUSY or claim.outcome is ClaimOutcome.ALREADY_DONE:
                        raise PlanInProgressError(
                            f"plan {plan.plan_id} is being executed by another process ({claim.owner}); "
                            "nothing was sent"
                        )
                    if claim.outcome is ClaimOutcome.RESUME:
                        resume_from = claim.state
                        if claim.state is PlanState.RECEIVED:
                            log.info("taking up a plan that was received but never started")
                        else:
                            log.warning("resuming an interrupted plan state=%s", claim.state.value)
            task = asyncio.create_task(self._execute(plan, resume_from))
            self._tasks.add(task)
            try:
                result = await task
            finally:
                self._tasks.discard(task)
            self._results[plan.plan_id] = (content, result)
            while len(self._results) > self._config.result_cache_size:
                self._results.popitem(last=False)
            return result

    async def preview_rebalance_plan(self, plan: RebalancePlan) -> PreviewResult:
        """Validate, size and price the plan's orders from the account and quotes; send nothing.

        Buys are sized from today's buying power plus the sells' value at the bid, since a
        dry run cannot know what the sells would really raise.
        """
        if plan is None:
            raise ValueError("preview_rebalance_plan needs a plan, got None")
        if not self._started:
            raise RuntimeError("start the Executor first: use 'async with Executor(...) as executor'")
        with bind_run(plan.plan_id, plan.correlation_id):
            active = [i for i in plan.items if i.action is not Action.HOLD]
            symbols = [i.symbol for i in active]
            account = await self._call(self._broker.get_account)
            positions = await self._call(self._broker.get_positions)
            assets = await self._call(lambda: self._broker.get_assets(symbols))
            quotes = await self._arrival_quotes(symbols)
            planned: dict[str, PlannedOrder] = {}
            proceeds = ZERO
            for item in (i for i in active if i.action is Action.SELL):
                quote, problem = quotes[item.symbol]
                sized = size_sell(
                    item, positions.get(item.symbol), assets.get(item.symbol), quote, problem, self._config
                )
                if sized.skip_reason is None and quote is not None:
                    proceeds += sized.qty * quote.bid
                planned[item.symbol] = self._planned(plan, sized)
            available = min(account.cash, account.buying_power) + proceeds
            buys = [i for i in active if i.action is Action.BUY]
            sized_buys, _ = size_buys(buys, assets, quotes, buy_budget(available, self._config), self._config)
            for sized in sized_buys:
                planned[sized.symbol] = self._planned(plan, sized)
            orders = []
            for item in plan.items:
                if item.symbol in planned:
                    orders.append(planned[item.symbol])
                else:
                    orders.append(
                        PlannedOrder(
                            symbol=item.symbol,
                            action=item.action,
                            side=None,
                            trade_amount=item.trade_amount,
                            shares=ZERO,
                            reference_price=None,
                            first_limit_price=None,
                            estimated_notional=ZERO,
                            scale_factor=None,
                            skip_reason="HOLD: nothing to trade",
                            notes=(),
                        )
                    )
            return PreviewResult(
                plan_id=plan.plan_id,
                correlation_id=plan.correlation_id,
                algo=self._algorithm.name,
                estimated_buying_power=money(available),
                orders=tuple(orders),
            )

    def _planned(self, plan: RebalancePlan, sized: SizedItem) -> PlannedOrder:
        quote = sized.arrival
        reference = None
        limit = None
        if quote is not None:
            reference = quote.far_touch(sized.side is Side.BUY)
            if self._algorithm.name == "smart":
                ladder = self._config.ladder(plan.urgency_of(sized.item))
                if ladder.steps:
                    limit = ladder_price(quote, sized.side, ladder.steps[0], ladder.anchor)
        price = limit or reference or ZERO
        sendable = sized.skip_reason is None
        return PlannedOrder(
            symbol=sized.symbol,
            action=sized.item.action,
            side=sized.side.value,
            trade_amount=sized.item.trade_amount,
            shares=sized.qty if sendable else ZERO,
            reference_price=reference,
            first_limit_price=limit,
            estimated_notional=money(sized.qty * price) if sendable else ZERO,
            scale_factor=sized.scale_factor,
            skip_reason=sized.skip_reason,
            notes=tuple(sized.notes),
        )

    async def _execute(self, plan: RebalancePlan, resume_from: PlanState | None) -> ExecutionResult:
        with bind_run(plan.plan_id, plan.correlation_id):
            run = _PlanRun(plan, self._clock.now())
            journal = Journal(
                self._ledger,
                plan.plan_id,
                self._clock,
                self._lease_clock,
                self._owner,
                self._config.lease_ttl,
                state=resume_from or PlanState.RECEIVED,
            )
            session = OrderSession(
                broker=self._broker,
                tracker=self._tracker,
                quotes=self._quotes,
                clock=self._clock,
                config=self._config,
                plan_id=plan.plan_id,
                journal=journal,
                risk=self._risk,
            )
            self._tracker.listeners.append(journal.event)
            self._quotes.retry_stream()
            self._quotes.observe(journal.quote_observer)
            phases = asyncio.create_task(self._run_phases(run, session, resume_from))
            keeper = asyncio.create_task(self._supervise(journal, run, phases)) if journal.enabled else None
            log.info("plan started items=%d algo=%s", len(plan.items), self._algorithm.name)
            try:
                await phases
            except asyncio.CancelledError:
                if not (run.lease_lost or run.halted):
                    # Shut down or cancelled from outside: leave nothing resting, and let a
                    # later run resume the plan.
                    await self._cancel_open(session)
                    journal.release()
                    raise
            except SafetyRefusalError as exc:
                await self._cancel_open(session)
                journal.release(note=f"refused: {exc}")
                raise
            except BaseException:
                await self._cancel_open(session)
                journal.release()
                raise
            finally:
                if keeper is not None:
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
                self._tracker.listeners.remove(journal.event)
            await self._cancel_open(session)
            if run.lease_lost:
                raise LeaseLostError(
                    f"plan {plan.plan_id} was taken over by another process; this one stopped sending"
                )
            if run.halted:
                run.message = (
                    f"halted by the kill switch ({run.halted}): open orders cancelled, nothing more sent"
                )
            if self._quotes.stream_error and isinstance(self._algorithm, SmartAlgorithm):
                run.warnings.append(f"{self._quotes.stream_error}; orders sent as market orders")
            result = run.build(self._clock.now(), self._tracker, self._broker.requests_made)
            journal.record_missing_fills(
                (t.snapshot for t in self._tracker.tracked() if t.snapshot is not None), self._clock.now()
            )
            journal.finish(result)
            log_level = log.info if result.success else log.warning
            log_level(
                "plan finished status=%s placed=%d succeeded=%d value=%s",
                result.status.value,
                result.orders_placed,
                result.orders_succeeded,
                result.total_trade_value,
            )
            return result

    async def _run_phases(self, run: _PlanRun, session: OrderSession, resume_from: PlanState | None) -> None:
        try:
            async with asyncio.timeout(self._config.plan_timeout):
                prior: dict[str, PriorWork] = {}
                if resume_from is not None:
                    prior = await self._reconcile(run.plan, session)
                await self._phases(run, session, prior, resume_from)
        except TimeoutError:
            run.message = f"plan timed out after {self._config.plan_timeout:g}s"
            log.warning("plan timed out after %ss", self._config.plan_timeout)

    async def _supervise(self, journal: Journal, run: _PlanRun, phases: asyncio.Task[None]) -> None:
        """While the plan runs: renew its lease and watch the kill switch.

        Another process taking the plan over, or the kill switch, stops the run: its
        open orders are cancelled and nothing more is sent.
        """
        lease_every = self._config.lease_ttl / 3
        halt_every = self._risk.config.halt_check_interval
        interval = min(lease_every, halt_every)
        # Leases and the kill switch are about real time: they are counted on the lease
        # clock, so a run on virtual time does not hammer the ledger.
        last_halt_check = last_renewal = self._lease_clock.monotonic()
        while not phases.done():
            await asyncio.sleep(interval)
            now = self._lease_clock.monotonic()
            if now - last_halt_check >= halt_every:
                last_halt_check = now
                reason = self._risk.halted()
                if reason is not None:
                    log.error("kill switch set; stopping reason=%s", reason)
                    run.halted = reason
                    phases.cancel()
                    return
            if now - last_renewal >= lease_every:
                last_renewal = now
                if not journal.renew():
                    log.error("lease on the plan lost; stopping")
                    run.lease_lost = True
                    phases.cancel()
                    return

    async def _reconcile(self, plan: RebalancePlan, session: OrderSession) -> dict[str, PriorWork]:
        """Adopt what an interrupted run did: its orders at the broker, fills, attempt numbers.

        Open orders are cancelled (and confirmed) before anything new is sent, so the
        resumed run works only the remaining quantity under fresh client order ids.
        """
        assert self._ledger is not None
        intents = self._ledger.intents(plan.plan_id)
        recorded_fills: dict[str, Decimal] = {}
        for fill in self._ledger.fills(plan.plan_id):
            recorded_fills[fill.client_order_id] = recorded_fills.get(fill.client_order_id, ZERO) + fill.qty
        prior: dict[str, PriorWork] = {}
        counts: dict[str, int] = {}
        for intent in intents:
            session.journal.client_order_ids.add(intent.client_order_id)
            counts[intent.symbol] = counts.get(intent.symbol, 0) + 1
            work = prior.setdefault(intent.symbol, PriorWork(qty=intent.qty, arrival=intent.quote))
            cid = intent.client_order_id
            snapshot = await self._lookup(cid)
            record = AttemptRecord(
                step=intent.step,
                time=intent.time,
                client_order_id=cid,
                order_type=intent.order_type,
                limit_price=intent.limit_price,
                qty=intent.qty,
                quote=intent.quote,
                snapshot=snapshot,
            )
            work.attempts.append(record)
            if snapshot is None:
                continue
            self._tracker.update(snapshot)
            session.journal.order(snapshot)
            if snapshot.status.is_open and not await session.cancel(record):
                raise LeaseLostError(f"order {cid} of the interrupted run could not be cancelled")
            final = record.snapshot or snapshot
            session.journal.note_filled(cid, recorded_fills.get(cid, ZERO))
            missing = final.filled_qty - recorded_fills.get(cid, ZERO)
            if missing > ZERO:
                session.journal.event(reconciled_fill(final, missing, self._clock.now()))
        for symbol, count in counts.items():
            session.reserve_attempts(symbol, count)
        log.info("reconciled interrupted plan intents=%d symbols=%d", len(intents), len(prior))
        return prior

    async def _phases(
        self,
        run: _PlanRun,
        session: OrderSession,
        prior: dict[str, PriorWork],
        resume_from: PlanState | None,
    ) -> None:
        plan = run.plan
        journal = session.journal
        active = [i for i in plan.items if i.action is not Action.HOLD]
        symbols = [i.symbol for i in active]
        if not active:
            run.message = "nothing to trade: every item is HOLD"
            return
        if not self._risk.config.extended_hours:
            market = await self._call(self._broker.get_market_clock)
            if not market.is_open:
                raise SafetyRefusalError(
                    f"the market is closed (it opens {market.next_open.isoformat()}); nothing was sent. "
                    "Set extended_hours to trade outside regular hours"
                )
        account = await self._call(self._broker.get_account)
        positions = await self._call(self._broker.get_positions)
        assets = await self._call(lambda: self._broker.get_assets(symbols))
        resting = await self._call(lambda: self._broker.list_open_orders(symbols))
        sells_done = resume_from is not None and resume_from not in (PlanState.RECEIVED, PlanState.SELLING)
        tolerance = self._risk.config.sell_shortfall_tolerance
        own = session.journal.client_order_ids
        opposite = {(o.symbol, o.side) for o in resting if o.client_order_id not in own}

        sells = [i for i in active if i.action is Action.SELL]
        run.sell.started_at = self._clock.now()
        fresh_sells = [i.symbol for i in sells if i.symbol not in prior]
        sell_quotes = await self._arrival_quotes(fresh_sells)
        for item in sells:
            if item.symbol in prior:
                sized = _resumed(item, Side.SELL, prior[item.symbol], assets.get(item.symbol))
            else:
                quote, problem = sell_quotes[item.symbol]
                sized = size_sell(
                    item,
                    positions.get(item.symbol),
                    assets.get(item.symbol),
                    quote,
                    problem,
                    self._config,
                    tolerance,
                )
                self._screen(sized, opposite, account.portfolio_value)
                if sells_done and sized.skip_reason is None:
                    sized.skip_reason = (
                        "not sent before the interruption; the plan resumed after its sell phase"
                    )
            run.sell.items.append(ItemRun(item, sized))
        buys = [i for i in active if i.action is Action.BUY]
        planned = sum((i.trade_amount or ZERO for i in buys if i.symbol not in prior), ZERO)
        for item_run in run.sell.items:
            sell_sized = item_run.sized
            if sell_sized is not None and _sendable(sell_sized) and sell_sized.arrival is not None:
                planned += sell_sized.qty * sell_sized.arrival.mid
        self._risk.check_plan(planned, account.portfolio_value, self._clock.now())
        if sells:
            journal.advance(PlanState.SELLING)
        if not sells_done:
            await self._work_phase(run.sell, session, self._config.sell_phase_timeout, plan, prior)
        else:
            _adopt_prior(run.sell, prior)
        run.sell.finished_at = self._clock.now()
        if run.sell.timed_out:
            run.message = f"sell phase timed out after {self._config.sell_phase_timeout:g}s"

        if not buys:
            return
        journal.advance(PlanState.SETTLING)
        guard = self._risk.config.max_failed_sell_notional
        unfilled = _unfilled_sell_notional(run.sell)
        if guard is not None and unfilled > guard:
            reason = (
                f"buys not started: sells worth {money(unfilled)} did not fill, more than "
                f"max_failed_sell_notional {money(guard)}"
            )
            log.warning("buy-phase guard stops the buys unfilled=%s limit=%s", money(unfilled), money(guard))
            run.message = reason
            for item in buys:
                run.buy.items.append(ItemRun(item, SizedItem(item=item, side=Side.BUY, skip_reason=reason)))
            return
        settle_started = self._clock.monotonic()
        proceeds = sum((r.outcome.notional for r in run.sell.items if r.outcome and not sells_done), ZERO)
        account = await self._settlement_gate(account, proceeds)
        run.settlement_seconds = self._clock.monotonic() - settle_started
        available = min(account.cash, account.buying_power)
        journal.advance(PlanState.BUYING)
        run.buy.started_at = self._clock.now()
        fresh_buys = [i for i in buys if i.symbol not in prior]
        buy_quotes = await self._arrival_quotes(i.symbol for i in fresh_buys)
        # Buys an interrupted run started keep their size; their remaining cost comes first.
        committed = ZERO
        resumed_buys: dict[str, SizedItem] = {}
        for item in buys:
            if item.symbol in prior:
                work = prior[item.symbol]
                sized = _resumed(item, Side.BUY, work, assets.get(item.symbol))
                resumed_buys[item.symbol] = sized
                if work.arrival is not None:
                    committed += (work.qty - work.filled_qty) * work.arrival.ask
        budget = buy_budget(max(available - committed, ZERO), self._config)
        run.buying_power = available
        sized_buys, scale = size_buys(fresh_buys, assets, buy_quotes, budget, self._config)
        run.buy_scale = scale
        if scale < ONE:
            log.warning("buys scaled down scale=%s budget=%s", scale, money(budget))
        for sized in sized_buys:
            self._screen(sized, opposite, account.portfolio_value)
        by_symbol = {s.symbol: s for s in sized_buys} | resumed_buys
        run.buy.items.extend(ItemRun(i, by_symbol[i.symbol]) for i in buys)
        await self._work_phase(run.buy, session, self._config.buy_phase_timeout, plan, prior)
        run.buy.finished_at = self._clock.now()
        if run.buy.timed_out:
            run.message = f"buy phase timed out after {self._config.buy_phase_timeout:g}s"

    def _screen(self, sized: SizedItem, opposite: set[tuple[str, Side]], portfolio_value: Decimal) -> None:
        """Per-order preflight: no order against a resting one of the other side; risk limits."""
        if sized.skip_reason is not None or sized.error is not None:
            return
        if (sized.symbol, sized.side.opposite) in opposite:
            sized.skip_reason = (
                f"an open {sized.side.opposite.value} order of {sized.symbol} is resting at the broker; "
                "trading it now could be refused as a wash trade"
            )
            return
        if sized.arrival is None:
            return
        price = sized.arrival.mid if sized.side is Side.SELL else sized.arrival.ask
        problem = self._risk.order_problem(sized.qty * price, portfolio_value)
        if problem is not None:
            sized.skip_reason = f"refused by a risk limit: {problem}"

    async def _arrival_quotes(self, symbols: Iterable[str]) -> dict[str, tuple[Quote | None, str | None]]:
        wanted = list(symbols)
        semaphore = asyncio.Semaphore(self._config.max_concurrent_orders)

        async def one(symbol: str) -> tuple[Quote | None, str | None]:
            async with semaphore:
                return await self._quotes.usable(symbol)

        answers = await asyncio.gather(*(one(s) for s in wanted))
        return dict(zip(wanted, answers, strict=True))

    async def _work_phase(
        self,
        phase: PhaseRun,
        session: OrderSession,
        timeout: float,
        plan: RebalancePlan,
        prior: dict[str, PriorWork],
    ) -> None:
        deadline = self._clock.monotonic() + timeout
        semaphore = asyncio.Semaphore(self._config.max_concurrent_orders)
        todo = [
            r
            for r in phase.items
            if r.sized is not None
            and r.sized.skip_reason is None
            and r.sized.error is None
            and r.sized.qty > ZERO
        ]
        for r in phase.items:
            if r.sized is not None and r.sized.skip_reason is not None:
                log.warning("item skipped symbol=%s reason=%s", r.item.symbol, r.sized.skip_reason)

        _adopt_prior(phase, prior)

        async def work(item_run: ItemRun) -> None:
            sized = item_run.sized
            assert sized is not None
            before = prior.get(sized.symbol)
            earlier = list(before.attempts) if before else []
            remaining = sized.qty - sum((a.filled_qty for a in earlier), ZERO)
            if remaining <= ZERO:
                return
            intent = OrderIntent(
                symbol=sized.symbol,
                side=sized.side,
                qty=remaining,
                fractionable=sized.fractionable,
                urgency=plan.urgency_of(sized.item) or self._config.default_urgency,
                arrival=sized.arrival,
                deadline=deadline,
            )
            outcome = WorkOutcome()
            item_run.outcome = outcome
            async with semaphore:
                try:
                    await self._algorithm.work(session, intent, outcome)
                except TrimtabError as exc:
                    log.warning("order failed symbol=%s reason=%s", sized.symbol, exc)
                    outcome.error = f"{type(exc).__name__.removesuffix('Error')}: {exc}"
                except Exception:
                    log.exception("unexpected error working symbol=%s", sized.symbol)
                    raise
                finally:
                    outcome.attempts[:0] = earlier
            result = outcome
            if result.timed_out:
                phase.timed_out = True

        # Workers bound themselves by the deadline; the hard limit also covers their last
        # cancel confirmations and quote refreshes.
        grace = 2 * self._config.order_ack_timeout + self._config.quote_refresh_attempts * (
            self._config.quote_refresh_interval + 1
        )
        try:
            async with asyncio.timeout(timeout + grace), asyncio.TaskGroup() as group:
                for item_run in todo:
                    group.create_task(work(item_run))
        except TimeoutError:
            phase.timed_out = True
            log.warning("%s phase hit its hard time limit", phase.name)
            await self._cancel_open(session)
        except ExceptionGroup as group:
            # Surface the worker's own exception, with its traceback, not the group.
            raise group.exceptions[0] from None

    async def _settlement_gate(self, account_before: Account, proceeds: Decimal) -> Account:
        """Wait until the cash the sells raised shows in the account (bounded, with backoff)."""
        expected = account_before.cash + proceeds * (ONE - self._config.buying_power_tolerance)
        deadline = self._clock.monotonic() + self._config.settlement_timeout
        delay = 0.25
        while True:
            account = await self._call(self._broker.get_account)
            if proceeds <= ZERO or account.cash >= expected:
                return account
            left = deadline - self._clock.monotonic()
            if left <= 0:
                log.warning("settlement gate timed out cash=%s expected=%s", account.cash, money(expected))
                return account
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)

    async def _cancel_open(self, session: OrderSession) -> None:
        """Cancel every order of this run that is still open, and wait for confirmation."""
        open_orders = self._tracker.open_orders()
        if not open_orders:
            return
        log.warning("cancelling open orders count=%d", len(open_orders))
        for tracked in open_orders:
            snapshot = tracked.snapshot
            assert snapshot is not None
            try:
                await self._broker.cancel_order(snapshot.broker_order_id)
            except TrimtabError as exc:
                log.warning("cancel failed cid=%s reason=%s", tracked.client_order_id, exc)
        await asyncio.gather(
            *(self._tracker.wait_done(t.client_order_id, self._config.order_ack_timeout) for t in open_orders)
        )

    async def _lookup(self, cid: ClientOrderId) -> OrderSnapshot | None:
        return await self._call(lambda: self._broker.get_order_by_client_id(cid))

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """A read request with retries on rate limits and unavailability."""
        retries = self._config.max_request_retries
        for attempt in range(retries + 1):
            try:
                return await request()
            except RateLimitedError as exc:
                if attempt == retries:
                    raise
                await asyncio.sleep(exc.retry_after or 1.0)
            except BrokerUnavailableError:
                if attempt == retries:
                    raise
                await asyncio.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")


class _PlanRun:
    """Everything one execution learns, turned into an ExecutionResult at the end."""

    def __init__(self, plan: RebalancePlan, started_at: datetime) -> None:
        self.plan = plan
        self.started_at = started_at
        self.sell = PhaseRun("sell")
        self.buy = PhaseRun("buy")
        self.message: str | None = None
        self.warnings: list[str] = []
        self.settlement_seconds = 0.0
        self.buying_power: Decimal | None = None
        self.buy_scale: Decimal | None = None
        self.lease_lost = False
        self.halted: str | None = None

    def build(self, finished_at: datetime, tracker: OrderTracker, requests: int) -> ExecutionResult:
        by_symbol: dict[str, ItemRun] = {r.item.symbol: r for r in [*self.sell.items, *self.buy.items]}
        orders: list[OrderResult] = []
        for item in self.plan.items:
            item_run = by_symbol.get(item.symbol)
            orders.append(_order_result(item, item_run, tracker, self.plan))
        active = [o for o in orders if o.action is not Action.HOLD]
        succeeded = sum(1 for o in active if o.success)
        skipped = sum(1 for o in active if o.skipped)
        failed = len(active) - succeeded - skipped
        if failed == 0 and self.message and "timed out" in self.message:
            failed = sum(1 for o in active if not o.success)
        if failed == 0:
            status = ExecutionStatus.SUCCESS if skipped == 0 else ExecutionStatus.SUCCESS_WITH_SKIPS
        elif succeeded > 0:
            status = ExecutionStatus.PARTIAL_SUCCESS
        else:
            status = ExecutionStatus.FAILURE
        placed = sum(1 for o in active if o.attempts)
        total = sum((o.filled_notional for o in active), ZERO)
        warnings = list(self.warnings)
        return ExecutionResult(
            plan_id=self.plan.plan_id,
            correlation_id=self.plan.correlation_id,
            status=status,
            success=status in (ExecutionStatus.SUCCESS, ExecutionStatus.SUCCESS_WITH_SKIPS),
            already_executed=False,
            orders_placed=placed,
            orders_succeeded=succeeded,
            total_trade_value=money(total),
            started_at=self.started_at,
            finished_at=finished_at,
            message=self.message,
            warnings=tuple(warnings),
            orders=tuple(orders),
            stats=ExecutionStats(
                sell=_phase_stats(self.sell, orders),
                buy=_phase_stats(self.buy, orders),
                settlement_seconds=round(self.settlement_seconds, 3),
                buying_power_for_buys=self.buying_power,
                buy_scale_factor=self.buy_scale,
                requests=requests,
            ),
        )


def _sendable(sized: SizedItem | None) -> bool:
    return (
        sized is not None
        and sized.skip_reason is None
        and sized.error is None
        and sized.qty > ZERO
        and sized.arrival is not None
    )


def _unfilled_sell_notional(phase: PhaseRun) -> Decimal:
    """What the sells that were tried did not sell, at their arrival mid."""
    total = ZERO
    for item_run in phase.items:
        sized = item_run.sized
        if sized is not None and sized.error is not None:
            total += abs(item_run.item.trade_amount or ZERO)
            continue
        if sized is None or sized.skip_reason is not None or sized.arrival is None:
            continue
        filled = item_run.outcome.filled_qty if item_run.outcome else ZERO
        total += max(sized.qty - filled, ZERO) * sized.arrival.mid
    return total


def _resumed(item: RebalancePlanItem, side: Side, work: PriorWork, asset: Asset | None) -> SizedItem:
    """An item an interrupted run already sized: its original quantity and arrival quote."""
    fractionable = asset.fractionable if asset is not None else True
    return SizedItem(
        item=item,
        side=side,
        qty=work.qty,
        fractionable=fractionable,
        arrival=work.arrival,
        notes=["resumed after an interruption"],
    )


def _adopt_prior(phase: PhaseRun, prior: dict[str, PriorWork]) -> None:
    """Give each item the attempts an interrupted run made, so results count their fills."""
    for item_run in phase.items:
        work = prior.get(item_run.item.symbol)
        if work is not None and item_run.outcome is None:
            item_run.outcome = WorkOutcome(attempts=list(work.attempts))


def _phase_stats(phase: PhaseRun, orders: Sequence[OrderResult]) -> PhaseStats:
    symbols = {r.item.symbol for r in phase.items}
    mine = [o for o in orders if o.symbol in symbols]
    succeeded = sum(1 for o in mine if o.success)
    skipped = sum(1 for o in mine if o.skipped)
    return PhaseStats(
        name=phase.name,
        orders=sum(1 for o in mine if o.attempts),
        succeeded=succeeded,
        failed=len(mine) - succeeded - skipped,
        skipped=skipped,
        notional=money(sum((o.filled_notional for o in mine), ZERO)),
        started_at=phase.started_at,
        finished_at=phase.finished_at,
        timed_out=phase.timed_out,
    )


def _order_result(
    item: RebalancePlanItem, item_run: ItemRun | None, tracker: OrderTracker, plan: RebalancePlan
) -> OrderResult:
    sized = item_run.sized if item_run else None
    outcome = item_run.outcome if item_run else None
    urgency = plan.urgency_of(item)
    base = {
        "symbol": item.symbol,
        "action": item.action,
        "trade_amount": item.trade_amount,
        "urgency": urgency.value if urgency else None,
    }
    if item.action is Action.HOLD or sized is None:
        reason = (
            "HOLD: nothing to trade" if item.action is Action.HOLD else "not reached before the plan ended"
        )
        return OrderResult(
            **base,
            side=None,
            shares=ZERO,
            filled_shares=ZERO,
            avg_fill_price=None,
            filled_notional=ZERO,
            arrival_mid=None,
            cost_bps=None,
            order_type=None,
            client_order_id=None,
            scale_factor=None,
            success=item.action is Action.HOLD,
            skipped=item.action is Action.HOLD,
            skip_reason=reason if item.action is Action.HOLD else None,
            error_message=None if item.action is Action.HOLD else reason,
            fallback_reason=None,
            notes=(),
            attempts=(),
        )
    if outcome is not None:
        for record in outcome.attempts:
            tracked = tracker.get(record.client_order_id)
            if tracked is not None and tracked.snapshot is not None:
                record.snapshot = tracked.snapshot
    arrival_mid = sized.arrival.mid if sized.arrival else None
    filled = outcome.filled_qty if outcome else ZERO
    avg = outcome.avg_price if outcome else None
    notional = outcome.notional if outcome else ZERO
    cost = None
    if avg is not None and arrival_mid:
        sign = Decimal(1) if sized.side is Side.BUY else Decimal(-1)
        cost = (sign * (avg - arrival_mid) / arrival_mid * BPS).quantize(Decimal("0.01"))
    skipped = sized.skip_reason is not None or (
        outcome is not None and outcome.skip_reason is not None and filled == ZERO
    )
    skip_reason = sized.skip_reason or (outcome.skip_reason if outcome else None)
    error = sized.error or (outcome.error if outcome else None)
    dropped = outcome.dropped_qty if outcome else ZERO
    success = not skipped and sized.qty > ZERO and filled >= sized.qty - dropped and error is None
    if not success and not skipped and error is None:
        if outcome is None:
            error = "not worked before the phase ended"
        elif outcome.skip_reason:
            error = f"filled {filled} of {sized.qty} shares; {outcome.skip_reason}"
        else:
            error = f"filled {filled} of {sized.qty} shares" + (
                " before the deadline" if outcome.timed_out else ""
            )
    notes = tuple(sized.notes) + tuple(outcome.notes if outcome else ())
    last = outcome.attempts[-1] if outcome and outcome.attempts else None
    return OrderResult(
        **base,
        side=sized.side.value,
        shares=sized.qty,
        filled_shares=filled,
        avg_fill_price=avg.quantize(Decimal("0.000001")) if avg is not None else None,
        filled_notional=money(notional),
        arrival_mid=arrival_mid,
        cost_bps=cost,
        order_type=last.order_type.value if last else None,
        client_order_id=last.client_order_id if last else None,
        scale_factor=sized.scale_factor,
        success=success,
        skipped=skipped,
        skip_reason=skip_reason if skipped else None,
        error_message=error if not skipped else None,
        fallback_reason=outcome.fallback_reason if outcome else None,
        notes=notes,
        attempts=tuple(a.to_attempt() for a in outcome.attempts) if outcome else (),
    )

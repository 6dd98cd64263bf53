"""The order-working interface: what an order algorithm gets and what it returns.

An algorithm (market, smart) receives an OrderIntent and an OrderSession. The session
sends orders under deterministic client order ids, resolves unknown outcomes by looking
the id up, confirms cancels, and records every attempt.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from trimtab.domain.errors import (
    BrokerUnavailableError,
    DuplicateClientOrderIdError,
    OrderNotCancelableError,
    OrderNotFoundError,
    RateLimitedError,
    RejectedError,
    UnknownOrderOutcomeError,
)
from trimtab.domain.money import ZERO
from trimtab.domain.orders import (
    ClientOrderId,
    OrderRequest,
    OrderSnapshot,
    OrderType,
    Side,
    make_client_order_id,
)
from trimtab.domain.plan import Urgency
from trimtab.domain.quotes import Quote
from trimtab.domain.results import Attempt, QuoteView
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.journal import Journal
from trimtab.engine.quotes import QuoteService
from trimtab.engine.risk import RiskGuard
from trimtab.engine.tracker import OrderTracker
from trimtab.logs import get_logger
from trimtab.ports.broker import Broker
from trimtab.ports.clock import Clock

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One order to work: a side and quantity of a symbol, to finish by deadline."""

    symbol: str
    side: Side
    qty: Decimal
    fractionable: bool
    urgency: Urgency
    arrival: Quote | None
    deadline: float  # on the clock's monotonic scale


@dataclass(slots=True)
class AttemptRecord:
    step: int
    time: datetime
    client_order_id: ClientOrderId
    order_type: OrderType
    limit_price: Decimal | None
    qty: Decimal
    quote: Quote | None
    snapshot: OrderSnapshot | None = None
    ended_at: datetime | None = None

    @property
    def filled_qty(self) -> Decimal:
        return self.snapshot.filled_qty if self.snapshot else ZERO

    @property
    def notional(self) -> Decimal:
        snap = self.snapshot
        if snap is None or snap.filled_avg_price is None:
            return ZERO
        return snap.filled_qty * snap.filled_avg_price

    def to_attempt(self) -> Attempt:
        snap = self.snapshot
        quote = None
        if self.quote is not None:
            quote = QuoteView(
                bid=self.quote.bid,
                ask=self.quote.ask,
                bid_size=self.quote.bid_size,
                ask_size=self.quote.ask_size,
                time=self.quote.timestamp,
            )
        return Attempt(
            step=self.step,
            time=self.time,
            client_order_id=self.client_order_id,
            broker_order_id=snap.broker_order_id if snap else None,
            order_type=self.order_type.value,
            limit_price=self.limit_price,
            qty=self.qty,
            quote=quote,
            filled_qty=self.filled_qty,
            avg_fill_price=snap.filled_avg_price if snap else None,
            status=snap.status.value if snap else "not_sent",
            ended_at=self.ended_at,
        )


@dataclass(slots=True)
class WorkOutcome:
    """What working one intent produced. Filled quantity counts, not placement."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    error: str | None = None
    skip_reason: str | None = None
    fallback_reason: str | None = None
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)
    dropped_qty: Decimal = ZERO

    @property
    def filled_qty(self) -> Decimal:
        return sum((a.filled_qty for a in self.attempts), ZERO)

    @property
    def notional(self) -> Decimal:
        return sum((a.notional for a in self.attempts), ZERO)

    @property
    def avg_price(self) -> Decimal | None:
        filled = self.filled_qty
        return self.notional / filled if filled > ZERO else None

    @property
    def last_order_type(self) -> OrderType | None:
        return self.attempts[-1].order_type if self.attempts else None


class OrderAlgorithm(Protocol):
    """Works one intent to completion (or its deadline).

    Every order sent is recorded on outcome as it goes, so that what was filled is known
    even when work() ends with an exception. Returns the same outcome.
    """

    name: str

    async def work(self, session: OrderSession, intent: OrderIntent, outcome: WorkOutcome) -> WorkOutcome: ...


class OrderSession:
    """Sending, cancelling and waiting for the orders of one plan."""

    def __init__(
        self,
        *,
        broker: Broker,
        tracker: OrderTracker,
        quotes: QuoteService,
        clock: Clock,
        config: ExecutionConfig,
        plan_id: str,
        journal: Journal,
        risk: RiskGuard,
    ) -> None:
        self.broker = broker
        self.tracker = tracker
        self.quotes = quotes
        self.clock = clock
        self.config = config
        self.plan_id = plan_id
        self.journal = journal
        self.risk = risk
        self._next_attempt: dict[str, int] = {}

    def time_left(self, intent: OrderIntent) -> float:
        return intent.deadline - self.clock.monotonic()

    def next_client_order_id(self, symbol: str) -> ClientOrderId:
        attempt = self._next_attempt.get(symbol, 0)
        self._next_attempt[symbol] = attempt + 1
        return make_client_order_id(self.plan_id, symbol, attempt, self.config.client_order_id_prefix)

    def reserve_attempts(self, symbol: str, used: int) -> None:
        """Continue numbering after `used` attempts already made (on resume)."""
        self._next_attempt[symbol] = max(self._next_attempt.get(symbol, 0), used)

    async def submit(
        self,
        intent: OrderIntent,
        outcome: WorkOutcome,
        *,
        step: int,
        qty: Decimal,
        order_type: OrderType,
        limit_price: Decimal | None,
        quote: Quote | None,
    ) -> AttemptRecord:
        """Send one order and record it as an attempt. Raises RejectedError on refusal."""
        self.risk.check_send(intent.side, qty, limit_price, intent.arrival, quote, self.clock.now())
        cid = self.next_client_order_id(intent.symbol)
        record = AttemptRecord(
            step=step,
            time=self.clock.now(),
            client_order_id=cid,
            order_type=order_type,
            limit_price=limit_price,
            qty=qty,
            quote=quote,
        )
        outcome.attempts.append(record)
        self.tracker.register(cid)
        request = OrderRequest(
            client_order_id=cid,
            symbol=intent.symbol,
            side=intent.side,
            qty=qty,
            order_type=order_type,
            limit_price=limit_price,
        )
        await self.journal.intent(request, step, quote)
        snapshot = await self._send(request)
        self.journal.order(snapshot)
        self.tracker.update(snapshot)
        record.snapshot = self.tracker.register(cid).snapshot
        log.info(
            "order sent symbol=%s side=%s qty=%s type=%s limit=%s cid=%s",
            intent.symbol,
            intent.side.value,
            qty,
            order_type.value,
            limit_price,
            cid,
        )
        return record

    async def _send(self, request: OrderRequest) -> OrderSnapshot:
        retries = self.config.max_request_retries
        for attempt in range(retries + 1):
            try:
                return await self.broker.submit_order(request)
            except RateLimitedError as exc:
                await asyncio.sleep(exc.retry_after or 1.0)
            except DuplicateClientOrderIdError:
                existing = await self._lookup(request.client_order_id)
                if existing is not None:
                    return existing
                raise
            except (UnknownOrderOutcomeError, BrokerUnavailableError) as exc:
                log.warning("order outcome unknown cid=%s reason=%s", request.client_order_id, exc)
                existing = await self._lookup(request.client_order_id)
                if existing is not None:
                    log.info("order adopted after unknown outcome cid=%s", request.client_order_id)
                    return existing
                await asyncio.sleep(min(2.0**attempt, 30.0))
        raise BrokerUnavailableError(
            f"order {request.client_order_id} could not be sent after {retries + 1} tries"
        )

    async def _lookup(self, cid: ClientOrderId) -> OrderSnapshot | None:
        for attempt in range(self.config.max_request_retries + 1):
            try:
                return await self.broker.get_order_by_client_id(cid)
            except RateLimitedError as exc:
                await asyncio.sleep(exc.retry_after or 1.0)
            except (UnknownOrderOutcomeError, BrokerUnavailableError):
                await asyncio.sleep(min(2.0**attempt, 30.0))
        raise BrokerUnavailableError(f"order {cid} could not be looked up")

    async def wait(self, record: AttemptRecord, timeout: float, wake: asyncio.Event | None = None) -> None:
        """Wait until the order is final, the timeout passes, or wake is set."""
        tracked = self.tracker.register(record.client_order_id)
        if not tracked.is_terminal and timeout > 0:
            waiters = [asyncio.ensure_future(tracked.done.wait())]
            if wake is not None:
                waiters.append(asyncio.ensure_future(wake.wait()))
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        record.snapshot = tracked.snapshot
        if tracked.is_terminal:
            record.ended_at = self.clock.now()

    async def cancel(self, record: AttemptRecord) -> bool:
        """Cancel the order and wait for the broker to confirm it is final.

        Returns False if the order could not be confirmed final: the caller must then not
        send anything more for this intent (never over-trade).
        """
        tracked = self.tracker.register(record.client_order_id)
        snapshot = tracked.snapshot
        if snapshot is None:
            return True
        if not tracked.is_terminal:
            for _ in range(self.config.max_request_retries + 1):
                try:
                    await self.broker.cancel_order(snapshot.broker_order_id)
                    break
                except RateLimitedError as exc:
                    await asyncio.sleep(exc.retry_after or 1.0)
                except (OrderNotCancelableError, OrderNotFoundError):
                    break  # already final; its final state arrives or is fetched below
                except BrokerUnavailableError as exc:
                    log.warning("cancel failed cid=%s reason=%s", record.client_order_id, exc)
                    await asyncio.sleep(1.0)
            if not await self.tracker.wait_done(record.client_order_id, self.config.order_ack_timeout):
                await self._refresh(record)
        record.snapshot = tracked.snapshot
        record.ended_at = self.clock.now()
        if not tracked.is_terminal:
            log.error("cancel not confirmed cid=%s", record.client_order_id)
            return False
        return True

    async def _refresh(self, record: AttemptRecord) -> None:
        snapshot = self.tracker.register(record.client_order_id).snapshot
        if snapshot is None:
            return
        try:
            self.tracker.update(await self.broker.get_order(snapshot.broker_order_id))
        except (RateLimitedError, BrokerUnavailableError, OrderNotFoundError) as exc:
            log.warning("order refresh failed cid=%s reason=%s", record.client_order_id, exc)


def rejected_message(exc: RejectedError) -> str:
    return f"{type(exc).__name__.removesuffix('Error')}: {exc}"

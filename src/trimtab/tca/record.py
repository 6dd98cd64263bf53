"""What transaction cost analysis reads: a plan's orders, attempts, fills and the market.

An ExecutionRecord is built from the ledger (load_execution: exact fill times, the quotes
recorded while the plan ran) or from an ExecutionResult (record_from_result: one fill per
attempt at its average price, the quotes the attempts were priced from, plus any quotes
the caller observed). The cost metrics (trimtab.tca.costs) work on either.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import ValidationError

from trimtab.domain.money import ZERO
from trimtab.domain.orders import OrderEventKind, OrderSnapshot, OrderType, Side
from trimtab.domain.plan import Action, RebalancePlan
from trimtab.domain.quotes import Quote
from trimtab.domain.results import Attempt, ExecutionResult, OrderResult, QuoteView
from trimtab.ports.ledger import IntentRecord, Ledger

DECISION_TOLERANCE = timedelta(seconds=2)
"""A symbol's first quote this soon after the plan started still counts as its decision price."""


class QuoteTape:
    """The quotes of one symbol in time order: what the market looked like when."""

    __slots__ = ("_quotes", "_times")

    def __init__(self, quotes: Iterable[Quote]) -> None:
        ordered = sorted(quotes, key=lambda q: q.timestamp)
        unique: list[Quote] = []
        for quote in ordered:
            if unique and unique[-1] == quote:
                continue
            unique.append(quote)
        self._quotes = unique
        self._times = [q.timestamp for q in unique]

    def __len__(self) -> int:
        return len(self._quotes)

    def __iter__(self) -> Iterator[Quote]:
        return iter(self._quotes)

    @property
    def quotes(self) -> Sequence[Quote]:
        return self._quotes

    @property
    def first_time(self) -> datetime | None:
        return self._times[0] if self._times else None

    @property
    def last_time(self) -> datetime | None:
        return self._times[-1] if self._times else None

    def at(self, time: datetime, *, strict: bool = False) -> Quote | None:
        """The quote prevailing at time (the latest at or before it; before it if strict)."""
        index = (bisect.bisect_left if strict else bisect.bisect_right)(self._times, time)
        return self._quotes[index - 1] if index > 0 else None

    def covers(self, time: datetime) -> bool:
        """True when the tape reaches time: a quote at or after it was observed."""
        return bool(self._times) and self._times[-1] >= time

    def between(self, start: datetime, end: datetime) -> list[Quote]:
        """The quote prevailing at start, then every quote up to end."""
        lo = bisect.bisect_right(self._times, start)
        hi = bisect.bisect_right(self._times, end)
        head = [self._quotes[lo - 1]] if lo > 0 else []
        return head + self._quotes[lo:hi]


@dataclass(frozen=True, slots=True)
class ExecAttempt:
    """One order sent for an item: when, how it was priced, what became of it."""

    client_order_id: str
    step: int
    time: datetime
    order_type: OrderType
    limit_price: Decimal | None
    qty: Decimal
    quote: Quote | None
    """The quote the order was priced from."""
    status: str | None
    filled_qty: Decimal
    avg_fill_price: Decimal | None
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExecFill:
    """One execution of one of the attempts."""

    client_order_id: str
    time: datetime
    qty: Decimal
    price: Decimal

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price


@dataclass(frozen=True, slots=True)
class ExecOrder:
    """One plan item as it was worked: the target, the arrival quote, attempts and fills."""

    symbol: str
    side: Side
    requested_qty: Decimal
    """Shares the item was sized to (the target of the order)."""
    arrival_mid: Decimal | None
    """The mid when the engine decided the order (the basis of its arrival cost)."""
    arrival: Quote | None
    """The quote of the first attempt (the spread at arrival)."""
    decision: Quote | None
    """The quote when the plan started, if one was observed (the basis of the delay cost)."""
    attempts: tuple[ExecAttempt, ...]
    fills: tuple[ExecFill, ...]
    started_at: datetime | None
    """When the first order was sent."""
    ended_at: datetime | None
    """When working the item stopped: its last order final (or the plan's end)."""
    urgency: str | None = None
    status: str | None = None
    """filled, partial, unfilled, skipped or failed (with note)."""
    note: str | None = None

    @property
    def buying(self) -> bool:
        return self.side is Side.BUY

    @property
    def sign(self) -> Decimal:
        """+1 for a buy, -1 for a sell: a cost is sign * (price paid - reference)."""
        return Decimal(1) if self.side is Side.BUY else Decimal(-1)

    @property
    def filled_qty(self) -> Decimal:
        return sum((f.qty for f in self.fills), ZERO)

    @property
    def filled_notional(self) -> Decimal:
        return sum((f.notional for f in self.fills), ZERO)

    @property
    def avg_price(self) -> Decimal | None:
        filled = self.filled_qty
        return self.filled_notional / filled if filled > ZERO else None

    def attempt(self, client_order_id: str) -> ExecAttempt | None:
        for attempt in self.attempts:
            if attempt.client_order_id == client_order_id:
                return attempt
        return None

    def marketable(self, attempt: ExecAttempt) -> bool | None:
        """True when attempt could take liquidity on arrival: a market order, or a limit at
        or through the far touch of the quote it was priced from. None when unknown."""
        if attempt.order_type is OrderType.MARKET:
            return True
        quote, limit = attempt.quote, attempt.limit_price
        if quote is None or limit is None or quote.bid <= ZERO or quote.ask <= ZERO:
            return None
        return limit >= quote.ask if self.buying else limit <= quote.bid


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """A plan item that sent nothing: HOLD, skipped, or failed before any order."""

    symbol: str
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """Everything TCA needs about one plan."""

    plan_id: str
    correlation_id: str | None
    status: str | None
    started_at: datetime | None
    finished_at: datetime | None
    orders: tuple[ExecOrder, ...]
    tapes: Mapping[str, QuoteTape]
    requests: int | None = None
    skipped: tuple[SkippedItem, ...] = ()
    message: str | None = None
    warnings: tuple[str, ...] = ()
    state: str | None = None
    source: str = "ledger"
    recorded_quotes: int = 0

    def tape(self, symbol: str) -> QuoteTape:
        return self.tapes.get(symbol) or QuoteTape(())


# --- from the ledger ---


def load_execution(ledger: Ledger, plan_id: str, extra_quotes: Iterable[Quote] = ()) -> ExecutionRecord:
    """The record of plan_id from the ledger. Raises LookupError for an unknown plan.

    extra_quotes: quotes observed elsewhere (e.g. a market-data capture), merged with the
    recorded ones.
    """
    plan_row = ledger.get_plan(plan_id)
    if plan_row is None:
        raise LookupError(f"no plan {plan_id!r} in the ledger")
    result = ledger.stored_result(plan_id)
    intents = ledger.intents(plan_id)
    fills = ledger.fills(plan_id)
    quotes = ledger.quotes(plan_id)
    latest: dict[str, OrderSnapshot] = {}
    ended: dict[str, datetime] = {}
    for snapshot in ledger.orders(plan_id):
        latest[snapshot.client_order_id] = snapshot
        if snapshot.status.is_terminal:
            ended.setdefault(snapshot.client_order_id, snapshot.updated_at)
    for event in ledger.events(plan_id):
        cid = event.order.client_order_id
        latest[cid] = event.order
        if event.order.status.is_terminal or event.kind in _FINAL_EVENTS:
            ended.setdefault(cid, event.timestamp)

    results = {o.symbol: o for o in result.orders} if result is not None else {}
    by_symbol: dict[str, list[IntentRecord]] = {}
    for intent in intents:
        by_symbol.setdefault(intent.symbol, []).append(intent)
    fills_by_cid: dict[str, list[ExecFill]] = {}
    for fill in fills:
        fills_by_cid.setdefault(fill.client_order_id, []).append(
            ExecFill(fill.client_order_id, fill.time, fill.qty, fill.price)
        )

    tape_quotes: dict[str, list[Quote]] = {}
    for quote in itertools.chain(quotes, extra_quotes):
        tape_quotes.setdefault(quote.symbol, []).append(quote)
    for intent in intents:
        if intent.quote is not None:
            tape_quotes.setdefault(intent.symbol, []).append(intent.quote)
    tapes = {symbol: QuoteTape(items) for symbol, items in tape_quotes.items()}

    started_at = result.started_at if result is not None else plan_row.created_at
    finished_at = result.finished_at if result is not None else None
    orders: list[ExecOrder] = []
    for symbol, items in by_symbol.items():
        attempts = tuple(
            _attempt_from_intent(i, latest.get(i.client_order_id), ended.get(i.client_order_id))
            for i in items
        )
        order_fills = tuple(
            sorted(
                (f for intent in items for f in fills_by_cid.get(intent.client_order_id, [])),
                key=lambda f: f.time,
            )
        )
        outcome = results.get(symbol)
        first = items[0]
        requested = outcome.shares if outcome is not None and outcome.shares > ZERO else first.qty
        arrival = next((i.quote for i in items if i.quote is not None), None)
        arrival_mid = (
            outcome.arrival_mid if outcome is not None and outcome.arrival_mid is not None
            else arrival.mid if arrival is not None else None
        )
        end_times = [a.ended_at for a in attempts if a.ended_at is not None]
        end_times += [f.time for f in order_fills]
        ended_at = max(end_times) if end_times else finished_at
        orders.append(
            ExecOrder(
                symbol=symbol,
                side=first.side,
                requested_qty=requested,
                arrival_mid=arrival_mid,
                arrival=arrival,
                decision=_decision_quote(tapes.get(symbol), started_at),
                attempts=attempts,
                fills=order_fills,
                started_at=first.time,
                ended_at=ended_at,
                urgency=outcome.urgency if outcome is not None else None,
                status=_status(outcome, requested, order_fills),
                note=_note(outcome),
            )
        )
    skipped = _skipped_items(result, plan_row.plan_json, set(by_symbol))
    return ExecutionRecord(
        plan_id=plan_id,
        correlation_id=plan_row.correlation_id,
        status=plan_row.status or (result.status.value if result is not None else None),
        started_at=started_at,
        finished_at=finished_at,
        orders=tuple(orders),
        tapes=tapes,
        requests=result.stats.requests if result is not None else None,
        skipped=skipped,
        message=result.message if result is not None else None,
        warnings=result.warnings if result is not None else (),
        state=plan_row.state.value,
        source="ledger",
        recorded_quotes=len(quotes),
    )


_FINAL_EVENTS = frozenset(
    {OrderEventKind.FILL, OrderEventKind.CANCELED, OrderEventKind.REJECTED, OrderEventKind.EXPIRED,
     OrderEventKind.REPLACED}
)


def _attempt_from_intent(
    intent: IntentRecord, snapshot: OrderSnapshot | None, ended_at: datetime | None
) -> ExecAttempt:
    return ExecAttempt(
        client_order_id=intent.client_order_id,
        step=intent.step,
        time=intent.time,
        order_type=intent.order_type,
        limit_price=intent.limit_price,
        qty=intent.qty,
        quote=intent.quote,
        status=snapshot.status.value if snapshot is not None else None,
        filled_qty=snapshot.filled_qty if snapshot is not None else ZERO,
        avg_fill_price=snapshot.filled_avg_price if snapshot is not None else None,
        ended_at=ended_at,
    )


def _decision_quote(tape: QuoteTape | None, started_at: datetime | None) -> Quote | None:
    """The quote prevailing when the plan started, or one observed just after; None if unknown."""
    if tape is None or started_at is None or not len(tape):
        return None
    quote = tape.at(started_at)
    if quote is not None:
        return quote
    first = tape.quotes[0]
    return first if first.timestamp - started_at <= DECISION_TOLERANCE else None


def _status(outcome: OrderResult | None, requested: Decimal, fills: Sequence[ExecFill]) -> str:
    filled = sum((f.qty for f in fills), ZERO)
    if outcome is not None and outcome.success:
        return "filled"
    if filled <= ZERO:
        return "unfilled"
    if filled >= requested:
        return "filled"
    return "partial"


def _note(outcome: OrderResult | None) -> str | None:
    if outcome is None:
        return None
    return outcome.error_message or outcome.fallback_reason or outcome.skip_reason


def _skipped_items(
    result: ExecutionResult | None, plan_json: str, worked: set[str]
) -> tuple[SkippedItem, ...]:
    if result is not None:
        return tuple(
            SkippedItem(o.symbol, o.action.value, _skip_reason(o))
            for o in result.orders
            if o.symbol not in worked
        )
    try:
        plan = RebalancePlan.model_validate_json(plan_json)
    except ValidationError:
        return ()
    return tuple(
        SkippedItem(
            i.symbol,
            i.action.value,
            "HOLD: nothing to trade" if i.action is Action.HOLD else "no order sent (yet)",
        )
        for i in plan.items
        if i.symbol not in worked
    )


def _skip_reason(order: OrderResult) -> str:
    if order.action is Action.HOLD:
        return "HOLD: nothing to trade"
    return order.skip_reason or order.error_message or "no order sent"


# --- from an ExecutionResult ---


def quote_from_view(symbol: str, view: QuoteView) -> Quote:
    return Quote(symbol, view.bid, view.ask, view.bid_size, view.ask_size, view.time)


def record_from_result(
    result: ExecutionResult,
    quotes: Iterable[Quote] = (),
    *,
    decision_quotes: Mapping[str, Quote] | None = None,
) -> ExecutionRecord:
    """The record of an ExecutionResult, without the ledger.

    A result keeps each attempt's filled quantity and average price, not its individual
    fills: each attempt counts as one fill at its average price, at the time it ended.
    quotes: quotes observed meanwhile (for markouts and charts), any symbols and order.
    decision_quotes: each symbol's quote when the plan was decided, if known.
    """
    tape_quotes: dict[str, list[Quote]] = {}
    for quote in quotes:
        tape_quotes.setdefault(quote.symbol, []).append(quote)
    for order in result.orders:
        for attempt in order.attempts:
            if attempt.quote is not None:
                tape_quotes.setdefault(order.symbol, []).append(quote_from_view(order.symbol, attempt.quote))
    tapes = {symbol: QuoteTape(items) for symbol, items in tape_quotes.items()}
    orders: list[ExecOrder] = []
    skipped: list[SkippedItem] = []
    for order in result.orders:
        if not order.attempts or order.side is None:
            skipped.append(SkippedItem(order.symbol, order.action.value, _skip_reason(order)))
            continue
        attempts = tuple(_attempt_from_result(order.symbol, a) for a in order.attempts)
        fills = tuple(
            ExecFill(a.client_order_id, a.ended_at or a.time, a.filled_qty, a.avg_fill_price)
            for a in attempts
            if a.filled_qty > ZERO and a.avg_fill_price is not None
        )
        arrival = next((a.quote for a in attempts if a.quote is not None), None)
        ends = [a.ended_at for a in attempts if a.ended_at is not None]
        decision = None
        if decision_quotes is not None:
            decision = decision_quotes.get(order.symbol)
        else:
            decision = _decision_quote(tapes.get(order.symbol), result.started_at)
        orders.append(
            ExecOrder(
                symbol=order.symbol,
                side=Side(order.side),
                requested_qty=order.shares,
                arrival_mid=order.arrival_mid if order.arrival_mid is not None
                else (arrival.mid if arrival else None),
                arrival=arrival,
                decision=decision,
                attempts=attempts,
                fills=fills,
                started_at=attempts[0].time,
                ended_at=max(ends) if ends else result.finished_at,
                urgency=order.urgency,
                status=_status(order, order.shares, fills),
                note=_note(order),
            )
        )
    return ExecutionRecord(
        plan_id=result.plan_id,
        correlation_id=result.correlation_id,
        status=result.status.value,
        started_at=result.started_at,
        finished_at=result.finished_at,
        orders=tuple(orders),
        tapes=tapes,
        requests=result.stats.requests,
        skipped=tuple(skipped),
        message=result.message,
        warnings=result.warnings,
        state=None,
        source="result",
        recorded_quotes=sum(len(t) for t in tape_quotes.values()),
    )


def _attempt_from_result(symbol: str, attempt: Attempt) -> ExecAttempt:
    return ExecAttempt(
        client_order_id=attempt.client_order_id,
        step=attempt.step,
        time=attempt.time,
        order_type=OrderType(attempt.order_type),
        limit_price=attempt.limit_price,
        qty=attempt.qty,
        quote=quote_from_view(symbol, attempt.quote) if attempt.quote is not None else None,
        status=attempt.status,
        filled_qty=attempt.filled_qty,
        avg_fill_price=attempt.avg_fill_price,
        ended_at=attempt.ended_at,
    )

"""Cost metrics of an execution, per order and per plan, notional-weighted, in basis points.

Signs: a cost is positive when it hurt (a buy paid more, a sell got less, than the
reference). For an order of side sign s (+1 buy, -1 sell), target qty Qt, filled qty Qf
at average price P, arrival mid A (when the engine decided the order), decision mid D
(when the plan started; A where it was not observed) and E the mid when working the
order stopped:

- arrival cost = s (P - A) / A, over the filled notional.
- implementation shortfall = delay + execution + opportunity, over the target notional
  Qt D: delay s Qf (A - D) (the price moved before the order arrived: for buys, the sell
  phase and the settlement gate), execution s Qf (P - A), opportunity s (Qt - Qf)(E - D)
  (what was not filled, marked to the mid at the deadline).
- spread capture, per fill, against the quote its order was priced from: +100% filled at
  the near touch (the bid for a buy), 0 at the mid, -100% at the far touch; below -100%
  walked the book.
- markout at h seconds, per fill: s (M(t + h) - P) / P with M the mid h seconds after the
  fill. Positive: the market moved our way afterwards; negative: adverse selection. Only
  where the recorded quotes reach t + h (None elsewhere, never extrapolated).
- passive share: notional filled by resting limit orders (not marketable against their
  quote) over all filled notional; market orders and limits at or through the far touch
  are not passive.
- time to fill: from an order's first attempt to the fill that completed it.

Money stays Decimal; bps are Decimal rounded to 0.01, fractions to 0.0001.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from trimtab.domain.money import BPS, ZERO
from trimtab.domain.orders import OrderType, Side
from trimtab.tca.record import ExecFill, ExecOrder, ExecutionRecord, QuoteTape, SkippedItem

HORIZONS: tuple[int, ...] = (1, 10, 60)
"""Markout horizons in seconds."""

_BP_PLACES = Decimal("0.01")
_FRACTION_PLACES = Decimal("0.0001")


def round_bps(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_BP_PLACES)


def round_fraction(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_FRACTION_PLACES)


def _ratio_bps(numerator: Decimal | None, denominator: Decimal) -> Decimal | None:
    if numerator is None or denominator <= ZERO:
        return None
    return round_bps(numerator / denominator * BPS)


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    if denominator <= ZERO:
        return None
    return round_fraction(numerator / denominator)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in [0, 1]) of values, None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class FillCosts:
    """One fill, classified and costed."""

    client_order_id: str
    time: datetime
    qty: Decimal
    price: Decimal
    kind: str
    """market, marketable limit, resting limit, or limit (unknown quote)."""
    passive: bool
    spread_capture: Decimal | None
    markouts_bps: dict[int, Decimal | None]

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price


@dataclass(frozen=True, slots=True)
class OrderCosts:
    """The costs of one plan item that sent orders."""

    symbol: str
    side: Side
    status: str
    urgency: str | None
    note: str | None
    requested_qty: Decimal
    filled_qty: Decimal
    avg_price: Decimal | None
    arrival_mid: Decimal | None
    decision_mid: Decimal | None
    end_mid: Decimal | None
    requested_notional: Decimal
    """Target shares at the decision price (the arrival price where that is unknown)."""
    filled_notional: Decimal
    arrival_notional: Decimal
    """Filled shares at the arrival mid (the base of the arrival cost)."""
    arrival_cost_bps: Decimal | None
    shortfall_bps: Decimal | None
    delay_bps: Decimal | None
    execution_bps: Decimal | None
    opportunity_bps: Decimal | None
    arrival_cost: Decimal | None
    """Dollars (unrounded), as the execution part of the shortfall."""
    delay_cost: Decimal | None
    """Dollars; None when the decision price was not observed (the shortfall starts at arrival)."""
    opportunity_cost: Decimal | None
    """Dollars; None when no quote marks the unfilled shares."""
    shortfall: Decimal | None
    """Dollars: delay + execution + opportunity."""
    spread_capture: Decimal | None
    markouts_bps: dict[int, Decimal | None]
    fill_rate: Decimal | None
    passive_share: Decimal | None
    time_to_fill: float | None
    """Seconds from the first attempt to the fill that completed the order; None if not completed."""
    orders_sent: int
    fills: tuple[FillCosts, ...]


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Costs of a group of orders (a plan, its sells or its buys), notional-weighted."""

    orders: int
    completed: int
    requested_notional: Decimal
    filled_notional: Decimal
    arrival_cost_bps: Decimal | None
    arrival_cost: Decimal | None
    shortfall_bps: Decimal | None
    shortfall: Decimal | None
    delay_bps: Decimal | None
    execution_bps: Decimal | None
    opportunity_bps: Decimal | None
    decision_coverage: Decimal | None
    """Share of the target notional whose decision price was observed (the rest starts at arrival)."""
    spread_capture: Decimal | None
    markouts_bps: dict[int, Decimal | None]
    markout_coverage: dict[int, Decimal | None]
    """Share of the filled notional whose markout could be measured, per horizon."""
    fill_rate: Decimal | None
    passive_share: Decimal | None
    time_to_fill_p50: float | None
    time_to_fill_p95: float | None
    orders_sent: int


@dataclass(frozen=True, slots=True)
class PlanCosts:
    """The TCA of one plan: totals, per side, per order."""

    plan_id: str
    correlation_id: str | None
    status: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    requests: int | None
    total: CostSummary
    sells: CostSummary
    buys: CostSummary
    orders: tuple[OrderCosts, ...]
    skipped: tuple[SkippedItem, ...]
    source: str
    recorded_quotes: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: Decimals as strings, times ISO 8601."""
        return {
            "plan_id": self.plan_id,
            "correlation_id": self.correlation_id,
            "status": self.status,
            "started_at": _json(self.started_at),
            "finished_at": _json(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "requests": self.requests,
            "source": self.source,
            "recorded_quotes": self.recorded_quotes,
            "total": _summary_json(self.total),
            "sells": _summary_json(self.sells),
            "buys": _summary_json(self.buys),
            "orders": [_order_json(o) for o in self.orders],
            "skipped": [{"symbol": s.symbol, "action": s.action, "reason": s.reason} for s in self.skipped],
        }


# --- computing ---


def analyze(record: ExecutionRecord) -> PlanCosts:
    """The cost metrics of an execution record (see the module docstring for definitions)."""
    orders = tuple(order_costs(order, record.tape(order.symbol)) for order in record.orders)
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = (record.finished_at - record.started_at).total_seconds()
    return PlanCosts(
        plan_id=record.plan_id,
        correlation_id=record.correlation_id,
        status=record.status,
        started_at=record.started_at,
        finished_at=record.finished_at,
        duration_seconds=duration,
        requests=record.requests,
        total=summarize(orders),
        sells=summarize(o for o in orders if o.side is Side.SELL),
        buys=summarize(o for o in orders if o.side is Side.BUY),
        orders=orders,
        skipped=record.skipped,
        source=record.source,
        recorded_quotes=record.recorded_quotes,
    )


def _fill_costs(order: ExecOrder, fill: ExecFill, tape: QuoteTape) -> FillCosts:
    attempt = order.attempt(fill.client_order_id)
    sign = order.sign
    kind = "limit"
    passive = False
    quote = None
    if attempt is not None:
        marketable = order.marketable(attempt)
        if attempt.order_type is OrderType.MARKET:
            kind = "market"
        elif marketable is True:
            kind = "marketable limit"
        elif marketable is False:
            kind = "resting limit"
            passive = True
        quote = attempt.quote
    if quote is None:
        quote = tape.at(fill.time, strict=True)
    capture = None
    if quote is not None:
        half = (quote.ask - quote.bid) / 2
        if half > ZERO and quote.bid > ZERO:
            capture = sign * (quote.mid - fill.price) / half
    markouts: dict[int, Decimal | None] = {}
    for horizon in HORIZONS:
        later = fill.time + timedelta(seconds=horizon)
        mark = tape.at(later) if tape.covers(later) else None
        markouts[horizon] = (
            round_bps(sign * (mark.mid - fill.price) / fill.price * BPS) if mark is not None else None
        )
    return FillCosts(
        client_order_id=fill.client_order_id,
        time=fill.time,
        qty=fill.qty,
        price=fill.price,
        kind=kind,
        passive=passive,
        spread_capture=round_fraction(capture),
        markouts_bps=markouts,
    )


def order_costs(order: ExecOrder, tape: QuoteTape) -> OrderCosts:
    """The costs of one order against the market on tape."""
    sign = order.sign
    requested = order.requested_qty
    filled = order.filled_qty
    unfilled = max(requested - filled, ZERO)
    notional = order.filled_notional
    avg = order.avg_price
    arrival = order.arrival_mid
    decision = order.decision.mid if order.decision is not None else None
    reference = decision if decision is not None else arrival
    end_quote = tape.at(order.ended_at) if order.ended_at is not None else None
    end_mid = end_quote.mid if end_quote is not None else None

    execution = delay = opportunity = None
    arrival_base = ZERO
    if arrival is not None:
        arrival_base = filled * arrival
        execution = sign * (notional - arrival_base)
        if decision is not None:
            delay = sign * filled * (arrival - decision)
    if reference is not None:
        if unfilled <= ZERO:
            opportunity = ZERO
        elif end_mid is not None:
            opportunity = sign * unfilled * (end_mid - reference)
    shortfall = None
    if execution is not None and opportunity is not None:
        shortfall = (delay or ZERO) + execution + opportunity
    target = requested * reference if reference is not None else ZERO

    fills = tuple(_fill_costs(order, fill, tape) for fill in order.fills)
    capture_num, capture_den = _capture_sums(fills)
    markouts = {h: _ratio_bps(*_markout_sums(fills, h)) for h in HORIZONS}
    passive = sum((f.notional for f in fills if f.passive), ZERO)
    time_to_fill = None
    if order.fills and order.started_at is not None and (filled >= requested or order.status == "filled"):
        time_to_fill = (order.fills[-1].time - order.started_at).total_seconds()
    return OrderCosts(
        symbol=order.symbol,
        side=order.side,
        status=order.status or ("filled" if filled >= requested else "partial" if filled else "unfilled"),
        urgency=order.urgency,
        note=order.note,
        requested_qty=requested,
        filled_qty=filled,
        avg_price=avg,
        arrival_mid=arrival,
        decision_mid=decision,
        end_mid=end_mid,
        requested_notional=target,
        filled_notional=notional,
        arrival_notional=arrival_base,
        arrival_cost_bps=_ratio_bps(execution, arrival_base),
        shortfall_bps=_ratio_bps(shortfall, target),
        delay_bps=_ratio_bps(delay, target),
        execution_bps=_ratio_bps(execution, target),
        opportunity_bps=_ratio_bps(opportunity, target),
        arrival_cost=execution,
        delay_cost=delay,
        opportunity_cost=opportunity,
        shortfall=shortfall,
        spread_capture=round_fraction(capture_num / capture_den) if capture_den > ZERO else None,
        markouts_bps=markouts,
        fill_rate=_ratio(filled, requested),
        passive_share=_ratio(passive, notional),
        time_to_fill=time_to_fill,
        orders_sent=len(order.attempts),
        fills=fills,
    )


def _capture_sums(fills: Iterable[FillCosts]) -> tuple[Decimal, Decimal]:
    num = den = ZERO
    for fill in fills:
        if fill.spread_capture is not None:
            num += fill.spread_capture * fill.notional
            den += fill.notional
    return num, den


def _markout_sums(fills: Iterable[FillCosts], horizon: int) -> tuple[Decimal, Decimal]:
    """(sum of markout dollars, notional they cover) over the fills with data at horizon."""
    num = den = ZERO
    for fill in fills:
        value = fill.markouts_bps.get(horizon)
        if value is not None:
            num += value * fill.notional / BPS
            den += fill.notional
    return num, den


def summarize(orders: Iterable[OrderCosts]) -> CostSummary:
    """Notional-weighted totals of a group of orders."""
    group = list(orders)
    costed = [o for o in group if o.arrival_cost is not None and o.requested_notional > ZERO]
    target = sum((o.requested_notional for o in costed), ZERO)
    arrival_base = sum((o.arrival_notional for o in costed), ZERO)
    execution = sum((o.arrival_cost or ZERO for o in costed), ZERO)
    delay = sum((o.delay_cost or ZERO for o in costed), ZERO)
    opportunity_known = all(o.opportunity_cost is not None for o in costed)
    opportunity = sum((o.opportunity_cost or ZERO for o in costed), ZERO)
    shortfall = delay + execution + opportunity if opportunity_known else None
    decided = sum((o.requested_notional for o in costed if o.delay_cost is not None), ZERO)
    fills = [f for o in group for f in o.fills]
    filled_notional = sum((f.notional for f in fills), ZERO)
    capture_num, capture_den = _capture_sums(fills)
    markouts: dict[int, Decimal | None] = {}
    coverage: dict[int, Decimal | None] = {}
    for horizon in HORIZONS:
        num, den = _markout_sums(fills, horizon)
        markouts[horizon] = _ratio_bps(num, den)
        coverage[horizon] = _ratio(den, filled_notional)
    passive = sum((f.notional for f in fills if f.passive), ZERO)
    with_arrival = [o for o in group if o.arrival_mid is not None]
    requested_at_arrival = sum((o.requested_qty * (o.arrival_mid or ZERO) for o in with_arrival), ZERO)
    filled_at_arrival = sum(
        (min(o.filled_qty, o.requested_qty) * (o.arrival_mid or ZERO) for o in with_arrival), ZERO
    )
    times = [o.time_to_fill for o in group if o.time_to_fill is not None]
    return CostSummary(
        orders=len(group),
        completed=len(times),
        requested_notional=target,
        filled_notional=filled_notional,
        arrival_cost_bps=_ratio_bps(execution, arrival_base),
        arrival_cost=execution if costed else None,
        shortfall_bps=_ratio_bps(shortfall, target),
        shortfall=shortfall if costed else None,
        delay_bps=_ratio_bps(delay, target) if decided > ZERO else None,
        execution_bps=_ratio_bps(execution, target),
        opportunity_bps=_ratio_bps(opportunity, target) if opportunity_known else None,
        decision_coverage=_ratio(decided, target),
        spread_capture=round_fraction(capture_num / capture_den) if capture_den > ZERO else None,
        markouts_bps=markouts,
        markout_coverage=coverage,
        fill_rate=_ratio(filled_at_arrival, requested_at_arrival),
        passive_share=_ratio(passive, filled_notional),
        time_to_fill_p50=percentile(times, 0.5),
        time_to_fill_p95=percentile(times, 0.95),
        orders_sent=sum(o.orders_sent for o in group),
    )


# --- JSON ---


def _json(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return value


def _summary_json(summary: CostSummary) -> dict[str, Any]:
    return {
        name: _json(getattr(summary, name))
        for name in CostSummary.__dataclass_fields__
    }


def _order_json(order: OrderCosts) -> dict[str, Any]:
    out = {
        name: _json(getattr(order, name))
        for name in OrderCosts.__dataclass_fields__
        if name != "fills"
    }
    out["side"] = order.side.value
    out["fills"] = [
        {
            "client_order_id": f.client_order_id,
            "time": f.time.isoformat(),
            "qty": str(f.qty),
            "price": str(f.price),
            "kind": f.kind,
            "passive": f.passive,
            "spread_capture": _json(f.spread_capture),
            "markouts_bps": _json(f.markouts_bps),
        }
        for f in order.fills
    ]
    return out

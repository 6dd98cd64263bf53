"""alpaca-py's models turned into trimtab's domain types, every number through Decimal.

alpaca-py keeps some numbers as floats (order quantities may arrive either way, quotes
and trade update prices are floats); each goes through str() into to_decimal, so 0.1
stays 0.1.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import Enum
from typing import TypeVar

from trimtab.adapters.alpaca._sdk import (
    AlpacaAsset,
    AlpacaClock,
    AlpacaOrder,
    AlpacaPosition,
    AlpacaQuote,
    TradeAccount,
    TradeUpdate,
)
from trimtab.domain.account import Account, Asset, MarketClock, Position
from trimtab.domain.errors import BrokerUnavailableError
from trimtab.domain.money import ZERO, to_decimal
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderEventKind,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
)
from trimtab.domain.quotes import Quote

PRICE_QUANTUM = Decimal("0.000000001")

_STATUS: dict[str, OrderStatus] = {
    "new": OrderStatus.ACCEPTED,
    "accepted": OrderStatus.ACCEPTED,
    "accepted_for_bidding": OrderStatus.ACCEPTED,
    "held": OrderStatus.ACCEPTED,
    "stopped": OrderStatus.ACCEPTED,
    "suspended": OrderStatus.ACCEPTED,
    "pending_new": OrderStatus.PENDING_NEW,
    "pending_review": OrderStatus.PENDING_NEW,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "pending_cancel": OrderStatus.PENDING_CANCEL,
    "canceled": OrderStatus.CANCELED,
    "pending_replace": OrderStatus.PENDING_REPLACE,
    "replaced": OrderStatus.REPLACED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
    "done_for_day": OrderStatus.EXPIRED,
}

_EVENT: dict[str, OrderEventKind] = {
    "new": OrderEventKind.ACCEPTED,
    "accepted": OrderEventKind.ACCEPTED,
    "pending_new": OrderEventKind.ACCEPTED,
    "fill": OrderEventKind.FILL,
    "partial_fill": OrderEventKind.PARTIAL_FILL,
    "canceled": OrderEventKind.CANCELED,
    "expired": OrderEventKind.EXPIRED,
    "done_for_day": OrderEventKind.EXPIRED,
    "replaced": OrderEventKind.REPLACED,
    "rejected": OrderEventKind.REJECTED,
    "pending_cancel": OrderEventKind.PENDING_CANCEL,
    "pending_replace": OrderEventKind.PENDING_REPLACE,
    "order_replace_rejected": OrderEventKind.REPLACE_REJECTED,
    "order_cancel_rejected": OrderEventKind.CANCEL_REJECTED,
}


def text(value: object) -> str:
    """The wire text of an enum member or any value."""
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def dec(value: object, field: str) -> Decimal:
    """A Decimal from a str, int, Decimal or float (through str), refusing garbage."""
    if isinstance(value, float):
        return to_decimal(str(value), field=field)
    return to_decimal(value, field=field)


def opt_dec(value: object, field: str) -> Decimal | None:
    if value is None or value == "":
        return None
    return dec(value, field)


def order_status(value: object) -> OrderStatus:
    name = text(value)
    status = _STATUS.get(name)
    if status is None:
        # calculated: finished for the day with settlement pending; treat as expired
        # unless it is fully filled, which snapshot() decides.
        return OrderStatus.EXPIRED
    return status


def snapshot(order: AlpacaOrder) -> OrderSnapshot:
    """An OrderSnapshot of an alpaca-py Order."""
    filled = opt_dec(order.filled_qty, "filled_qty") or ZERO
    qty = opt_dec(order.qty, "qty")
    if qty is None:
        # A notional order has no quantity; what it filled is all we know of it.
        qty = filled
    status = order_status(order.status)
    if text(order.status) == "calculated" and qty > ZERO and filled >= qty:
        status = OrderStatus.FILLED
    avg = opt_dec(order.filled_avg_price, "filled_avg_price")
    if avg is not None and avg <= ZERO:
        avg = None
    order_type = OrderType.LIMIT if text(order.type or order.order_type) == "limit" else OrderType.MARKET
    return OrderSnapshot(
        broker_order_id=BrokerOrderId(str(order.id)),
        client_order_id=ClientOrderId(order.client_order_id),
        symbol=order.symbol or "",
        side=Side.SELL if text(order.side) == "sell" else Side.BUY,
        order_type=order_type,
        qty=qty,
        status=status,
        filled_qty=filled,
        filled_avg_price=avg,
        limit_price=opt_dec(order.limit_price, "limit_price"),
        created_at=order.created_at,
        updated_at=order.updated_at,
        reject_reason=None,
        replaced_by=BrokerOrderId(str(order.replaced_by)) if order.replaced_by else None,
        replaces=BrokerOrderId(str(order.replaces)) if order.replaces else None,
    )


def event_kind(name: str, snap: OrderSnapshot) -> OrderEventKind | None:
    """The event kind of a trade_updates event name; None for events that change nothing."""
    kind = _EVENT.get(name)
    if kind is not None:
        return kind
    if name in ("restated", "calculated", "stopped", "suspended"):
        return _kind_of_status(snap.status)
    return None


def _kind_of_status(status: OrderStatus) -> OrderEventKind | None:
    return {
        OrderStatus.ACCEPTED: OrderEventKind.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED: OrderEventKind.PARTIAL_FILL,
        OrderStatus.FILLED: OrderEventKind.FILL,
        OrderStatus.CANCELED: OrderEventKind.CANCELED,
        OrderStatus.EXPIRED: OrderEventKind.EXPIRED,
        OrderStatus.REPLACED: OrderEventKind.REPLACED,
        OrderStatus.REJECTED: OrderEventKind.REJECTED,
        OrderStatus.PENDING_CANCEL: OrderEventKind.PENDING_CANCEL,
        OrderStatus.PENDING_REPLACE: OrderEventKind.PENDING_REPLACE,
    }.get(status)


def trade_update_event(update: TradeUpdate) -> OrderEvent | None:
    """An OrderEvent of a trade_updates message; None for events that change nothing."""
    snap = snapshot(update.order)
    name = text(update.event)
    kind = event_kind(name, snap)
    if kind is None:
        return None
    fill_qty = fill_price = None
    if kind in (OrderEventKind.FILL, OrderEventKind.PARTIAL_FILL):
        fill_qty = opt_dec(update.qty, "qty")
        fill_price = opt_dec(update.price, "price")
    extra = {"event": name}
    if update.execution_id is not None:
        extra["execution_id"] = str(update.execution_id)
    if update.position_qty is not None:
        extra["position_qty"] = str(dec(update.position_qty, "position_qty"))
    return OrderEvent(
        kind=kind,
        order=snap,
        timestamp=update.timestamp,
        fill_qty=fill_qty,
        fill_price=fill_price,
        extra=extra,
    )


def synthesized_events(previous: OrderSnapshot | None, current: OrderSnapshot) -> list[OrderEvent]:
    """The events that lead from the last delivered state to a state read by REST.

    A fill's quantity and price are the differences of the cumulative figures.
    """
    events: list[OrderEvent] = []
    before_qty = previous.filled_qty if previous is not None else ZERO
    before_avg = previous.filled_avg_price if previous is not None else None
    stamp = current.updated_at
    extra = {"source": "rest"}
    if previous is None and current.status in (OrderStatus.ACCEPTED, OrderStatus.PENDING_NEW):
        events.append(OrderEvent(OrderEventKind.ACCEPTED, current, stamp, extra=dict(extra)))
    if current.filled_qty > before_qty:
        delta = current.filled_qty - before_qty
        price = None
        if current.filled_avg_price is not None:
            total = current.filled_avg_price * current.filled_qty - (before_avg or ZERO) * before_qty
            price = (total / delta).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
        kind = OrderEventKind.FILL if current.filled_qty >= current.qty else OrderEventKind.PARTIAL_FILL
        events.append(OrderEvent(kind, current, stamp, fill_qty=delta, fill_price=price, extra=dict(extra)))
    status_changed = previous is None or previous.status is not current.status
    if status_changed and current.status not in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
        kind_of = _kind_of_status(current.status)
        if kind_of is not None and not (previous is None and kind_of is OrderEventKind.ACCEPTED):
            events.append(OrderEvent(kind_of, current, stamp, extra=dict(extra)))
    return events


M = TypeVar("M")


def expect(value: object, kind: type[M]) -> M:
    """alpaca-py answers with a model, or raw data when asked; we always want the model."""
    if not isinstance(value, kind):
        raise BrokerUnavailableError(
            f"unexpected answer from Alpaca: {type(value).__name__} instead of {kind.__name__}"
        )
    return value


def account(model: TradeAccount) -> Account:
    return Account(
        cash=opt_dec(model.cash, "cash") or ZERO,
        buying_power=opt_dec(model.buying_power, "buying_power") or ZERO,
        portfolio_value=opt_dec(model.portfolio_value, "portfolio_value") or ZERO,
    )


def position(model: AlpacaPosition) -> Position:
    qty = dec(model.qty, "qty")
    available = opt_dec(model.qty_available, "qty_available")
    return Position(
        symbol=model.symbol,
        qty=qty,
        qty_available=available if available is not None else qty,
        avg_entry_price=dec(model.avg_entry_price, "avg_entry_price"),
        market_value=opt_dec(model.market_value, "market_value"),
    )


def asset(model: AlpacaAsset) -> Asset:
    return Asset(
        symbol=model.symbol,
        tradable=bool(model.tradable) and text(model.status) == "active",
        fractionable=bool(model.fractionable),
    )


def quote(model: AlpacaQuote, symbol: str | None = None) -> Quote:
    stamp: datetime = model.timestamp
    return Quote(
        symbol=symbol or model.symbol,
        bid=dec(model.bid_price, "bid_price"),
        ask=dec(model.ask_price, "ask_price"),
        bid_size=dec(model.bid_size, "bid_size"),
        ask_size=dec(model.ask_size, "ask_size"),
        timestamp=stamp,
    )


def market_clock(model: AlpacaClock) -> MarketClock:
    return MarketClock(
        timestamp=model.timestamp,
        is_open=bool(model.is_open),
        next_open=model.next_open,
        next_close=model.next_close,
    )

"""Orders: sides, types, statuses with an explicit transition table, ids, snapshots, events."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NewType

from trimtab.domain.errors import IllegalTransitionError

ClientOrderId = NewType("ClientOrderId", str)
"""Our id for an order, derived deterministically from (plan_id, symbol, attempt)."""

BrokerOrderId = NewType("BrokerOrderId", str)
"""The broker's id for an order."""

MAX_CLIENT_ORDER_ID_LENGTH = 48


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    DAY = "day"
    IOC = "ioc"
    GTC = "gtc"


class OrderStatus(StrEnum):
    PENDING_NEW = "pending_new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        return self not in TERMINAL_STATUSES

    def can_become(self, new: OrderStatus) -> bool:
        return new in TRANSITIONS[self]

    def transition(self, new: OrderStatus) -> OrderStatus:
        """Return new if the table allows self -> new, else raise IllegalTransitionError."""
        if new not in TRANSITIONS[self]:
            raise IllegalTransitionError(f"order status cannot go from {self.value} to {new.value}")
        return new


_S = OrderStatus
TERMINAL_STATUSES = frozenset({_S.FILLED, _S.CANCELED, _S.REPLACED, _S.REJECTED, _S.EXPIRED})
_LIVE_EXITS = frozenset(
    {
        _S.PARTIALLY_FILLED,
        _S.FILLED,
        _S.PENDING_CANCEL,
        _S.PENDING_REPLACE,
        _S.CANCELED,
        _S.REPLACED,
        _S.EXPIRED,
    }
)
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.PENDING_NEW: frozenset(
        {_S.ACCEPTED, _S.REJECTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED, _S.PENDING_CANCEL}
    ),
    _S.ACCEPTED: _LIVE_EXITS | {_S.REJECTED},
    _S.PARTIALLY_FILLED: _LIVE_EXITS,
    # A cancel or replace can be refused, which leaves the order live as it was.
    _S.PENDING_CANCEL: frozenset(
        {_S.CANCELED, _S.PARTIALLY_FILLED, _S.FILLED, _S.ACCEPTED, _S.EXPIRED, _S.PENDING_CANCEL}
    ),
    _S.PENDING_REPLACE: frozenset(
        {_S.REPLACED, _S.PARTIALLY_FILLED, _S.FILLED, _S.ACCEPTED, _S.CANCELED, _S.EXPIRED, _S.PENDING_CANCEL}
    ),
    _S.FILLED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.REPLACED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}


class OrderEventKind(StrEnum):
    ACCEPTED = "accepted"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    CANCEL_REJECTED = "cancel_rejected"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    REPLACE_REJECTED = "replace_rejected"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the engine asks a broker to do. limit_price is None for a market order."""

    client_order_id: ClientOrderId
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError(f"order qty must be positive, got {self.qty}")
        if self.order_type is OrderType.LIMIT and (self.limit_price is None or self.limit_price <= 0):
            raise ValueError("a limit order needs a positive limit_price")
        if self.order_type is OrderType.MARKET and self.limit_price is not None:
            raise ValueError("a market order has no limit_price")


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    """The broker's view of one order at one moment."""

    broker_order_id: BrokerOrderId
    client_order_id: ClientOrderId
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    status: OrderStatus
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    limit_price: Decimal | None
    created_at: datetime
    updated_at: datetime
    reject_reason: str | None = None
    replaced_by: BrokerOrderId | None = None
    replaces: BrokerOrderId | None = None

    @property
    def remaining_qty(self) -> Decimal:
        return self.qty - self.filled_qty


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One change of one order, as the broker's stream reports it.

    fill_qty and fill_price are set on fill and partial_fill events (this event's
    execution); order.filled_qty is the cumulative filled quantity.
    """

    kind: OrderEventKind
    order: OrderSnapshot
    timestamp: datetime
    fill_qty: Decimal | None = None
    fill_price: Decimal | None = None
    reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


_CID_SAFE = re.compile(r"[^A-Za-z0-9.\-]")


def make_client_order_id(plan_id: str, symbol: str, attempt: int, prefix: str = "tt") -> ClientOrderId:
    """Derive the client order id of (plan_id, symbol, attempt); at most 48 characters.

    The plan id enters as a hash so any plan id fits; the symbol and attempt stay readable.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    digest = hashlib.sha256(plan_id.encode("utf-8")).hexdigest()[:12]
    clean_prefix = _CID_SAFE.sub("", prefix)[:10]
    clean_symbol = _CID_SAFE.sub("", symbol)[:15]
    cid = f"{clean_prefix}-{digest}-{clean_symbol}-{attempt}"
    if len(cid) > MAX_CLIENT_ORDER_ID_LENGTH:  # pragma: no cover - bounded by the slices above
        raise ValueError("client order id too long")
    return ClientOrderId(cid)

"""Alpaca's JSON shapes, built from trimtab's domain types (the ones alpaca-py parses).

Decimals go out as decimal strings where Alpaca sends strings (orders, positions,
account) and as JSON numbers where it sends numbers (market data). Times are RFC 3339
with nanoseconds and a Z.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from trimtab.adapters.sandbox.clock import rfc3339
from trimtab.domain.account import Account, Asset, Position
from trimtab.domain.money import ZERO, money
from trimtab.domain.orders import OrderEventKind, OrderSnapshot, OrderStatus
from trimtab.domain.quotes import Quote

NAMESPACE = uuid.UUID("5f0b3a56-7d1c-4c62-9a51-2f3b8a1d9e10")

CODE_INVALID = 40010001
CODE_FORBIDDEN = 40310000
CODE_NOT_FOUND = 40410000
CODE_UNPROCESSABLE = 42210000
CODE_RATE_LIMITED = 42910000
CODE_INTERNAL = 50010000

ORDER_STATUS: dict[OrderStatus, str] = {
    OrderStatus.PENDING_NEW: "pending_new",
    OrderStatus.ACCEPTED: "new",
    OrderStatus.PARTIALLY_FILLED: "partially_filled",
    OrderStatus.FILLED: "filled",
    OrderStatus.PENDING_CANCEL: "pending_cancel",
    OrderStatus.CANCELED: "canceled",
    OrderStatus.PENDING_REPLACE: "pending_replace",
    OrderStatus.REPLACED: "replaced",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.EXPIRED: "expired",
}

EVENT_NAME: dict[OrderEventKind, str] = {
    OrderEventKind.ACCEPTED: "new",
    OrderEventKind.PARTIAL_FILL: "partial_fill",
    OrderEventKind.FILL: "fill",
    OrderEventKind.PENDING_CANCEL: "pending_cancel",
    OrderEventKind.CANCELED: "canceled",
    OrderEventKind.CANCEL_REJECTED: "order_cancel_rejected",
    OrderEventKind.PENDING_REPLACE: "pending_replace",
    OrderEventKind.REPLACED: "replaced",
    OrderEventKind.REPLACE_REJECTED: "order_replace_rejected",
    OrderEventKind.REJECTED: "rejected",
    OrderEventKind.EXPIRED: "expired",
}

ETF_EXCHANGE = "ARCA"
STOCK_EXCHANGE = "NASDAQ"


def dstr(value: Decimal) -> str:
    """A Decimal as a plain decimal string."""
    return format(value, "f")


def number(value: Decimal) -> float | int:
    """A Decimal as a JSON number (market data is numeric on the wire)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "asset:" + symbol))


def account_id(key_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "account:" + key_id))


def error(code: int | None, message: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {} if code is None else {"code": code}
    body["message"] = message
    body.update(fields)
    return body


@dataclass(slots=True)
class OrderRecord:
    """What the sandbox remembers of an order beyond the exchange's snapshot."""

    snapshot: OrderSnapshot
    time_in_force: str = "day"
    notional: Decimal | None = None
    extended_hours: bool = False


def order_json(record: OrderRecord, wire: Any, *, exchange_is_etf: bool = False) -> dict[str, Any]:
    """An Order as Alpaca sends it. wire maps exchange times onto wire times."""
    snap = record.snapshot
    created = rfc3339(wire(snap.created_at))
    updated = rfc3339(wire(snap.updated_at))

    def when(status: OrderStatus) -> str | None:
        return updated if snap.status is status else None

    return {
        "id": str(snap.broker_order_id),
        "client_order_id": str(snap.client_order_id),
        "created_at": created,
        "updated_at": updated,
        "submitted_at": created,
        "filled_at": when(OrderStatus.FILLED),
        "expired_at": when(OrderStatus.EXPIRED),
        "canceled_at": when(OrderStatus.CANCELED),
        "failed_at": when(OrderStatus.REJECTED),
        "replaced_at": when(OrderStatus.REPLACED),
        "replaced_by": str(snap.replaced_by) if snap.replaced_by else None,
        "replaces": str(snap.replaces) if snap.replaces else None,
        "asset_id": asset_id(snap.symbol),
        "symbol": snap.symbol,
        "asset_class": "us_equity",
        "notional": dstr(record.notional) if record.notional is not None else None,
        "qty": None if record.notional is not None else dstr(snap.qty),
        "filled_qty": dstr(snap.filled_qty),
        "filled_avg_price": dstr(snap.filled_avg_price) if snap.filled_avg_price is not None else None,
        "order_class": "",
        "order_type": snap.order_type.value,
        "type": snap.order_type.value,
        "side": snap.side.value,
        "position_intent": "buy_to_open" if snap.side.value == "buy" else "sell_to_close",
        "time_in_force": record.time_in_force,
        "limit_price": dstr(snap.limit_price) if snap.limit_price is not None else None,
        "stop_price": None,
        "status": ORDER_STATUS[snap.status],
        "extended_hours": record.extended_hours,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "expires_at": None,
    }


def trade_update_json(
    event_name: str,
    order: dict[str, Any],
    timestamp: datetime,
    *,
    price: Decimal | None = None,
    qty: Decimal | None = None,
    position_qty: Decimal | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"event": event_name, "timestamp": rfc3339(timestamp), "order": order}
    if execution_id is not None:
        data["execution_id"] = execution_id
    if price is not None:
        data["price"] = dstr(price)
    if qty is not None:
        data["qty"] = dstr(qty)
    if position_qty is not None:
        data["position_qty"] = dstr(position_qty)
    return {"stream": "trade_updates", "data": data}


def position_json(position: Position, current_price: Decimal, etf: bool) -> dict[str, Any]:
    qty = position.qty
    market_value = money(qty * current_price)
    cost_basis = money(qty * position.avg_entry_price)
    pl = market_value - cost_basis
    plpc = (pl / cost_basis).quantize(Decimal("0.0000000001")) if cost_basis else ZERO
    return {
        "asset_id": asset_id(position.symbol),
        "symbol": position.symbol,
        "exchange": ETF_EXCHANGE if etf else STOCK_EXCHANGE,
        "asset_class": "us_equity",
        "asset_marginable": False,
        "avg_entry_price": dstr(position.avg_entry_price),
        "qty": dstr(qty),
        "side": "long" if qty >= 0 else "short",
        "market_value": dstr(market_value),
        "cost_basis": dstr(cost_basis),
        "unrealized_pl": dstr(pl),
        "unrealized_plpc": dstr(plpc),
        "unrealized_intraday_pl": dstr(pl),
        "unrealized_intraday_plpc": dstr(plpc),
        "current_price": dstr(current_price),
        "lastday_price": dstr(current_price),
        "change_today": "0",
        "qty_available": dstr(position.qty_available),
    }


def account_json(
    account: Account, key_id: str, number_text: str, long_value: Decimal, created: datetime
) -> dict[str, Any]:
    return {
        "id": account_id(key_id),
        "account_number": number_text,
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "buying_power": dstr(account.buying_power),
        "regt_buying_power": dstr(account.buying_power),
        "daytrading_buying_power": "0",
        "non_marginable_buying_power": dstr(account.buying_power),
        "options_buying_power": dstr(account.buying_power),
        "cash": dstr(account.cash),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "portfolio_value": dstr(account.portfolio_value),
        "equity": dstr(account.portfolio_value),
        "last_equity": dstr(account.portfolio_value),
        "long_market_value": dstr(long_value),
        "short_market_value": "0",
        "initial_margin": "0",
        "maintenance_margin": "0",
        "last_maintenance_margin": "0",
        "sma": "0",
        "multiplier": "1",
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "shorting_enabled": False,
        "daytrade_count": 0,
        "options_approved_level": 0,
        "options_trading_level": 0,
        "created_at": rfc3339(created),
    }


def asset_json(asset: Asset, etf: bool) -> dict[str, Any]:
    return {
        "id": asset_id(asset.symbol),
        "class": "us_equity",
        "exchange": ETF_EXCHANGE if etf else STOCK_EXCHANGE,
        "symbol": asset.symbol,
        "name": f"{asset.symbol} (simulated)",
        "status": "active",
        "tradable": asset.tradable,
        "marginable": False,
        "shortable": False,
        "easy_to_borrow": False,
        "fractionable": asset.fractionable,
        "min_order_size": 1 if not asset.fractionable else 0.000000001,
        "min_trade_increment": 1 if not asset.fractionable else 0.000000001,
        "price_increment": 0.01,
        "attributes": ["fractional_eh_enabled"] if asset.fractionable else [],
    }


def quote_fields(quote: Quote, bid_zeroed: bool) -> dict[str, Any]:
    """The fields of a quote shared by REST (t as text) and the stream (t as a timestamp)."""
    bid = ZERO if bid_zeroed else quote.bid
    bid_size = ZERO if bid_zeroed else quote.bid_size
    return {
        "ax": "V",
        "ap": number(quote.ask),
        "as": number(quote.ask_size),
        "bx": "V",
        "bp": number(bid),
        "bs": number(bid_size),
        "c": ["R"],
        "z": "C",
    }

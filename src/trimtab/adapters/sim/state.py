"""Files of the simulated account: the user's account file and the saved state.

An account file is what a user writes to start the simulated account::

    {"cash": "100000",
     "positions": {"SPY": "50", "BND": {"qty": "120.5", "avg_entry_price": "72.10"}},
     "assets": {"BRK.A": {"fractionable": false}, "XYZ": {"tradable": false}},
     "prices": {"SPY": "450.00"}}

Every field is optional. The saved state is the same object plus what the next run needs
to continue: the format tag, seed, session number, virtual time, last prices and the
order history. Bad input raises ValueError with a message naming the field.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from trimtab.adapters.sim.trading_calendar import NEW_YORK, session_at_or_after
from trimtab.domain.account import Asset
from trimtab.domain.money import MAX_AMOUNT, ZERO, to_decimal
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
)
from trimtab.domain.plan import SYMBOL_PATTERN

STATE_FORMAT = "trimtab-sim-account"
STATE_VERSION = 1
SESSION_OPEN = time(10, 0)
"""Where a simulated session starts on its trading day (half an hour after the open)."""

LAST_START = timedelta(minutes=30)
"""A saved session continuing later than this before the close continues on the next
trading day instead."""

DEFAULT_MARKET_DATE = date(2026, 1, 5)
"""The trading day of a SimBroker given neither start nor market_date (a Monday)."""

_ACCOUNT_FIELDS = ("cash", "positions", "assets", "prices")
_STATE_FIELDS = (*_ACCOUNT_FIELDS, "format", "version", "seed", "session", "time", "next_order", "orders")
_MAX_QTY = Decimal("1000000000")


def session_start(day: date) -> datetime:
    """10:00 New York time of the first trading day on or after day: where a simulated
    market starts (weekends and exchange holidays move it to the next trading day)."""
    return trading_start(datetime.combine(day, time(0, 0), tzinfo=NEW_YORK))


def trading_start(at: datetime) -> datetime:
    """at if the market is in regular hours then; otherwise 10:00 New York time of the
    next session to open (the same day before the open, else the next trading day)."""
    opens, closes = session_at_or_after(at)
    if opens <= at < closes:
        return at
    return datetime.combine(opens.date(), SESSION_OPEN, tzinfo=NEW_YORK)


def session_close(start: datetime) -> datetime:
    """The close (16:00, or 13:00 on early-close days) of the session open at start, or of
    the next session if the market is closed then."""
    return session_at_or_after(start)[1]


def continue_session(saved: datetime, requested: datetime) -> datetime:
    """Where a loaded account's market starts: the later of the saved and requested times,
    moved to 10:00 of the next session when the market is closed then or closes within
    LAST_START (10:00 of the same day before the open)."""
    start = max(saved, requested)
    opens, closes = session_at_or_after(start)
    if start >= closes - LAST_START:
        opens = session_at_or_after(closes)[0]
    elif start >= opens:
        return start
    return datetime.combine(opens.date(), SESSION_OPEN, tzinfo=NEW_YORK)


@dataclass(slots=True)
class AccountSpec:
    """A parsed account file or saved state."""

    cash: Decimal = Decimal("100000")
    positions: dict[str, Decimal] = field(default_factory=dict)
    avg_prices: dict[str, Decimal] = field(default_factory=dict)
    assets: dict[str, Asset] = field(default_factory=dict)
    prices: dict[str, Decimal] = field(default_factory=dict)
    seed: int | None = None
    session: int = 0
    time: datetime | None = None
    next_order: int = 0
    orders: list[OrderSnapshot] = field(default_factory=list)


def parse_json(text: str) -> object:
    """JSON with exact decimals; NaN and Infinity refused."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not allowed")

    try:
        return json.loads(text, parse_float=Decimal, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def parse_account(data: object, *, saved: bool = False) -> AccountSpec:
    """Validate an account object (or a saved state when saved is True)."""
    if not isinstance(data, dict):
        raise ValueError(f"the account must be a JSON object, got {_kind(data)}")
    allowed = _STATE_FIELDS if saved else _ACCOUNT_FIELDS
    for key in data:
        if key not in allowed:
            raise ValueError(f"unknown field {key!r} (expected {', '.join(allowed)})")
    spec = AccountSpec()
    if saved:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"format: expected {STATE_FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version: expected {STATE_VERSION}, got {data.get('version')!r}")
        spec.seed = _int(data.get("seed", 0), "seed")
        spec.session = _int(data.get("session", 0), "session")
        spec.next_order = _int(data.get("next_order", 0), "next_order")
        if "time" in data:
            spec.time = _time(data["time"], "time")
    if "cash" in data:
        cash = _decimal(data["cash"], "cash")
        if cash < 0:
            raise ValueError(f"cash must not be negative, got {cash}")
        spec.cash = cash
    if "assets" in data:
        for symbol, raw in _object(data["assets"], "assets").items():
            where = f"assets.{symbol}"
            _symbol(symbol, where)
            spec.assets[symbol] = _asset(symbol, raw, where)
    if "positions" in data:
        for symbol, raw in _object(data["positions"], "positions").items():
            where = f"positions.{symbol}"
            _symbol(symbol, where)
            qty, avg = _position(raw, where)
            asset = spec.assets.get(symbol)
            if asset is not None and not asset.fractionable and qty != qty.to_integral_value():
                raise ValueError(f"{where}: {qty} shares is fractional but {symbol} is not fractionable")
            if qty != ZERO:
                spec.positions[symbol] = qty
                if avg is not None:
                    spec.avg_prices[symbol] = avg
    if "prices" in data:
        for symbol, raw in _object(data["prices"], "prices").items():
            where = f"prices.{symbol}"
            _symbol(symbol, where)
            price = _decimal(raw, where)
            if price <= 0:
                raise ValueError(f"{where} must be positive, got {price}")
            spec.prices[symbol] = price
    if saved and "orders" in data:
        raw_orders = data["orders"]
        if not isinstance(raw_orders, list):
            raise ValueError(f"orders must be a list, got {_kind(raw_orders)}")
        spec.orders = [_order(raw, f"orders[{i}]") for i, raw in enumerate(raw_orders)]
    return spec


def write_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to path through a temporary file and a rename: never half a file."""
    path = Path(path)
    text = json.dumps(payload, indent=1, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def snapshot_to_json(order: OrderSnapshot) -> dict[str, Any]:
    """An order snapshot as a JSON object (decimals as strings, times in ISO 8601)."""
    return {
        "id": order.broker_order_id,
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.order_type.value,
        "qty": str(order.qty),
        "status": order.status.value,
        "filled_qty": str(order.filled_qty),
        "filled_avg_price": None if order.filled_avg_price is None else str(order.filled_avg_price),
        "limit_price": None if order.limit_price is None else str(order.limit_price),
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
        "reject_reason": order.reject_reason,
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
    }


# -- field parsers ------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | Decimal | float) else type(value).__name__


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object, got {_kind(value)}")
    return value


def _symbol(symbol: str, where: str) -> None:
    if not SYMBOL_PATTERN.match(symbol):
        raise ValueError(
            f"{where}: {symbol!r} is not a symbol (uppercase letters, digits, '.' or '-', at most 15)"
        )


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"{where} must be a decimal string or number, got {_kind(value)}")
    result = to_decimal(value, field=where)
    if abs(result) > MAX_AMOUNT:
        raise ValueError(f"{where} is absurdly large: {value}")
    return result


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, got {_kind(value)}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {_kind(value)}")
    return value


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be an ISO 8601 time string, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where} is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{where} needs a time zone: {value!r}")
    return parsed.astimezone(UTC)


def _asset(symbol: str, raw: object, where: str) -> Asset:
    values = _object(raw, where)
    for key in values:
        if key not in ("tradable", "fractionable"):
            raise ValueError(f"{where}: unknown field {key!r} (expected tradable, fractionable)")
    tradable = _bool(values.get("tradable", True), f"{where}.tradable")
    fractionable = _bool(values.get("fractionable", True), f"{where}.fractionable")
    return Asset(symbol=symbol, tradable=tradable, fractionable=fractionable)


def _position(raw: object, where: str) -> tuple[Decimal, Decimal | None]:
    avg: Decimal | None = None
    if isinstance(raw, dict):
        for key in raw:
            if key not in ("qty", "avg_entry_price"):
                raise ValueError(f"{where}: unknown field {key!r} (expected qty, avg_entry_price)")
        if "qty" not in raw:
            raise ValueError(f"{where}.qty is missing")
        qty = _decimal(raw["qty"], f"{where}.qty")
        if raw.get("avg_entry_price") is not None:
            avg = _decimal(raw["avg_entry_price"], f"{where}.avg_entry_price")
            if avg <= 0:
                raise ValueError(f"{where}.avg_entry_price must be positive, got {avg}")
    else:
        qty = _decimal(raw, where)
    if qty < 0:
        raise ValueError(f"{where}: short positions are not supported (qty {qty})")
    if qty > _MAX_QTY:
        raise ValueError(f"{where}: qty {qty} is absurdly large")
    if qty != qty.quantize(Decimal("0.000000001")):
        raise ValueError(f"{where}: qty {qty} has more than 9 decimals")
    return qty, avg


def _optional_decimal(data: dict[str, Any], key: str, where: str) -> Decimal | None:
    value = data.get(key)
    return None if value is None else _decimal(value, f"{where}.{key}")


def _optional_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string, got {_kind(value)}")
    return value


def _order(raw: object, where: str) -> OrderSnapshot:
    data = _object(raw, where)
    try:
        side = Side(str(data.get("side")))
        order_type = OrderType(str(data.get("type")))
        status = OrderStatus(str(data.get("status")))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    order_id = _optional_str(data, "id", where)
    cid = _optional_str(data, "client_order_id", where)
    symbol = _optional_str(data, "symbol", where)
    if not order_id or not cid or not symbol:
        raise ValueError(f"{where}: id, client_order_id and symbol are required")
    qty = _decimal(data.get("qty"), f"{where}.qty")
    filled = _decimal(data.get("filled_qty", "0"), f"{where}.filled_qty")
    replaced_by = _optional_str(data, "replaced_by", where)
    replaces = _optional_str(data, "replaces", where)
    return OrderSnapshot(
        broker_order_id=BrokerOrderId(order_id),
        client_order_id=ClientOrderId(cid),
        symbol=symbol,
        side=side,
        order_type=order_type,
        qty=qty,
        status=status,
        filled_qty=filled,
        filled_avg_price=_optional_decimal(data, "filled_avg_price", where),
        limit_price=_optional_decimal(data, "limit_price", where),
        created_at=_time(data.get("created_at"), f"{where}.created_at"),
        updated_at=_time(data.get("updated_at"), f"{where}.updated_at"),
        reject_reason=_optional_str(data, "reject_reason", where),
        replaced_by=BrokerOrderId(replaced_by) if replaced_by else None,
        replaces=BrokerOrderId(replaces) if replaces else None,
    )

"""Account facts a broker reports: cash, buying power, positions, assets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Account:
    cash: Decimal
    buying_power: Decimal
    portfolio_value: Decimal


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    qty: Decimal
    qty_available: Decimal
    avg_entry_price: Decimal
    market_value: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Asset:
    symbol: str
    tradable: bool = True
    fractionable: bool = True


@dataclass(frozen=True, slots=True)
class MarketClock:
    """The broker's market calendar now: open or not, and the next open and close."""

    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime

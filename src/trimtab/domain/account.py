"""Account facts a broker reports: cash, buying power, positions, assets."""

from __future__ import annotations

from dataclasses import dataclass
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

"""Top-of-book quotes and the rules that make one usable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from trimtab.domain.money import BPS, ZERO


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    timestamp: datetime

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal:
        return self.ask - self.bid

    @property
    def spread_bps(self) -> Decimal:
        mid = self.mid
        if mid <= ZERO:
            return Decimal("Infinity")
        return self.spread / mid * BPS

    def problem(self, now: datetime, max_age_seconds: float, max_spread_bps: Decimal) -> str | None:
        """Why this quote may not be used now, or None if it is usable."""
        if self.bid <= ZERO or self.ask <= ZERO:
            return f"zero-sided quote (bid {self.bid}, ask {self.ask})"
        if self.bid >= self.ask:
            return f"crossed or locked quote (bid {self.bid} >= ask {self.ask})"
        age = (now - self.timestamp).total_seconds()
        if age > max_age_seconds:
            return f"stale quote ({age:.1f}s old, limit {max_age_seconds:g}s)"
        spread = self.spread_bps
        if spread > max_spread_bps:
            return f"spread too wide ({spread:.1f} bps, limit {max_spread_bps} bps)"
        return None

    def near_touch(self, buying: bool) -> Decimal:
        """The price on our own side: bid for a buy, ask for a sell."""
        return self.bid if buying else self.ask

    def far_touch(self, buying: bool) -> Decimal:
        """The price we would pay to cross: ask for a buy, bid for a sell."""
        return self.ask if buying else self.bid

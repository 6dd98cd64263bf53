"""Symbol profiles: the statistical character of one symbol's synthetic market.

Defaults are calibrated to the measured figures in shared/notes/market-calibration.md:
a liquid large cap (IBM, October 2013) trades about once a second in lots of 100 shares
(mean 156), shows about 200 shares at the touch, quotes a 1-3 cent spread and moves about
4 bp per minute; a mega ETF (SPY) quotes one tick wide with thousands of shares at the
touch and moves less. Unless a profile is configured, each symbol gets one derived from
its name and the seed, so the same seed always gives the same market.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal

from trimtab.adapters.sim.randomness import draw, stable_key, stream_base, unit
from trimtab.domain.money import price_tick, round_price

MEGA_ETFS = frozenset(
    {"SPY", "QQQ", "IVV", "VOO", "VTI", "IWM", "DIA", "EFA", "EEM", "TLT", "GLD", "XLF", "AGG",
     "BND", "LQD", "HYG"}
)
"""Symbols that always get a mega-ETF profile (one-tick spread, deep touch)."""

ETF_SHARE = 0.12
"""Share of the other symbols that get a mega-ETF-like profile."""


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    """How one symbol's synthetic market behaves. Sizes are in shares, rates per second.

    price: the reference price at the start of the market (the mid the path starts from).
    volatility_bps: standard deviation of one-minute mid returns, in basis points.
    spread_ticks: median quoted spread in ticks; spread_dispersion is the standard
    deviation of its logarithm (0 keeps the spread constant).
    touch_size: median size displayed at the touch; touch_size_dispersion as above;
    lot_size: displayed sizes are multiples of it; depth_size: the size of each deeper
    level, one tick apart (None: the same as touch_size).
    trade_rate: trades per second; trade_size_median and trade_size_dispersion define a
    log-normal trade size; at_ask and at_bid are the shares of trades printing at the ask
    and at the bid, the rest print inside the spread.
    replenish_half_life: seconds for liquidity taken by our own orders to come back halfway.
    """

    price: Decimal
    volatility_bps: float = 4.0
    spread_ticks: float = 3.0
    spread_dispersion: float = 0.6
    touch_size: int = 200
    touch_size_dispersion: float = 0.8
    lot_size: int = 100
    depth_size: int | None = None
    trade_rate: float = 1.0
    trade_size_median: float = 100.0
    trade_size_dispersion: float = 0.94
    at_ask: float = 0.35
    at_bid: float = 0.35
    replenish_half_life: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.price, Decimal) or not self.price.is_finite() or self.price <= 0:
            raise ValueError(f"price must be a positive Decimal, got {self.price!r}")
        _check(self.volatility_bps >= 0, "volatility_bps must be >= 0")
        _check(self.spread_ticks >= 1, "spread_ticks must be >= 1")
        _check(self.spread_dispersion >= 0, "spread_dispersion must be >= 0")
        _check(self.touch_size >= 1, "touch_size must be >= 1")
        _check(self.touch_size_dispersion >= 0, "touch_size_dispersion must be >= 0")
        _check(self.lot_size >= 1, "lot_size must be >= 1")
        _check(self.depth_size is None or self.depth_size >= 1, "depth_size must be >= 1")
        _check(self.trade_rate >= 0, "trade_rate must be >= 0")
        _check(self.trade_size_median >= 1, "trade_size_median must be >= 1")
        _check(self.trade_size_dispersion >= 0, "trade_size_dispersion must be >= 0")
        _check(0 <= self.at_ask <= 1 and 0 <= self.at_bid <= 1, "at_ask and at_bid must be in [0, 1]")
        _check(self.at_ask + self.at_bid <= 1, "at_ask + at_bid must be <= 1")
        _check(self.replenish_half_life > 0, "replenish_half_life must be > 0")

    @property
    def tick(self) -> Decimal:
        """The price increment of the symbol at its reference price."""
        return price_tick(self.price)

    @property
    def level_size(self) -> int:
        """The size of each level behind the touch."""
        return self.depth_size if self.depth_size is not None else self.touch_size

    @property
    def inside(self) -> float:
        """Share of trades that print inside the spread (hidden or midpoint liquidity)."""
        return max(0.0, 1.0 - self.at_ask - self.at_bid)

    def with_price(self, price: Decimal) -> SymbolProfile:
        """The same profile starting from another reference price."""
        return replace(self, price=price)

    @classmethod
    def large_cap(cls, price: Decimal = Decimal("182.53")) -> SymbolProfile:
        """A liquid large-cap stock like IBM in October 2013 (the calibration default)."""
        return cls(price=price)

    @classmethod
    def mega_etf(cls, price: Decimal = Decimal("168.09")) -> SymbolProfile:
        """A mega ETF like SPY: one-tick spread all day, thousands of shares at the touch."""
        return cls(
            price=price,
            volatility_bps=2.7,
            spread_ticks=1.0,
            spread_dispersion=0.0,
            touch_size=5700,
            touch_size_dispersion=1.0,
            trade_rate=4.0,
            trade_size_median=300.0,
            replenish_half_life=3.0,
        )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def derive_profile(symbol: str, seed: int) -> SymbolProfile:
    """The profile of symbol under seed: stable, and within the calibrated ranges.

    Known mega ETFs and about 12% of other symbols are ETF-like; the rest are liquid large
    caps priced between $15 and $400 whose typical spread grows with the price (1 tick at
    $20, 3 at $180), trading 0.6 to 1.6 times a second and moving 2.5 to 6 bp per minute.
    """
    base = stream_base(stable_key("profile", seed, symbol), 1)

    def uniform(index: int, low: float, high: float) -> float:
        return low + (high - low) * unit(draw(base, index))

    def log_uniform(index: int, low: float, high: float) -> float:
        return math.exp(uniform(index, math.log(low), math.log(high)))

    etf = symbol in MEGA_ETFS or uniform(0, 0.0, 1.0) < ETF_SHARE
    if etf:
        price = _price(log_uniform(1, 40.0, 500.0))
        return SymbolProfile(
            price=price,
            volatility_bps=uniform(2, 1.5, 3.5),
            spread_ticks=1.0,
            spread_dispersion=0.0,
            touch_size=100 * round(log_uniform(3, 20.0, 80.0)),
            touch_size_dispersion=1.0,
            trade_rate=uniform(4, 3.0, 6.0),
            trade_size_median=200.0,
            replenish_half_life=3.0,
        )
    price = _price(log_uniform(1, 15.0, 400.0))
    spread = min(3.5, max(1.0, float(price) / 60.0 * uniform(5, 0.8, 1.25)))
    return SymbolProfile(
        price=price,
        volatility_bps=uniform(2, 2.5, 6.0),
        spread_ticks=spread,
        touch_size=100 * max(1, round(log_uniform(3, 1.2, 3.5))),
        trade_rate=log_uniform(4, 0.6, 1.6),
    )


def _price(value: float) -> Decimal:
    return round_price(Decimal(repr(round(value, 4))))

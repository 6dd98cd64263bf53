"""The exogenous market of one symbol: quotes and trades as pure functions of time.

Time is in seconds since the start of the simulated market. Quotes live on a grid of
QUOTE_STEP seconds: the quote of step k holds from k * QUOTE_STEP to the next step. The
mid follows a geometric random walk; its value at any step is computed in O(log n) by a
dyadic Brownian bridge whose noise is a hash of the node, so a symbol looked at once
after ten minutes and a symbol looked at every half second see the same path. Spread and
displayed sizes are piecewise constant with random change points. Below blocks of
BLOCK_STEPS steps the bridge and the spread and sizes come from a generator seeded with
the block's hash: the bridge of a block is computed at once, its quotes in order as far
as they are looked at (most symbols are looked at for a few seconds).
Trades arrive as a Poisson process, generated per TRADE_WINDOW from a generator seeded
with the window's hash. The exponential and log-normal draws are written out here, with
the arithmetic of CPython's random module, so the generator is called directly.

Nothing here knows about our own orders: their impact is an overlay kept by the book.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from enum import IntEnum
from statistics import NormalDist
from typing import NamedTuple

from trimtab.adapters.sim.profile import SymbolProfile
from trimtab.adapters.sim.randomness import (
    GOLDEN,
    INV_2_53,
    MASK64,
    MIX1,
    MIX2,
    TWO_PI,
    draw,
    gauss,
    stream_base,
)

_NV_MAGICCONST = 4 * math.exp(-0.5) / math.sqrt(2.0)

QUOTE_STEP = 0.5
"""Seconds between two possible quote changes (the calibrated book changes ~2 times a second)."""

TRADE_WINDOW = 10.0
"""Trades are generated per window of this many seconds."""

SPREAD_CHANGE = 0.10
"""Probability that the spread is redrawn at a step."""

SIZE_CHANGE = 0.30
"""Probability that the displayed size of one side is redrawn at a step."""

_ROOT_LEVELS = 17
_ROOT_STEPS = 1 << _ROOT_LEVELS  # 65,536 steps = 9.1 hours per root interval
_BLOCK_BITS = 6
_BLOCK_STEPS = 1 << _BLOCK_BITS  # 32 seconds of quotes
_TABLE_BITS = 6
_TABLE_SIZE = 1 << _TABLE_BITS

_S_ROOT, _S_BRIDGE, _S_BLOCK, _S_TRADES = range(1, 5)


class TradeKind(IntEnum):
    """Where a trade printed."""

    AT_ASK = 0
    """A buyer took the ask: it fills resting sells."""
    AT_BID = 1
    """A seller hit the bid: it fills resting buys."""
    INSIDE = 2
    """Hidden or midpoint liquidity inside the spread: it fills no displayed order."""


class ExoTrade(NamedTuple):
    """One exogenous trade: time, kind, size in shares, position inside the spread in [0, 1)."""

    time: float
    kind: TradeKind
    size: int
    position: float


class BookTop(NamedTuple):
    """Top of book in ticks and shares."""

    bid: int
    ask: int
    bid_size: int
    ask_size: int


_NORMAL_QUANTILES = [NormalDist().inv_cdf((i + 0.5) / _TABLE_SIZE) for i in range(_TABLE_SIZE)]
_NORMAL_SIZE = 1 << 14
_NORMAL_TABLE = [NormalDist().inv_cdf((i + 0.5) / _NORMAL_SIZE) for i in range(_NORMAL_SIZE)]
"""Standard normal quantiles: a uniform number picks one (a fast normal draw, tails at 4 sd)."""


_BRIDGE_PLAN = [
    (level, [(lo, lo + (1 << (level - 1)), lo + (1 << level)) for lo in range(0, _BLOCK_STEPS, 1 << level)])
    for level in range(_BLOCK_BITS, 0, -1)
]
"""The block's bridge midpoints, level by level: (level, [(lo, mid, hi), ...])."""

_HALF_SQRT_STEPS = [math.sqrt(float(1 << e)) / 2.0 for e in range(_ROOT_LEVELS + 2)]
_BLOCK_CHUNK = 4
"""Quotes of a block are computed as they are looked at: at least this many steps at a
time, and as many as are already there (a block looked at step by step doubles)."""

_EXP_TABLES: dict[float, list[float]] = {}
_SPREAD_TABLES: dict[tuple[float, float], list[int]] = {}
_SIZE_TABLES: dict[tuple[int, float, int], list[int]] = {}
_TABLE_CACHE_LIMIT = 4096


def _exp_table(dispersion: float) -> list[float]:
    table = _EXP_TABLES.get(dispersion)
    if table is None:
        table = [math.exp(dispersion * z) for z in _NORMAL_QUANTILES]
        if len(_EXP_TABLES) < _TABLE_CACHE_LIMIT:
            _EXP_TABLES[dispersion] = table
    return table


def _quantiles(median: float, dispersion: float) -> list[float]:
    """The log-normal quantiles of a value, one per table slot."""
    return [median * e for e in _exp_table(dispersion)]


def _spread_table(profile: SymbolProfile) -> list[int]:
    key = (profile.spread_ticks, profile.spread_dispersion)
    table = _SPREAD_TABLES.get(key)
    if table is None:
        table = [max(1, round(v)) for v in _quantiles(profile.spread_ticks, profile.spread_dispersion)]
        if len(_SPREAD_TABLES) >= _TABLE_CACHE_LIMIT:
            _SPREAD_TABLES.clear()
        _SPREAD_TABLES[key] = table
    return table


def _size_table(profile: SymbolProfile) -> list[int]:
    lot = profile.lot_size
    key = (profile.touch_size, profile.touch_size_dispersion, lot)
    table = _SIZE_TABLES.get(key)
    if table is None:
        sizes = _quantiles(float(profile.touch_size), profile.touch_size_dispersion)
        table = [lot * max(1, round(v / lot)) for v in sizes]
        if len(_SIZE_TABLES) >= _TABLE_CACHE_LIMIT:
            _SIZE_TABLES.clear()
        _SIZE_TABLES[key] = table
    return table


class _Block:
    """One block: its log returns, and its quotes so far with what continues them."""

    __slots__ = ("ask_size", "bid_size", "quotes", "spread", "uniform", "xs")

    def __init__(self, xs: list[float], uniform: Callable[[], float] | None, spread: int, bid_size: int,
                 ask_size: int) -> None:
        self.xs = xs
        self.quotes: list[BookTop] = []
        self.uniform = uniform
        self.spread = spread
        self.bid_size = bid_size
        self.ask_size = ask_size


class MarketPath:
    """Exogenous quotes and trades of one symbol, determined by (key, profile) alone."""

    def __init__(self, key: int, profile: SymbolProfile) -> None:
        self.key = key
        self.profile = profile
        self._p0_ticks = float(profile.price / profile.tick)
        self._sigma_step = profile.volatility_bps * 1e-4 / math.sqrt(60.0 / QUOTE_STEP)
        # Standard deviation of a bridge midpoint of an interval of 2**e steps.
        sigma = self._sigma_step
        self._bridge_sd = [sigma * h for h in _HALF_SQRT_STEPS]
        self._root_sd = self._sigma_step * math.sqrt(float(_ROOT_STEPS))
        self._roots = [0.0]
        self._b_root = stream_base(key, _S_ROOT)
        self._b_bridge = stream_base(key, _S_BRIDGE)
        self._b_block = stream_base(key, _S_BLOCK)
        self._b_trades = stream_base(key, _S_TRADES)
        self._stack: list[tuple[int, int, float, float]] = []
        self._spread_table = _spread_table(profile)
        self._size_table = _size_table(profile)
        self._blocks: dict[int, _Block] = {}
        self._last_block = -1
        self._last = _Block([], None, 0, 0, 0)
        self._trade_cache: dict[int, list[ExoTrade]] = {}
        self._trade_rng: random.Random | None = None  # reseeded for each window
        self._trade_mu = math.log(profile.trade_size_median)

    # -- the mid ---------------------------------------------------------------------

    def _root(self, r: int) -> float:
        roots = self._roots
        while len(roots) <= r:
            i = len(roots) - 1
            roots.append(roots[i] + self._root_sd * gauss(draw(self._b_root, i)))
        return roots[r]

    def _node(self, step: int) -> float:
        """The log return at a block boundary, by descent of the dyadic bridge (hashed nodes)."""
        r, j = divmod(step, _ROOT_STEPS)
        if j == 0:
            return self._root(r)
        stack = self._stack
        while stack and not (stack[-1][0] <= step <= stack[-1][1]):
            stack.pop()
        if stack:
            lo, hi, xlo, xhi = stack[-1]
        else:
            lo = r * _ROOT_STEPS
            hi = lo + _ROOT_STEPS
            xlo = self._root(r)
            xhi = self._root(r + 1)
            stack.append((lo, hi, xlo, xhi))
        bridge = self._b_bridge + GOLDEN
        sds = self._bridge_sd
        sqrt, log, cos = math.sqrt, math.log, math.cos
        while True:
            if step == lo:
                return xlo
            if step == hi:
                return xhi
            mid = (lo + hi) >> 1
            # gauss(mix64((bridge + mid) & MASK64)), written out.
            z = (bridge + mid) & MASK64
            z = ((z ^ (z >> 30)) * MIX1) & MASK64
            z = ((z ^ (z >> 27)) * MIX2) & MASK64
            z ^= z >> 31
            u1 = ((z >> 11) + 0.5) * INV_2_53
            u2 = ((z & 0x7FF) + 0.5) / 2048.0
            normal = sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2)
            xm = 0.5 * (xlo + xhi) + sds[(hi - lo).bit_length() - 1] * normal
            if step < mid:
                hi, xhi = mid, xm
            else:
                lo, xlo = mid, xm
            stack.append((lo, hi, xlo, xhi))

    def _block(self, block: int) -> _Block:
        """Log returns of one block of BLOCK_STEPS steps, ready to give its quotes.

        The block's two ends come from the hashed dyadic bridge; inside, the bridge's
        midpoints, the spread and the sizes come from a generator seeded with the block's
        hash. Spread and sizes change at random steps and are drawn afresh at each block.
        """
        cached = self._blocks.get(block)
        if cached is not None:
            return cached
        first = block << _BLOCK_BITS
        xs = [0.0] * (_BLOCK_STEPS + 1)
        xs[0] = self._node(first)
        xs[_BLOCK_STEPS] = self._node(first + _BLOCK_STEPS)
        uniform = random.Random(draw(self._b_block, block)).random
        normal = _NORMAL_TABLE
        sds = self._bridge_sd
        for level, triples in _BRIDGE_PLAN:
            sd = sds[level]
            for lo, mid, hi in triples:
                xs[mid] = 0.5 * (xs[lo] + xs[hi]) + sd * normal[int(uniform() * _NORMAL_SIZE)]
        spreads = self._spread_table
        sizes = self._size_table
        spread = spreads[int(uniform() * _TABLE_SIZE)]
        bid_size = sizes[int(uniform() * _TABLE_SIZE)]
        ask_size = sizes[int(uniform() * _TABLE_SIZE)]
        result = _Block(xs, uniform, spread, bid_size, ask_size)
        if len(self._blocks) >= 4:
            del self._blocks[next(iter(self._blocks))]
        self._blocks[block] = result
        return result

    def _extend(self, block: _Block, index: int) -> BookTop:
        """Compute the block's quotes up to index (and a few more) and return that one.

        The draws are those the block's generator would make for all its quotes at once:
        each step after the first may redraw the spread and each side's size.
        """
        uniform = block.uniform
        assert uniform is not None
        quotes = block.quotes
        i = len(quotes)
        stop = min(_BLOCK_STEPS, max(index + 1, i + max(_BLOCK_CHUNK, i)))
        spreads = self._spread_table
        sizes = self._size_table
        p0 = self._p0_ticks
        xs = block.xs
        exp = math.exp
        floor = math.floor
        new = tuple.__new__
        spread = block.spread
        bid_size = block.bid_size
        ask_size = block.ask_size
        while i < stop:
            if i:
                if uniform() < SPREAD_CHANGE:
                    spread = spreads[int(uniform() * _TABLE_SIZE)]
                if uniform() < SIZE_CHANGE:
                    bid_size = sizes[int(uniform() * _TABLE_SIZE)]
                if uniform() < SIZE_CHANGE:
                    ask_size = sizes[int(uniform() * _TABLE_SIZE)]
            bid = floor(p0 * exp(xs[i]) - 0.5 * spread + 0.5)
            if bid < 1:
                bid = 1
            quotes.append(new(BookTop, (bid, bid + spread, bid_size, ask_size)))
            i += 1
        block.spread = spread
        block.bid_size = bid_size
        block.ask_size = ask_size
        if i == _BLOCK_STEPS:
            block.uniform = None  # complete: let the generator go
        return quotes[index]

    def log_return(self, step: int) -> float:
        """The log return of the latent mid from the start to step (step >= 0)."""
        if step < 0:
            raise ValueError("step must be >= 0")
        return self._block(step >> _BLOCK_BITS).xs[step & (_BLOCK_STEPS - 1)]

    def next_change(self, step: int, every: int, limit: int) -> int:
        """The first step after step, on the grid of every steps, whose quote differs from
        the quote of step; step + limit if none does before."""
        current = self.quote(step)
        candidate = (step // every + 1) * every
        end = step + limit
        while candidate < end:
            if self.quote(candidate) != current:
                return candidate
            candidate += every
        return end

    def quote(self, step: int) -> BookTop:
        """The exogenous top of book of step, in ticks and shares."""
        block = step >> _BLOCK_BITS
        if block != self._last_block:
            self._last = self._block(block)
            self._last_block = block
        index = step & (_BLOCK_STEPS - 1)
        quotes = self._last.quotes
        if index < len(quotes):
            return quotes[index]
        return self._extend(self._last, index)

    # -- trades -----------------------------------------------------------------------

    def trades(self, window: int) -> list[ExoTrade]:
        """The trades of one window, in time order."""
        cached = self._trade_cache.get(window)
        if cached is not None:
            return cached
        profile = self.profile
        out: list[ExoTrade] = []
        rate = profile.trade_rate
        if rate > 0 and window >= 0:
            rng = self._trade_rng
            if rng is None:
                rng = self._trade_rng = random.Random(0)
            rng.seed(draw(self._b_trades, window))
            uniform = rng.random
            log = math.log
            exp = math.exp
            new = tuple.__new__
            t = window * TRADE_WINDOW
            end = t + TRADE_WINDOW
            at_ask = profile.at_ask
            at_bid_or_ask = profile.at_ask + profile.at_bid
            mu = self._trade_mu
            sigma = profile.trade_size_dispersion
            while True:
                t += -log(1.0 - uniform()) / rate  # random.expovariate(rate)
                if t >= end:
                    break
                u = uniform()
                if u < at_ask:
                    kind = TradeKind.AT_ASK
                elif u < at_bid_or_ask:
                    kind = TradeKind.AT_BID
                else:
                    kind = TradeKind.INSIDE
                while True:  # random.normalvariate(mu, sigma), Kinderman and Monahan
                    u1 = uniform()
                    u2 = 1.0 - uniform()
                    z = _NV_MAGICCONST * (u1 - 0.5) / u2
                    if z * z / 4.0 <= -log(u2):
                        break
                size = max(1, round(exp(mu + z * sigma)))  # random.lognormvariate
                out.append(new(ExoTrade, (t, kind, size, uniform())))
        if len(self._trade_cache) > 8:
            self._trade_cache.clear()
        self._trade_cache[window] = out
        return out

    def trades_between(self, start: float, end: float) -> list[ExoTrade]:
        """The trades with start < time <= end."""
        out: list[ExoTrade] = []
        window = max(0, int(start // TRADE_WINDOW))
        while window * TRADE_WINDOW <= end:
            trades = self.trades(window)
            i = bisect.bisect_right(trades, start, key=lambda tr: tr.time)
            for trade in trades[i:]:
                if trade.time > end:
                    return out
                out.append(trade)
            window += 1
        return out


def step_of(time: float) -> int:
    """The quote step that holds at time."""
    return int(time // QUOTE_STEP) if time > 0 else 0

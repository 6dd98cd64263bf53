"""The exogenous market of one symbol: quotes and trades as pure functions of time.

Time is in seconds since the start of the simulated market. Quotes live on a grid of
QUOTE_STEP seconds: the quote of step k holds from k * QUOTE_STEP to the next step. The
mid follows a geometric random walk; its value at any step is computed in O(log n) by a
dyadic Brownian bridge whose noise is a hash of the node, so a symbol looked at once
after ten minutes and a symbol looked at every half second see the same path. Spread and
displayed sizes are piecewise constant with random change points. Below blocks of
BLOCK_STEPS steps the bridge and the spread and sizes come from a generator seeded with
the block's hash, so a block is computed at once.
Trades arrive as a Poisson process, generated per TRADE_WINDOW from a generator seeded
with the window's hash.

Nothing here knows about our own orders: their impact is an overlay kept by the book.
"""

from __future__ import annotations

import bisect
import math
import random
from enum import IntEnum
from statistics import NormalDist
from typing import NamedTuple

from trimtab.adapters.sim.profile import SymbolProfile
from trimtab.adapters.sim.randomness import MASK64, draw, gauss, mix64, stream_base

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


def _quantiles(median: float, dispersion: float) -> list[float]:
    """The log-normal quantiles of a value, one per table slot."""
    return [median * math.exp(dispersion * z) for z in _NORMAL_QUANTILES]


class MarketPath:
    """Exogenous quotes and trades of one symbol, determined by (key, profile) alone."""

    def __init__(self, key: int, profile: SymbolProfile) -> None:
        self.key = key
        self.profile = profile
        self._p0_ticks = float(profile.price / profile.tick)
        self._sigma_step = profile.volatility_bps * 1e-4 / math.sqrt(60.0 / QUOTE_STEP)
        # Standard deviation of a bridge midpoint of an interval of 2**e steps.
        self._bridge_sd = [self._sigma_step * math.sqrt(float(1 << e)) / 2.0 for e in range(_ROOT_LEVELS + 2)]
        self._root_sd = self._sigma_step * math.sqrt(float(_ROOT_STEPS))
        self._roots = [0.0]
        self._b_root = stream_base(key, _S_ROOT)
        self._b_bridge = stream_base(key, _S_BRIDGE)
        self._b_block = stream_base(key, _S_BLOCK)
        self._b_trades = stream_base(key, _S_TRADES)
        self._stack: list[tuple[int, int, float, float]] = []
        spreads = _quantiles(profile.spread_ticks, profile.spread_dispersion)
        self._spread_table = [max(1, round(v)) for v in spreads]
        lot = profile.lot_size
        sizes = _quantiles(float(profile.touch_size), profile.touch_size_dispersion)
        self._size_table = [lot * max(1, round(v / lot)) for v in sizes]
        self._blocks: dict[int, tuple[list[float], list[BookTop]]] = {}
        self._last_block = -1
        self._last_quotes: list[BookTop] = []
        self._trade_cache: dict[int, list[ExoTrade]] = {}
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
        bridge = self._b_bridge
        sds = self._bridge_sd
        while True:
            if step == lo:
                return xlo
            if step == hi:
                return xhi
            mid = (lo + hi) >> 1
            xm = 0.5 * (xlo + xhi) + sds[(hi - lo).bit_length() - 1] * gauss(mix64((bridge + mid) & MASK64))
            if step < mid:
                hi, xhi = mid, xm
            else:
                lo, xlo = mid, xm
            stack.append((lo, hi, xlo, xhi))

    def _block(self, block: int) -> tuple[list[float], list[BookTop]]:
        """Log returns and quotes of one block of BLOCK_STEPS steps.

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
        rng = random.Random(draw(self._b_block, block))
        uniform = rng.random
        normal = _NORMAL_TABLE
        sds = self._bridge_sd
        size = _BLOCK_STEPS
        level = _BLOCK_BITS
        while size > 1:
            half = size >> 1
            sd = sds[level]
            for lo in range(0, _BLOCK_STEPS, size):
                xs[lo + half] = 0.5 * (xs[lo] + xs[lo + size]) + sd * normal[int(uniform() * _NORMAL_SIZE)]
            size = half
            level -= 1
        spreads = self._spread_table
        sizes = self._size_table
        p0 = self._p0_ticks
        exp = math.exp
        floor = math.floor
        new = tuple.__new__
        spread = spreads[int(uniform() * _TABLE_SIZE)]
        bid_size = sizes[int(uniform() * _TABLE_SIZE)]
        ask_size = sizes[int(uniform() * _TABLE_SIZE)]
        quotes: list[BookTop] = []
        for i in range(_BLOCK_STEPS):
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
        if len(self._blocks) >= 4:
            del self._blocks[next(iter(self._blocks))]
        result = (xs, quotes)
        self._blocks[block] = result
        return result

    def log_return(self, step: int) -> float:
        """The log return of the latent mid from the start to step (step >= 0)."""
        if step < 0:
            raise ValueError("step must be >= 0")
        return self._block(step >> _BLOCK_BITS)[0][step & (_BLOCK_STEPS - 1)]

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
            self._last_quotes = self._block(block)[1]
            self._last_block = block
        return self._last_quotes[step & (_BLOCK_STEPS - 1)]

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
            rng = random.Random(draw(self._b_trades, window))
            t = window * TRADE_WINDOW
            end = t + TRADE_WINDOW
            at_ask = profile.at_ask
            at_bid_or_ask = profile.at_ask + profile.at_bid
            while True:
                t += rng.expovariate(rate)
                if t >= end:
                    break
                u = rng.random()
                if u < at_ask:
                    kind = TradeKind.AT_ASK
                elif u < at_bid_or_ask:
                    kind = TradeKind.AT_BID
                else:
                    kind = TradeKind.INSIDE
                size = max(1, round(rng.lognormvariate(self._trade_mu, profile.trade_size_dispersion)))
                out.append(ExoTrade(t, kind, size, rng.random()))
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

"""The book of a replayed symbol: recorded quotes and trades plus our own orders.

The recorded top of book is the exogenous touch (prices and sizes in shares). What our
orders do on top of it follows the synthetic book (book.py) where the data allows:

- Taking liquidity: a market order (or the marketable part of a limit) takes the size
  displayed at the recorded touch, then walks deeper levels one tick apart, each as deep
  as the symbol's median displayed size (the data has no depth). What it takes is the
  same depletion overlay as on the synthetic market, coming back with the profile's
  half-life (10 s; 3 s for one-tick-spread symbols).
- Resting orders (the queue model) join the queue behind the size displayed at their
  price (behind one median level when deeper than the touch; nothing ahead inside the
  spread). Only recorded trades fill them: a trade initiated by a seller at a price at or
  below a resting buy's limit reaches it, the mirror for sells. At the limit it first
  consumes the queue ahead; through the limit (a print below a resting buy) the queue at
  our price is gone, so it fills us directly. Trades inside the spread therefore never
  fill an order resting at the touch; one inside the spread reaches an order resting at a
  better price than the print. A recorded quote that comes to or through a resting order
  fills nothing by itself (per-venue data is often locked or crossed for an instant):
  the prints that follow do. Fills of resting orders leave the recorded quote as it is.
  As on the synthetic market, the queue ahead only shrinks through trades at the price,
  and it is gone when the recorded best price on our side moves behind ours.
- The touch model fills a resting order completely at the first recorded print at or
  through its price, or when the recorded opposite quote reaches it.

The book steps through every recorded top-of-book change and every relevant trade while
it has resting orders; idle, it jumps straight to the state of the time asked.
"""

from __future__ import annotations

import math
from decimal import Decimal

from trimtab.adapters.sim.book import INFINITY, FillModel, FillSink, SymbolBook, whole_shares
from trimtab.adapters.sim.path import QUOTE_STEP, BookTop
from trimtab.adapters.sim.replay import ReplayPath
from trimtab.domain.money import ZERO

_SCAN_CHANGES = 64


class ReplayBook(SymbolBook):
    """One replayed symbol's market: recorded quotes and trades, our orders on top."""

    def __init__(self, path: ReplayPath, fill_model: FillModel, on_fill: FillSink) -> None:
        super().__init__(path.profile, fill_model, on_fill)
        self.path = path
        self._units = path.tick_units
        self._next_t = 0.0  # when the quote after step k starts

    # -- time ----------------------------------------------------------------------------------

    def _set_step(self, step: int) -> None:
        self.k = step
        self._next_t = self.path.step_time(step + 1)
        if self.forced is None:
            self._exo = self.path.quote(step)

    def _follow(self) -> None:
        self._set_step(self.path.step_at(self.t))

    def _jump(self, t: float) -> None:
        self.t = t
        if self.forced is None and (t >= self._next_t or self.k < 0):
            self._set_step(self.path.step_at(t))
        self._cursor = None

    def jump_to_step(self, t: float) -> BookTop:
        if t > self.t:
            self._jump(t)
        return self._exo

    def advance(self, t: float) -> None:
        if t <= self.t:
            return
        if not (self.buys or self.sells) or self.held:
            self._jump(t)
            return
        path = self.path
        while True:
            next_step = self._next_t if self.forced is None else INFINITY
            index = self._peek_trade()
            trade_time = path.trade_time(index) if index >= 0 else INFINITY
            # A trade goes before a quote change of the same time: the change is its effect.
            when = next_step if next_step < trade_time else trade_time
            if when > t:
                break
            self.t = when
            if next_step < trade_time:
                self._set_step(self.k + 1)
                self._reset_queues()
            else:
                self._pop_trade()
                self._on_replayed_trade(index)
            self._cross()
            if not self._active():
                self._jump(t)
                return
        self.t = t
        if self.forced is None and t >= self._next_t:
            self._set_step(path.step_at(t))
        self._cross()

    def next_wakeup(self, want_quotes: bool, quote_every: int = 1) -> float | None:
        active = self._active()
        wake = INFINITY
        if active:
            index = self._peek_trade()
            if index >= 0:
                wake = self.path.trade_time(index)
            if self.fill_model is FillModel.TOUCH and self.forced is None:
                wake = min(wake, self._next_touch(wake))
        if want_quotes and self.forced is None:
            wake = min(wake, self.next_quote_wake(quote_every))
        return wake if wake < INFINITY else None

    def next_quote_wake(self, quote_every: int) -> float:
        interval = quote_every * QUOTE_STEP
        after = max(self.t, 0.0)
        if self._dep_bid or self._dep_ask:
            # Our impact fades: every grid time shows a new quote.
            return (math.floor(after / interval) + 1) * interval
        path = self.path
        current = self._exo
        step = self.k
        grid = after
        for _ in range(_SCAN_CHANGES):
            change = path.step_time(step + 1)
            if change == INFINITY:
                return INFINITY
            grid = max(math.ceil(change / interval - 1e-9) * interval, after + interval * 1e-6)
            step = path.step_at(grid)
            if path.quote(step) != current:
                return grid
        return grid

    def _next_touch(self, limit: float) -> float:
        """Touch model: the first recorded quote change before limit that reaches a resting
        order (a later one is found when the book wakes up at limit)."""
        best_buy = self.buys[0].limit_ticks if self.buys else 0
        best_sell = self.sells[0].limit_ticks if self.sells else 0
        path = self.path
        step = self.k
        for _ in range(_SCAN_CHANGES):
            step += 1
            when = path.step_time(step)
            if when >= limit:
                return INFINITY
            quote = path.quote(step)
            if best_buy and 0 < quote.ask <= best_buy:
                return when
            if best_sell and 0 < best_sell <= quote.bid:
                return when
        return path.step_time(step)

    # -- trades --------------------------------------------------------------------------------

    def _peek_trade(self) -> int:
        """The index of the next recorded trade that can reach a resting order, or -1."""
        if not self.random_trades:
            return -1
        path = self.path
        index = path.first_trade_after(self.t) if self._cursor is None else self._cursor[1]
        n = path.n_trades
        if self.fill_model is FillModel.TOUCH:
            if index < n:
                self._cursor = (0, index)
                return index
            self._cursor = (0, n)
            return -1
        units = self._units
        buy_limit = self.buys[0].limit_ticks * units if self.buys else -1
        sell_limit = self.sells[0].limit_ticks * units if self.sells else -1
        seller = path.trade_seller
        price = path.trade_price
        while index < n:
            if seller[index]:
                if price[index] <= buy_limit:
                    break
            elif 0 <= sell_limit <= price[index]:
                break
            index += 1
        self._cursor = (0, index)
        return index if index < n else -1

    def _pop_trade(self) -> None:
        assert self._cursor is not None
        self._cursor = (0, self._cursor[1] + 1)

    def _on_replayed_trade(self, index: int) -> None:
        path = self.path
        price = path.trade_price[index]
        size = path.trade_size[index]
        if self.fill_model is FillModel.TOUCH:
            self._touch_print(price)
        elif path.trade_seller[index]:
            self._print_to_buys(size, price)
        else:
            self._print_to_sells(size, price)

    def _print_to_buys(self, size: int, price: int) -> None:
        """A seller's print of size at price (price units) reaches buys at or above it."""
        left = size
        units = self._units
        for order in list(self.buys):
            limit = order.limit_ticks * units
            if limit < price:
                break
            if limit > price:
                order.ahead = 0  # printed through our price: the queue there is gone
            taken = min(left, order.ahead)
            order.ahead -= taken
            left -= taken
            if left <= 0:
                break
            qty = min(Decimal(left), order.remaining)
            self._fill(order, qty, order.limit_ticks)
            left -= whole_shares(qty)
            if order.remaining > ZERO or left <= 0:
                break

    def _print_to_sells(self, size: int, price: int) -> None:
        """A buyer's print of size at price reaches sells at or below it."""
        left = size
        units = self._units
        for order in list(self.sells):
            limit = order.limit_ticks * units
            if limit > price:
                break
            if limit < price:
                order.ahead = 0
            taken = min(left, order.ahead)
            order.ahead -= taken
            left -= taken
            if left <= 0:
                break
            qty = min(Decimal(left), order.remaining)
            self._fill(order, qty, order.limit_ticks)
            left -= whole_shares(qty)
            if order.remaining > ZERO or left <= 0:
                break

    def _touch_print(self, price: int) -> None:
        units = self._units
        for order in list(self.buys):
            if order.limit_ticks * units >= price:
                self._fill(order, order.remaining, order.limit_ticks)
        for order in list(self.sells):
            if order.limit_ticks * units <= price:
                self._fill(order, order.remaining, order.limit_ticks)

    def _cross(self) -> None:
        # Queue model: the recorded quote alone fills nothing (see the module docstring);
        # a forced quote (a test hook) crosses as on the synthetic market.
        if self.fill_model is FillModel.QUEUE and self.forced is None:
            return
        super()._cross()

"""The book of one symbol: the exogenous market plus our own orders and their impact.

The exogenous top of book comes from the symbol's market: a synthetic MarketPath (PathBook)
or recorded quotes and trades (ReplayBook, in replay_book.py). Behind the touch the book
has further levels one tick apart, each profile.level_size deep. Our own orders act on it:

- A market order takes the far touch and walks deeper levels; what it takes is "depleted"
  liquidity that comes back with the profile's replenish half-life, so a big order pays
  impact and so does a second order soon after.
- A resting limit order at the touch joins the queue behind the size displayed there
  (``ahead``); inside the spread it is the new best price with nothing ahead. It fills
  only when an opposing trade reaches it (trades at the bid consume the bid queue ahead of
  a resting buy first) or when the quote comes to or through its price (the ask falls to a
  resting buy's limit: the sellers there trade with the queue ahead of it, then with it,
  at its limit; filled because the market came down is adverse selection). A trade that
  eats the whole queue including our order depletes the level: the price steps through.
  Liquidity taken from a side is counted in round lots and comes back with the profile's
  half-life.
- Trades inside the spread (hidden liquidity) never fill a displayed order.

The shares ahead of a resting order only decrease through trades at its price (no
cancellations ahead of us: the cautious assumption). If the exogenous best price on our
side moves behind our price, the queue at our price is gone and ours is at its front.

The "touch" fill model is the optimistic simulator, kept for comparison: a resting order
fills completely as soon as any trade prints at or through its price or the opposite
quote touches it.

Between events a symbol with no resting order is not simulated at all: advance() jumps
straight to the quote of the requested time. With resting orders, advance() replays the
exogenous quote steps and the relevant trades in time order.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from trimtab.adapters.sim.path import (
    QUOTE_STEP,
    TRADE_WINDOW,
    BookTop,
    ExoTrade,
    MarketPath,
    TradeKind,
    step_of,
)
from trimtab.adapters.sim.profile import SymbolProfile
from trimtab.domain.money import ZERO
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

INFINITY = math.inf
_TRADE_TIME = operator.itemgetter(0)
_WAKE_SCAN_STEPS = 64
_IDLE_SCAN_STEPS = 128


class FillModel(StrEnum):
    """How resting limit orders fill."""

    QUEUE = "queue"
    """Honest: queue position, fills only by trades reaching the order or the price moving through."""
    TOUCH = "touch"
    """Optimistic: fills completely when any trade prints at or through the price."""


@dataclass(slots=True, eq=False)
class SimOrder:
    """The simulated broker's mutable record of one order."""

    broker_order_id: BrokerOrderId
    client_order_id: ClientOrderId
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    qty: Decimal
    limit_price: Decimal | None
    limit_ticks: int
    seq: int
    created_at: datetime
    updated_at: datetime
    status: OrderStatus = OrderStatus.PENDING_NEW
    filled_qty: Decimal = ZERO
    filled_notional: Decimal = ZERO
    reserve_price: Decimal = ZERO
    reserved: Decimal = ZERO
    ahead: int = 0
    reject_reason: str | None = None
    replaced_by: BrokerOrderId | None = None
    replaces: BrokerOrderId | None = None
    cancel_requested: bool = False
    replacement: SimOrder | None = field(default=None, repr=False)
    qty_from_original: bool = False

    @property
    def is_buy(self) -> bool:
        return self.side is Side.BUY

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty


FillSink = Callable[[SimOrder, Decimal, int], None]
"""Called for each execution of one of our orders: (order, quantity, price in ticks)."""


_DECIMALS: dict[int, Decimal] = {}


def decimal_of(value: int) -> Decimal:
    """Decimal(value), memoized: displayed sizes repeat a few table values."""
    result = _DECIMALS.get(value)
    if result is None:
        result = Decimal(value)
        if len(_DECIMALS) < 65536:
            _DECIMALS[value] = result
    return result


def whole_shares(qty: Decimal) -> int:
    """Whole shares a fractional quantity occupies in the book (rounded up)."""
    return int(qty.to_integral_value(rounding=ROUND_CEILING))


def _own_at(orders: list[SimOrder], price: int) -> Decimal:
    """What is left of our orders at price (orders sorted best price first)."""
    if len(orders) == 1:
        return ZERO + orders[0].remaining
    return sum((o.remaining for o in orders if o.limit_ticks == price), ZERO)


class SymbolBook:
    """One symbol's market: exogenous top of book, impact overlay, our resting orders, matching.

    Subclasses supply the exogenous market and its time: PathBook follows a synthetic
    MarketPath, ReplayBook recorded quotes and trades. They set t (the book's market time),
    k (the index of the exogenous quote holding at t) and the exogenous quote itself.
    """

    def __init__(self, profile: SymbolProfile, fill_model: FillModel, on_fill: FillSink) -> None:
        self.profile = profile
        self.fill_model = fill_model
        self._on_fill = on_fill
        self._depth = profile.level_size
        self._half_life = profile.replenish_half_life
        self._lot = min(profile.lot_size, self._depth)
        # Nothing is computed until the first advance() (symbols are created in bulk).
        self.t = -1.0
        self.k = -1
        self._exo = BookTop(0, 0, 0, 0)
        self.forced: BookTop | None = None
        self.random_trades = True
        self.held = False  # no matching: a test hook's hold or the market closed
        self._hook_hold = False
        self._halted = False
        self.waiting_market: list[SimOrder] = []
        self.buys: list[SimOrder] = []  # best (highest) price first, then time
        self.sells: list[SimOrder] = []  # best (lowest) price first, then time
        self._dep_bid = 0.0
        self._dep_ask = 0.0
        self._dep_t = 0.0
        self._cursor: tuple[int, int] | None = None  # where the next exogenous trade is

    # -- state -----------------------------------------------------------------------------

    @property
    def has_resting(self) -> bool:
        return bool(self.buys or self.sells)

    @property
    def exogenous(self) -> BookTop:
        """The exogenous (or forced) top of book now, without our impact or our orders."""
        return self._exo

    @property
    def idle(self) -> bool:
        """Nothing of ours on the book, no impact left, following the path: only quotes move."""
        return not (self.buys or self.sells or self.waiting_market or self.forced is not None
                    or self._dep_bid or self._dep_ask)

    def _active(self) -> bool:
        return bool(self.buys or self.sells) and not self.held

    def _settle_depletion(self) -> None:
        if self.t > self._dep_t:
            if self._dep_bid or self._dep_ask:
                factor = 0.5 ** ((self.t - self._dep_t) / self._half_life)
                self._dep_bid = self._dep_bid * factor if self._dep_bid * factor >= 1.0 else 0.0
                self._dep_ask = self._dep_ask * factor if self._dep_ask * factor >= 1.0 else 0.0
            self._dep_t = self.t

    def _taken(self, depletion: float) -> int:
        """Shares missing from one side: depletion counted in whole lots (a level comes
        back lot by lot, not share by share)."""
        if depletion <= 0.0:
            return 0
        lot = self._lot
        return -(-math.ceil(depletion) // lot) * lot

    def _bid_top(self) -> tuple[int, int]:
        """Best exogenous bid after our impact: (price ticks, size); (0, 0) if none."""
        price, size = self._exo.bid, self._exo.bid_size
        if price <= 0:
            return 0, 0
        self._settle_depletion()
        taken = self._taken(self._dep_bid)
        if taken < size:
            return price, size - taken
        rest = taken - size
        levels = rest // self._depth
        price -= 1 + levels
        if price <= 0:
            return 0, 0
        return price, self._depth - (rest - levels * self._depth)

    def _ask_top(self) -> tuple[int, int]:
        """Best exogenous ask after our impact: (price ticks, size); (0, 0) if none."""
        price, size = self._exo.ask, self._exo.ask_size
        if price <= 0:
            return 0, 0
        self._settle_depletion()
        taken = self._taken(self._dep_ask)
        if taken < size:
            return price, size - taken
        rest = taken - size
        levels = rest // self._depth
        return price + 1 + levels, self._depth - (rest - levels * self._depth)

    def _deplete(self, buy_side: bool, shares: float) -> None:
        self._settle_depletion()
        if buy_side:
            self._dep_bid += shares
        else:
            self._dep_ask += shares

    def top(self) -> tuple[int, Decimal, int, Decimal]:
        """The displayed top of book, our orders included: (bid, bid size, ask, ask size)."""
        if not (self._dep_bid or self._dep_ask or self.buys or self.sells):
            exo = self._exo
            if exo.bid > 0 and exo.ask > 0:
                return exo.bid, decimal_of(exo.bid_size), exo.ask, decimal_of(exo.ask_size)
        bid, bid_size = self._bid_top()
        ask, ask_size = self._ask_top()
        bid_qty = decimal_of(bid_size)
        ask_qty = decimal_of(ask_size)
        buys = self.buys
        if buys:
            best = buys[0].limit_ticks
            own = _own_at(buys, best)
            if best > bid:
                bid, bid_qty = best, own
            elif best == bid:
                bid_qty += own
        sells = self.sells
        if sells:
            best = sells[0].limit_ticks
            own = _own_at(sells, best)
            if ask <= 0 or best < ask:
                ask, ask_qty = best, own
            elif best == ask:
                ask_qty += own
        return bid, bid_qty, ask, ask_qty

    def reference_ask(self) -> int:
        """The ask a market buy would start at (0 if there is none)."""
        return self._ask_top()[0]

    def reference_bid(self) -> int:
        """The bid a market sell would start at (0 if there is none)."""
        return self._bid_top()[0]


    # -- time (the exogenous market's side, in subclasses) ------------------------------------

    def advance(self, t: float) -> None:
        """Bring the book to market time t, filling our orders on the way."""
        raise NotImplementedError

    def jump_to_step(self, t: float) -> BookTop:
        """advance() for an idle book (see idle): move to t and return the quote there."""
        raise NotImplementedError

    def next_wakeup(self, want_quotes: bool, quote_every: int = 1) -> float | None:
        """The next market time at which something may happen that someone must see.

        want_quotes: someone streams this symbol's quotes; they are looked at only every
        quote_every quote steps (a conflated feed), unless something else wakes the symbol.
        """
        raise NotImplementedError

    def next_quote_wake(self, quote_every: int) -> float:
        """For an idle streamed book: the next time on the conflated grid of quote_every
        quote steps at which the quote differs from the current one (or a time to look
        again); INFINITY if it never changes again."""
        raise NotImplementedError

    def _follow(self) -> None:
        """Take the exogenous quote of the current time from the market (after force())."""
        raise NotImplementedError

    def _reset_queues(self) -> None:
        """A queue ahead of us is gone when the exogenous best price on our side is behind ours."""
        exo = self._exo
        # Without impact the best prices are the exogenous ones (nothing to settle either).
        plain = not (self._dep_bid or self._dep_ask)
        if self.buys:
            bid = exo.bid if plain and exo.bid_size > 0 else self._bid_top()[0]
            for order in self.buys:
                if order.limit_ticks <= bid:
                    break
                order.ahead = 0
        if self.sells:
            ask = exo.ask if plain and exo.ask_size > 0 else self._ask_top()[0]
            for order in self.sells:
                if ask > 0 and order.limit_ticks >= ask:
                    break
                order.ahead = 0

    # -- trades ----------------------------------------------------------------------------

    def trade(self, kind: TradeKind, size: int, position: float = 0.5) -> None:
        """An exogenous trade now: fill what it reaches of our resting orders."""
        if self.held:
            return
        if self.fill_model is FillModel.TOUCH:
            self._touch_trade(kind, position)
        elif kind is TradeKind.AT_BID:
            self._hit_bids(size)
        elif kind is TradeKind.AT_ASK:
            self._lift_asks(size)

    def _hit_bids(self, size: int) -> None:
        """A sell of size shares hits the bid: the queue ahead of our buys first."""
        left = size
        for order in list(self.buys):
            if left <= 0:
                break
            price = order.limit_ticks
            bid, bid_size = self._bid_top()
            above = 0 if price >= bid else bid_size + self._depth * (bid - price - 1)
            if left <= above:
                break
            reach = left - above
            if bid < price:
                order.ahead = 0
            taken = min(reach, order.ahead)
            order.ahead -= taken
            reach -= taken
            if reach <= 0:
                break
            qty = min(Decimal(reach), order.remaining)
            self._fill(order, qty, price)
            left = reach - whole_shares(qty)
            if order.remaining <= ZERO:
                bid, bid_size = self._bid_top()
                if price <= bid:
                    # The trade ate the whole queue down to our price: the level is gone.
                    self._deplete(True, bid_size + self._depth * (bid - price))
            else:
                break

    def _lift_asks(self, size: int) -> None:
        """A buy of size shares takes the ask: the queue ahead of our sells first."""
        left = size
        for order in list(self.sells):
            if left <= 0:
                break
            price = order.limit_ticks
            ask, ask_size = self._ask_top()
            above = 0 if ask <= 0 or price <= ask else ask_size + self._depth * (price - ask - 1)
            if left <= above:
                break
            reach = left - above
            if ask <= 0 or ask > price:
                order.ahead = 0
            taken = min(reach, order.ahead)
            order.ahead -= taken
            reach -= taken
            if reach <= 0:
                break
            qty = min(Decimal(reach), order.remaining)
            self._fill(order, qty, price)
            left = reach - whole_shares(qty)
            if order.remaining <= ZERO:
                ask, ask_size = self._ask_top()
                if 0 < ask <= price:
                    self._deplete(False, ask_size + self._depth * (price - ask))
            else:
                break

    def _touch_trade(self, kind: TradeKind, position: float) -> None:
        bid, _, ask, _ = self.top()
        if kind is TradeKind.AT_BID:
            price = float(bid)
        elif kind is TradeKind.AT_ASK:
            price = float(ask)
        elif ask - bid <= 1:
            price = bid + 0.5
        else:
            price = float(bid + 1 + int(position * (ask - bid - 1)))
        if price <= 0:
            return
        for order in list(self.buys):
            if order.limit_ticks >= price:
                self._fill(order, order.remaining, order.limit_ticks)
        for order in list(self.sells):
            if order.limit_ticks <= price:
                self._fill(order, order.remaining, order.limit_ticks)

    def _cross(self) -> None:
        """The opposite quote has come to (or through) resting orders' prices.

        The sellers now offering at or below a resting buy's price trade with the queue at
        that price in order: first the shares ahead of it, then the order itself, at its
        limit (adverse selection: filled because the market came down). What they take is
        gone from the ask, so the book uncrosses. The touch model fills at once.
        """
        if self.held:
            return
        # Our impact only moves the best prices away (the ask up, the bid down): an order
        # short of the exogenous quote cannot cross. Depletion is settled as _ask_top() /
        # _bid_top() would, so the decay is computed at the same times.
        exo = self._exo
        if self.buys and exo.ask > 0:
            self._settle_depletion()
            if self.buys[0].limit_ticks >= exo.ask:
                self._cross_buys()
        if self.sells and exo.bid > 0:
            self._settle_depletion()
            if self.sells[0].limit_ticks <= exo.bid:
                self._cross_sells()

    def _cross_buys(self) -> None:
        touch = self.fill_model is FillModel.TOUCH
        while self.buys:
            order = self.buys[0]
            ask, ask_size = self._ask_top()
            if ask <= 0 or order.limit_ticks < ask:
                break
            if touch:
                self._fill(order, order.remaining, order.limit_ticks)
                continue
            available = ask_size + self._depth * (order.limit_ticks - ask)
            ahead = min(available, order.ahead)
            order.ahead -= ahead
            qty = min(Decimal(available - ahead), order.remaining)
            self._fill(order, qty, order.limit_ticks)
            self._deplete(False, ahead + whole_shares(qty))

    def _cross_sells(self) -> None:
        touch = self.fill_model is FillModel.TOUCH
        while self.sells:
            order = self.sells[0]
            bid, bid_size = self._bid_top()
            if bid <= 0 or order.limit_ticks > bid:
                break
            if touch:
                self._fill(order, order.remaining, order.limit_ticks)
                continue
            available = bid_size + self._depth * (bid - order.limit_ticks)
            ahead = min(available, order.ahead)
            order.ahead -= ahead
            qty = min(Decimal(available - ahead), order.remaining)
            self._fill(order, qty, order.limit_ticks)
            self._deplete(True, ahead + whole_shares(qty))

    def _fill(self, order: SimOrder, qty: Decimal, price: int) -> None:
        if qty <= ZERO:
            return
        self._on_fill(order, qty, price)
        if order.remaining <= ZERO:
            book = self.buys if order.is_buy else self.sells
            if order in book:
                book.remove(order)
                self._cursor = None

    # -- our orders --------------------------------------------------------------------------

    def execute(self, order: SimOrder) -> bool:
        """An order arrives: take liquidity up to its limit (all of it for a market order).

        Returns False if a market order found no liquidity at all on the far side. The
        caller rests what is left of a limit order with rest() (unless it is IOC).
        """
        if self.held:
            if order.order_type is OrderType.MARKET:
                self.waiting_market.append(order)
            return True
        limit = order.limit_ticks if order.order_type is OrderType.LIMIT else 0
        taken = 0
        if order.is_buy:
            price, available = self._ask_top()
            if price <= 0:
                return order.order_type is OrderType.LIMIT
            while order.remaining > ZERO and (limit == 0 or price <= limit):
                qty = min(Decimal(available), order.remaining)
                self._on_fill(order, qty, price)
                taken += whole_shares(qty)
                price += 1
                available = self._depth
            if taken:
                self._deplete(False, taken)
        else:
            price, available = self._bid_top()
            if price <= 0:
                return order.order_type is OrderType.LIMIT
            while order.remaining > ZERO and price > 0 and (limit == 0 or price >= limit):
                qty = min(Decimal(available), order.remaining)
                self._on_fill(order, qty, price)
                taken += whole_shares(qty)
                price -= 1
                available = self._depth
            if taken:
                self._deplete(True, taken)
        return True

    def rest(self, order: SimOrder) -> None:
        """Put a limit order on the book behind the size displayed at its price."""
        price = order.limit_ticks
        if order.is_buy:
            bid, bid_size = self._bid_top()
            ahead = 0 if price > bid else bid_size if price == bid else self._depth
            ahead += sum(whole_shares(o.remaining) for o in self.buys if o.limit_ticks == price)
            order.ahead = ahead
            bisect.insort(self.buys, order, key=lambda o: (-o.limit_ticks, o.seq))
        else:
            ask, ask_size = self._ask_top()
            ahead = 0 if ask <= 0 or price < ask else ask_size if price == ask else self._depth
            ahead += sum(whole_shares(o.remaining) for o in self.sells if o.limit_ticks == price)
            order.ahead = ahead
            bisect.insort(self.sells, order, key=lambda o: (o.limit_ticks, o.seq))
        self._cursor = None
        self._cross()

    def remove(self, order: SimOrder) -> None:
        """Take an order off the book (cancel, replace, expiry)."""
        book = self.buys if order.is_buy else self.sells
        if order in book:
            book.remove(order)
        if order in self.waiting_market:
            self.waiting_market.remove(order)
        self._cursor = None

    # -- test hooks and the trading day ----------------------------------------------------

    def force(self, top: BookTop, random_trades: bool) -> None:
        """Replace the exogenous quote by top and freeze it; our impact is reset."""
        self.forced = top
        self._exo = top
        self.random_trades = random_trades
        self._dep_bid = self._dep_ask = 0.0
        self._dep_t = self.t
        self._cursor = None
        self._cross()

    def unforce(self) -> None:
        """Return to the exogenous market at the current time."""
        self.forced = None
        self.random_trades = True
        self._follow()
        self._cursor = None
        self._cross()

    def hold(self) -> None:
        """Stop filling our orders until release()."""
        self._hook_hold = self.held = True

    def release(self) -> list[SimOrder]:
        """Resume filling (unless the market is closed): match what has become marketable.
        Returns market orders that found no liquidity."""
        self._hook_hold = False
        return [] if self._halted else self._resume()

    def halt(self) -> None:
        """The market closed: stop matching until reopen()."""
        self._halted = self.held = True

    def reopen(self) -> list[SimOrder]:
        """The market opened again: as release() for a halt()."""
        self._halted = False
        return [] if self._hook_hold else self._resume()

    def _resume(self) -> list[SimOrder]:
        self.held = False
        self._cursor = None
        failed: list[SimOrder] = []
        waiting, self.waiting_market = self.waiting_market, []
        for order in waiting:
            if not self.execute(order):
                failed.append(order)
        self._cross()
        return failed



class PathBook(SymbolBook):
    """The book of a synthetic symbol: the exogenous market is a MarketPath.

    Between events a symbol with no resting order is not simulated at all: advance() jumps
    straight to the quote of the requested time. With resting orders, advance() replays the
    exogenous quote steps and the relevant trades in time order.
    """

    def __init__(self, path: MarketPath, fill_model: FillModel, on_fill: FillSink) -> None:
        super().__init__(path.profile, fill_model, on_fill)
        self.path = path
        self._peeked_at: tuple[int, int] | None = None
        self._peeked: ExoTrade | None = None

    def _follow(self) -> None:
        self._set_step(step_of(self.t))

    def _set_step(self, step: int) -> None:
        self.k = step
        if self.forced is None:
            self._exo = self.path.quote(step)

    def _jump(self, t: float) -> None:
        self.t = t
        if self.forced is None:
            step = step_of(t)
            if step != self.k:
                self._set_step(step)
        self._cursor = None

    def jump_to_step(self, t: float) -> BookTop:
        """advance() for an idle book (see idle): move to t and return the quote there."""
        if t > self.t:
            self.t = t
            step = step_of(t)
            if step != self.k:
                self.k = step
                self._exo = self.path.quote(step)
            self._cursor = None
        return self._exo

    def advance(self, t: float) -> None:
        """Bring the book to market time t, filling our orders on the way."""
        if t <= self.t:
            return
        if not (self.buys or self.sells) or self.held:
            self._jump(t)
            return
        while True:
            next_step = (self.k + 1) * QUOTE_STEP if self.forced is None else INFINITY
            trade = self._peek_trade()
            trade_time = trade.time if trade is not None else INFINITY
            when = next_step if next_step <= trade_time else trade_time
            if when > t:
                break
            self.t = when
            if next_step <= trade_time:
                self._set_step(self.k + 1)
                self._reset_queues()
            else:
                assert trade is not None
                self._pop_trade()
                self._on_trade(trade)
            self._cross()
            if not (self.buys or self.sells) or self.held:
                self._jump(t)
                return
        self.t = t
        if self.forced is None and step_of(t) != self.k:
            self._set_step(step_of(t))
        self._cross()

    def next_wakeup(self, want_quotes: bool, quote_every: int = 1) -> float | None:
        active = bool(self.buys or self.sells) and not self.held
        wake = INFINITY
        if active:
            trade = self._peek_trade()
            if trade is not None:
                wake = trade.time
        if self.forced is not None or not (want_quotes or active):
            return wake if wake < INFINITY else None
        # Scan the coming quote steps for one that matters, up to the next relevant trade.
        current = self._exo
        depleted = bool(self._dep_bid or self._dep_ask)
        best_buy = self.buys[0].limit_ticks if self.buys and active else 0
        best_sell = self.sells[0].limit_ticks if self.sells and active else 0
        quote_at = self.path.quote
        for step in range(self.k + 1, self.k + 1 + _WAKE_SCAN_STEPS):
            when = step * QUOTE_STEP
            if when >= wake:
                break
            quote = quote_at(step)
            if want_quotes and step % quote_every == 0 and (quote != current or depleted):
                return when
            if best_buy and quote.ask <= best_buy:
                return when
            if best_sell and quote.bid > 0 and quote.bid >= best_sell:
                return when
        else:
            wake = min(wake, (self.k + 1 + _WAKE_SCAN_STEPS) * QUOTE_STEP)
        return wake if wake < INFINITY else None

    def next_quote_wake(self, quote_every: int) -> float:
        return self.path.next_change(self.k, quote_every, _IDLE_SCAN_STEPS) * QUOTE_STEP

    def _peek_trade(self) -> ExoTrade | None:
        """The next trade that can fill a resting order, from the cursor: at the bid for a
        resting buy, at the ask for a resting sell (any trade in the touch model).

        The answer holds as long as the cursor does: everything that changes which trades
        are relevant (our orders coming and going, a forced quote) resets the cursor.
        """
        cursor = self._cursor
        if cursor is not None and cursor is self._peeked_at:
            return self._peeked
        if not self.random_trades or self.profile.trade_rate <= 0:
            return None
        path = self.path
        if cursor is None:
            window = int(self.t // TRADE_WINDOW)
            trades = path.trades(window)
            index = bisect.bisect_right(trades, self.t, key=_TRADE_TIME)
        else:
            window, index = cursor
            trades = path.trades(window)
        every = self.fill_model is FillModel.TOUCH
        at_bid = bool(self.buys)
        at_ask = bool(self.sells)
        found: ExoTrade | None = None
        horizon = window + 64
        while window < horizon:
            count = len(trades)
            while index < count:
                trade = trades[index]
                kind = trade[1]
                if every or (at_bid if kind is TradeKind.AT_BID else at_ask and kind is TradeKind.AT_ASK):
                    found = trade
                    break
                index += 1
            if found is not None:
                break
            window += 1
            index = 0
            trades = path.trades(window)
        self._cursor = self._peeked_at = (window, index)
        self._peeked = found
        return found

    def _pop_trade(self) -> None:
        assert self._cursor is not None
        window, index = self._cursor
        self._cursor = (window, index + 1)

    def _on_trade(self, trade: ExoTrade) -> None:
        self.trade(trade.kind, trade.size, trade.position)

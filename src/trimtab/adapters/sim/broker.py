"""SimBroker: a broker and quote feed over the simulated exchange, in virtual time.

Timing. ``latency`` is the one-way delay between the client and the broker. Every REST
call (each Broker method except add_order_listener, and get_quote) reaches the broker
after one latency, is handled there, and its answer comes back after another: a call
takes 2 x latency. Order events reach listeners one latency after they happen. A cancel
accepted by the broker reaches the matching engine one latency later: fills in between
stand (the cancel/fill race), the order then ends FILLED and a CANCEL_REJECTED event says
so. A cancel of an order that is already final when the request reaches the broker raises
OrderNotCancelableError.

Replace works as at Alpaca: replace_order() returns a new order (new id, PENDING_NEW);
the old one goes PENDING_REPLACE and, when the request reaches the matching engine, ends
REPLACED (its fills stay its own) while the new one is ACCEPTED with a fresh queue
position. The new quantity defaults to what was left of the old order at that moment. If
the old order filled first, it gets a REPLACE_REJECTED event and the new one is REJECTED.

The trading day. The market keeps the NYSE calendar (trading_calendar.py): regular hours
09:30-16:00 New York time, 13:00 on early-close days, closed on weekends and holidays.
Orders (and replaces) are refused while it is closed; DAY orders expire at the close; GTC
orders stay open but do not match until the next open. get_market_clock() reports it.

Orders. Fractional orders must be worth at least $1, except a sell of exactly the whole
available position (closing dust, as Alpaca allows).

Money. Cash moves by each fill's notional rounded to the cent. Buying power is cash minus
what open buys reserve (limit x remaining qty; a market buy reserves at the ask when it
arrives; a buy that walks the book can cost more). A position's qty_available excludes
shares held by open sells. No short selling, no margin.

Everything runs on the event loop the broker is first used on; the market's time is the
loop's time since then, so on run_virtual() minutes pass in milliseconds.

Replay. With replay=load_replay(...), the symbols of the recording follow it (replay.py,
replay_book.py) and the session is the recorded day; other symbols stay synthetic.

Test hooks (synchronous, call them on the broker's loop or before it runs):
force_quote / release_quote (pin a symbol's quote and freeze its random movement; a zero
price gives a zero-sided quote, bid >= ask a crossed one), inject_trade (an exogenous trade
at the bid, the ask or inside), set_quote_stale, fail_quote_stream, silence_quote_stream,
silence_order_stream, hold_fills / release_fills (with until_cancel: the cancel/fill race),
fail_next (the next call of a REST method raises, before or after taking effect).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, TypeVar

from trimtab.adapters.clock import LoopClock
from trimtab.adapters.sim.book import FillModel, PathBook, SimOrder, SymbolBook, decimal_of
from trimtab.adapters.sim.path import QUOTE_STEP, BookTop, MarketPath, TradeKind
from trimtab.adapters.sim.profile import SymbolProfile, derive_profile
from trimtab.adapters.sim.randomness import mix64, stable_key
from trimtab.adapters.sim.replay import ReplayPath, ReplaySource
from trimtab.adapters.sim.replay_book import ReplayBook
from trimtab.adapters.sim.state import (
    DEFAULT_MARKET_DATE,
    STATE_FORMAT,
    STATE_VERSION,
    AccountSpec,
    continue_session,
    parse_account,
    parse_json,
    session_start,
    snapshot_to_json,
    trading_start,
    write_atomic,
)
from trimtab.adapters.sim.trading_calendar import NEW_YORK, market_clock, session_at_or_after
from trimtab.domain.account import Account, Asset, MarketClock, Position
from trimtab.domain.errors import (
    DuplicateClientOrderIdError,
    InsufficientBuyingPowerError,
    InsufficientQuantityError,
    InvalidOrderError,
    OrderNotCancelableError,
    OrderNotFoundError,
    QuoteStreamError,
    RateLimitedError,
    TrimtabError,
)
from trimtab.domain.money import CENT, FRACTIONAL_SHARE, ONE, ZERO, money, price_tick, to_decimal
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderEventKind,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trimtab.domain.plan import SYMBOL_PATTERN
from trimtab.domain.quotes import Quote
from trimtab.logs import get_logger
from trimtab.ports.broker import OrderListener
from trimtab.ports.quotes import QuoteListener

log = get_logger(__name__)

T = TypeVar("T")

RATE_WINDOW = 60.0
"""The rolling window of the request budget, in seconds."""

AVG_PRICE_QUANTUM = Decimal("0.000001")
_REPLAY_SETS_START = "a replay sets the session's day and start: give neither start nor market_date"
_decimal = decimal_of
_S = OrderStatus
_K = OrderEventKind
_HOOK_SIDES = {"bid": TradeKind.AT_BID, "ask": TradeKind.AT_ASK, "inside": TradeKind.INSIDE}
REST_METHODS = frozenset(
    {"get_account", "get_market_clock", "get_positions", "get_asset", "get_assets", "submit_order",
     "cancel_order", "replace_order", "get_order", "get_order_by_client_id", "list_open_orders",
     "get_quote"}
)


class SimClock(LoopClock):
    """The simulated market's clock: a LoopClock whose now() is start + market time.

    It follows the broker's market time, so it stays right if the broker moves to another
    event loop (a later run_virtual) and it never reads the wall clock.
    """

    def __init__(self, start: datetime, market_time: Callable[[], float]) -> None:
        super().__init__(start)
        self._start = start.astimezone(UTC)
        self._market_time = market_time
        self._cached: tuple[float, datetime] = (0.0, self._start)

    def at(self, market_time: float) -> datetime:
        """The calendar time of a market time (seconds since the start)."""
        cached = self._cached
        if cached[0] == market_time:
            return cached[1]
        value = self._start + timedelta(seconds=market_time)
        self._cached = (market_time, value)
        return value

    def now(self) -> datetime:
        return self.at(self._market_time())


@dataclass(slots=True)
class _Position:
    qty: Decimal
    avg_price: Decimal


@dataclass(slots=True, eq=False)
class _Symbol:
    symbol: str
    asset: Asset
    book: SymbolBook
    tick: Decimal
    listeners: list[QuoteListener] = field(default_factory=list)
    scheduled: bool = False
    generation: int = 0
    wake_at: float = 0.0
    last_top: tuple[int, Decimal, int, Decimal] | None = None
    stale: Quote | None = None
    hold_until_cancel: bool = False
    prices: dict[int, Decimal] = field(default_factory=dict)

    def price(self, ticks: int) -> Decimal:
        """The price of a number of ticks (memoized: quotes revisit the same prices)."""
        value = self.prices.get(ticks)
        if value is None:
            if len(self.prices) > 1024:
                self.prices.clear()
            value = self.prices[ticks] = Decimal(ticks) * self.tick
        return value


@dataclass(slots=True)
class _Failure:
    error: TrimtabError
    applied: bool


class _Pipe:
    """Messages delivered in order after a delay, with one timer for the whole queue."""

    def __init__(self) -> None:
        self._queue: deque[tuple[float, Callable[[], None]]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = 0.0

    def reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._queue.clear()
        self._loop = loop
        self._last = loop.time()

    def send(self, delay: float, message: Callable[[], None]) -> None:
        loop = self._loop
        assert loop is not None
        when = max(loop.time() + delay, self._last)
        self._last = when
        self._queue.append((when, message))
        if self._handle is None:
            self._handle = loop.call_at(when, self._drain)

    def _drain(self) -> None:
        loop = self._loop
        assert loop is not None
        self._handle = None
        now = loop.time() + 1e-9
        try:
            while self._queue and self._queue[0][0] <= now:
                _, message = self._queue.popleft()
                message()
        finally:
            if self._queue and self._handle is None:
                self._handle = loop.call_at(self._queue[0][0], self._drain)


class _Scheduler:
    """Wake-ups of many symbols on one loop timer: a heap of (loop time, order, symbol).

    Cheaper than a TimerHandle per symbol, and symbols due at the same time (quote steps
    share a grid) are handled in one loop callback. Cancelled entries stay in the heap and
    are skipped by their generation number.
    """

    def __init__(self, wake: Callable[[_Symbol], None]) -> None:
        self._wake = wake
        self._heap: list[tuple[float, int, int, _Symbol]] = []
        self._counter = 0
        self._handle: asyncio.TimerHandle | None = None
        self._handle_when = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._handle_when = math.inf
        self._heap.clear()
        self._loop = loop

    def schedule(self, entry: _Symbol, when: float) -> None:
        entry.generation += 1
        entry.scheduled = True
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, entry.generation, entry))
        if when < self._handle_when:
            self._arm(when)

    def cancel(self, entry: _Symbol) -> None:
        entry.generation += 1
        entry.scheduled = False

    def _arm(self, when: float) -> None:
        loop = self._loop
        assert loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._handle_when = when
        self._handle = loop.call_at(when, self._run)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        self._handle = None
        self._handle_when = math.inf
        now = loop.time() + 1e-9
        heap = self._heap
        try:
            while heap and heap[0][0] <= now:
                _, _, generation, entry = heapq.heappop(heap)
                if generation == entry.generation and entry.scheduled:
                    entry.scheduled = False
                    self._wake(entry)
        finally:
            while heap and (heap[0][2] != heap[0][3].generation or not heap[0][3].scheduled):
                heapq.heappop(heap)
            if heap and heap[0][0] < self._handle_when:
                self._arm(heap[0][0])


def _ceil_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_CEILING)


class SimBroker:
    """The simulated broker: implements trimtab.ports.Broker and trimtab.ports.QuoteFeed.

    seed fixes the market's random path (with the session number of a saved account);
    cash, positions and assets set up the account (all symbols exist, tradable and
    fractionable, unless assets says otherwise or they are in unknown_symbols); profiles
    overrides the derived SymbolProfile of some symbols; fill_model is "queue" (honest) or
    "touch" (optimistic, for comparisons); latency is the one-way client-broker delay in
    seconds; quote_interval conflates the quote stream of a symbol without resting orders to
    at most one quote per interval (the market itself moves every 0.5 s; a symbol with
    resting orders streams every change); request_budget caps REST calls per rolling
    minute (quote_request_budget does the same for get_quote, unlimited by default).

    The market follows the NYSE calendar (regular hours 09:30-16:00 New York time, 13:00
    on early-close days, closed on weekends and holidays). It starts at start, or at 10:00
    of market_date; a start when the market is closed moves to 10:00 of the next trading
    day. Orders are refused while the market is closed and DAY orders expire at the close.

    replay (from load_replay) drives the symbols it holds from recorded quotes and trades
    (other symbols stay synthetic); the session is then the recorded day from the replay's
    start, so give neither start nor market_date.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        cash: Decimal = Decimal("100000"),
        positions: Mapping[str, Decimal] | None = None,
        assets: Mapping[str, Asset] | None = None,
        profiles: Mapping[str, SymbolProfile] | None = None,
        fill_model: FillModel | str = FillModel.QUEUE,
        latency: float = 0.02,
        quote_interval: float = 1.0,
        request_budget: int = 200,
        quote_request_budget: int | None = None,
        start: datetime | None = None,
        market_date: date | None = None,
        unknown_symbols: Iterable[str] = (),
        session: int = 0,
        replay: ReplaySource | None = None,
    ) -> None:
        if start is not None and market_date is not None:
            raise ValueError("give start or market_date, not both")
        if replay is not None:
            if start is not None or market_date is not None:
                raise ValueError(_REPLAY_SETS_START)
            start = replay.start_datetime
        if start is None:
            start = session_start(market_date or DEFAULT_MARKET_DATE)
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        moved = trading_start(start)
        if moved != start:
            log.info("sim market closed at %s: the session starts at %s instead",
                     start.isoformat(), moved.isoformat())
            start = moved
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if quote_interval < QUOTE_STEP:
            raise ValueError(f"quote_interval must be >= {QUOTE_STEP}, got {quote_interval}")
        if request_budget < 1:
            raise ValueError(f"request_budget must be >= 1, got {request_budget}")
        if quote_request_budget is not None and quote_request_budget < 1:
            raise ValueError(f"quote_request_budget must be >= 1, got {quote_request_budget}")
        cash = to_decimal(cash, field="cash")
        if cash < 0:
            raise ValueError(f"cash must not be negative, got {cash}")
        self._seed = seed
        self._session = session
        self._fill_model = FillModel(fill_model)
        self._latency = float(latency)
        self._quote_every = max(1, round(quote_interval / QUOTE_STEP))
        self._budget = request_budget
        self._quote_budget = quote_request_budget
        self._start = start.astimezone(UTC)
        self._session_bounds = (0.0, -1.0)
        self._clock = SimClock(self._start, self._market_time)
        self._profiles = dict(profiles or {})
        self._replay = replay
        self._assets = {symbol: asset for symbol, asset in (assets or {}).items()}
        self._unknown = frozenset(unknown_symbols)
        self._start_prices: dict[str, Decimal] = {}
        self._symbols: dict[str, _Symbol] = {}
        self._cash = cash
        self._reserved_cash = ZERO
        self._held: dict[str, Decimal] = {}
        self._positions: dict[str, _Position] = {}
        self._orders: dict[BrokerOrderId, SimOrder] = {}
        self._by_cid: dict[ClientOrderId, SimOrder] = {}
        self._open: dict[str, list[SimOrder]] = {}
        self._history: dict[BrokerOrderId, OrderSnapshot] = {}
        self._history_cids: dict[ClientOrderId, BrokerOrderId] = {}
        self._listeners: list[OrderListener] = []
        self._seq = 0
        self._id_base = stable_key("orders", seed, session, self._start.isoformat())
        self._requests = 0
        self._quote_requests = 0
        self._request_times: deque[float] = deque()
        self._quote_request_times: deque[float] = deque()
        self._failures: dict[str, list[_Failure]] = {}
        self._quote_stream_fails = False
        self._quotes_silent = False
        self._orders_silent = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0
        self._last_t = 0.0
        self._uplink = _Pipe()
        self._downlink = _Pipe()
        self._scheduler = _Scheduler(self._wake)
        self._close_handle: asyncio.TimerHandle | None = None
        self._open_handle: asyncio.TimerHandle | None = None
        self._halted: set[str] = set()
        for symbol, qty in (positions or {}).items():
            self._add_position(symbol, to_decimal(qty, field=f"positions.{symbol}"), None)

    # -- construction from files -----------------------------------------------------------

    @classmethod
    def from_account_text(
        cls,
        text: str,
        *,
        seed: int = 0,
        start: datetime | None = None,
        market_date: date | None = None,
        **options: Any,
    ) -> SimBroker:
        """A fresh account from the text of an account file. Raises ValueError naming the field."""
        spec = parse_account(parse_json(text))
        return cls._from_spec(spec, seed=seed, session=0, start=start, market_date=market_date, **options)

    @classmethod
    def from_account_file(
        cls,
        path: str | Path,
        *,
        seed: int = 0,
        start: datetime | None = None,
        market_date: date | None = None,
        **options: Any,
    ) -> SimBroker:
        """A fresh account from an account file. Raises ValueError on any bad input."""
        return cls.from_account_text(_read(Path(path), "account"), seed=seed, start=start,
                                     market_date=market_date, **options)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        seed: int | None = None,
        start: datetime | None = None,
        market_date: date | None = None,
        **options: Any,
    ) -> SimBroker:
        """Continue the account saved at path: a new session of its market.

        seed None keeps the saved seed. The market starts at the saved time or at the
        requested start (default 10:00 of market_date), whichever is later, moved to 10:00
        of the next trading day when the market is closed then or closes within 30
        minutes; prices continue from the saved ones. With replay=... in options the
        session is the replay's (its recorded day and start), whatever the saved time.
        Orders still open at the save ended with the session (they are reported EXPIRED).
        Raises FileNotFoundError if there is no file and ValueError if it is unreadable.
        """
        file = Path(path)
        if not file.exists():
            raise FileNotFoundError(f"no saved simulated account at {file}")
        spec = parse_account(parse_json(_read(file, "saved account")), saved=True)
        if start is not None and market_date is not None:
            raise ValueError("give start or market_date, not both")
        requested: datetime | None = None
        if options.get("replay") is None:
            requested = start or session_start(market_date or DEFAULT_MARKET_DATE)
            if spec.time is not None:
                requested = continue_session(spec.time, requested)
        elif start is not None or market_date is not None:
            raise ValueError(_REPLAY_SETS_START)
        return cls._from_spec(
            spec,
            seed=(spec.seed or 0) if seed is None else seed,
            session=spec.session + 1,
            start=requested,
            market_date=None,
            **options,
        )

    @classmethod
    def _from_spec(
        cls,
        spec: AccountSpec,
        *,
        seed: int,
        session: int,
        start: datetime | None,
        market_date: date | None,
        **options: Any,
    ) -> SimBroker:
        assets = dict(spec.assets)
        assets.update(options.pop("assets", None) or {})
        broker = cls(
            seed=seed,
            cash=spec.cash,
            assets=assets,
            start=start,
            market_date=market_date,
            session=session,
            **options,
        )
        broker._start_prices.update(spec.prices)
        for symbol, qty in spec.positions.items():
            broker._add_position(symbol, qty, spec.avg_prices.get(symbol))
        broker._seq = max(broker._seq, spec.next_order)
        for snapshot in spec.orders:
            if snapshot.status.is_open:
                snapshot = _expired(snapshot)
            broker._history[snapshot.broker_order_id] = snapshot
            broker._history_cids[snapshot.client_order_id] = snapshot.broker_order_id
        return broker

    def save(self, path: str | Path) -> None:
        """Save the account and the market's state to path (atomically: temp file + rename)."""
        write_atomic(Path(path), self.to_state())

    def to_state(self) -> dict[str, Any]:
        """The JSON object save() writes."""
        prices: dict[str, str] = {}
        for symbol in sorted(set(self._symbols) | set(self._positions)):
            entry = self._entry(symbol)
            if entry is not None:
                prices[symbol] = str(self._mid(entry, advance=False))
        orders = [snapshot_to_json(s) for s in self._history.values()]
        orders += [snapshot_to_json(self._snapshot(o)) for o in sorted(self._orders.values(), key=_by_seq)]
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "seed": self._seed,
            "session": self._session,
            "time": self._clock.now().isoformat(),
            "cash": str(self._cash),
            "positions": {
                symbol: {"qty": str(pos.qty), "avg_entry_price": str(pos.avg_price)}
                for symbol, pos in sorted(self._positions.items())
            },
            "assets": {
                symbol: {"tradable": asset.tradable, "fractionable": asset.fractionable}
                for symbol, asset in sorted(self._assets.items())
            },
            "prices": prices,
            "next_order": self._seq,
            "orders": orders,
        }

    # -- properties ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "sim"

    @property
    def clock(self) -> SimClock:
        """The market's clock (anchored at the market's start; virtual time on run_virtual)."""
        return self._clock

    @property
    def requests_made(self) -> int:
        """REST requests counted against the request budget so far."""
        return self._requests

    @property
    def quote_requests_made(self) -> int:
        """get_quote requests so far (a separate budget, as market data is at Alpaca)."""
        return self._quote_requests

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def session(self) -> int:
        """How many times this account has been loaded: part of the market path's key."""
        return self._session

    @property
    def start_time(self) -> datetime:
        """When the simulated market started (UTC)."""
        return self._start

    @property
    def fill_model(self) -> FillModel:
        return self._fill_model

    @property
    def latency(self) -> float:
        return self._latency

    @property
    def request_budget(self) -> int:
        return self._budget

    @property
    def replay(self) -> ReplaySource | None:
        """The recorded data driving some symbols, if any."""
        return self._replay

    def profile(self, symbol: str) -> SymbolProfile:
        """The profile of symbol's market (measured on the data for a replayed symbol).
        Raises ValueError for an unknown symbol."""
        return self._require(symbol).book.profile

    def path(self, symbol: str) -> MarketPath | ReplayPath:
        """The exogenous market of symbol (what the market does without our orders): a
        MarketPath, or a ReplayPath for a replayed symbol."""
        book = self._require(symbol).book
        assert isinstance(book, PathBook | ReplayBook)
        return book.path

    # -- time and the loop ---------------------------------------------------------------------

    def _market_time(self) -> float:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._last_t
        if loop is not self._loop:
            self._bind(loop)
        t = loop.time() - self._origin
        if t > self._last_t:
            self._last_t = t
        return self._last_t

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on loop from now on; the market continues where it was."""
        if self._loop is not None:
            log.info("sim broker moves to a new event loop at market time %.3f", self._last_t)
        self._loop = loop
        self._origin = loop.time() - self._last_t
        self._uplink.reset(loop)
        self._downlink.reset(loop)
        self._scheduler.reset(loop)
        self._close_handle = None
        self._open_handle = None
        for entry in self._symbols.values():
            entry.scheduled = False
            self._reschedule(entry)
        if self._orders:
            self._schedule_close()
        if self._halted:
            self._schedule_open()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        self._market_time()
        assert self._loop is not None
        return self._loop

    def _now_dt(self) -> datetime:
        return self._clock.now()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the broker to the running loop. Nothing else to open."""
        self._running_loop()

    async def close(self) -> None:
        """Stop the quote streams and the market's timers. Safe to call twice."""
        for entry in self._symbols.values():
            entry.listeners.clear()
            self._scheduler.cancel(entry)

    # -- REST plumbing --------------------------------------------------------------------------

    def _count(self, method: str) -> None:
        now = self._market_time()
        quote = method == "get_quote"
        window = self._quote_request_times if quote else self._request_times
        budget = self._quote_budget if quote else self._budget
        if budget is not None:
            while window and window[0] <= now - RATE_WINDOW:
                window.popleft()
            if len(window) >= budget:
                retry_after = max(window[0] + RATE_WINDOW - now, 0.0) + 1e-6
                raise RateLimitedError(
                    f"request budget of {budget} per minute spent ({method})", retry_after=retry_after
                )
            window.append(now)
        if quote:
            self._quote_requests += 1
        else:
            self._requests += 1

    async def _call(self, method: str, action: Callable[[], T]) -> T:
        loop = self._running_loop()
        self._count(method)
        failure = self._take_failure(method)
        if failure is not None and not failure.applied:
            await asyncio.sleep(2 * self._latency)
            raise failure.error
        future: asyncio.Future[T] = loop.create_future()

        def at_broker() -> None:
            answered = False
            try:
                value = action()
                answered = True
            except TrimtabError as exc:
                answered = True
                log.debug("sim request refused method=%s error=%s reason=%s", method, type(exc).__name__, exc)
                self._answer_error(future, exc)
                return
            finally:
                if not answered:
                    error = RuntimeError(f"internal error of the simulated broker in {method}")
                    self._answer_error(future, error)
            if failure is not None:
                self._answer_error(future, failure.error)
            else:
                self._answer(future, value)

        self._uplink.send(self._latency, at_broker)
        return await future

    def _answer(self, future: asyncio.Future[T], value: T) -> None:
        def deliver() -> None:
            if not future.done():
                future.set_result(value)

        self._downlink.send(self._latency, deliver)

    def _answer_error(self, future: asyncio.Future[Any], error: BaseException) -> None:
        def deliver() -> None:
            if not future.done():
                future.set_exception(error)

        self._downlink.send(self._latency, deliver)

    def _take_failure(self, method: str) -> _Failure | None:
        pending = self._failures.get(method)
        if not pending:
            return None
        return pending.pop(0)

    # -- symbols --------------------------------------------------------------------------------

    def _entry(self, symbol: str) -> _Symbol | None:
        entry = self._symbols.get(symbol)
        if entry is not None:
            return entry
        if symbol in self._unknown or not SYMBOL_PATTERN.match(symbol):
            return None
        book: SymbolBook
        if self._replay is not None and symbol in self._replay.data:
            book = ReplayBook(self._replay.path(symbol), self._fill_model, self._on_fill)
            profile = book.profile
        else:
            profile = self._profiles.get(symbol) or derive_profile(symbol, self._seed)
            start_price = self._start_prices.get(symbol)
            if start_price is not None:
                profile = profile.with_price(start_price)
            path = MarketPath(stable_key("path", self._seed, self._session, symbol), profile)
            book = PathBook(path, self._fill_model, self._on_fill)
        asset = self._assets.get(symbol) or Asset(symbol=symbol)
        entry = _Symbol(symbol=symbol, asset=asset, book=book, tick=profile.tick)
        self._symbols[symbol] = entry
        return entry

    def _require(self, symbol: str) -> _Symbol:
        entry = self._entry(symbol)
        if entry is None:
            raise ValueError(f"unknown symbol {symbol!r}")
        return entry

    def _advance(self, entry: _Symbol) -> None:
        entry.book.advance(self._market_time())

    def _touch(self, entry: _Symbol, *, direct: bool = False) -> None:
        """After anything changed a symbol: plan its next wake-up, publish its quote.

        direct calls the quote listeners at once (only from the symbol's own timer, never
        inside a request); otherwise they are called soon on the loop.
        """
        self._reschedule(entry)
        self._publish(entry, direct=direct)

    def _wants_quotes(self, entry: _Symbol) -> bool:
        return bool(entry.listeners) and entry.stale is None and not self._quotes_silent

    def _reschedule(self, entry: _Symbol) -> None:
        if self._loop is None:
            return
        wake = entry.book.next_wakeup(self._wants_quotes(entry), self._quote_every)
        if wake is None:
            if entry.scheduled:
                self._scheduler.cancel(entry)
            return
        if entry.scheduled and entry.wake_at == wake:
            return
        entry.wake_at = wake
        self._scheduler.schedule(entry, self._origin + wake)

    def _wake(self, entry: _Symbol) -> None:
        # The scheduler runs at the wake time: no need to ask the loop.
        t = entry.wake_at
        if t > self._last_t:
            self._last_t = t
        book = entry.book
        if book.idle and entry.listeners and entry.stale is None and not self._quotes_silent:
            # The common case, a streamed symbol nobody trades: jump, publish, plan the next.
            exo = book.jump_to_step(t)
            wake = book.next_quote_wake(self._quote_every)
            if wake < math.inf:
                entry.wake_at = wake
                self._scheduler.schedule(entry, self._origin + wake)
            top = (exo.bid, _decimal(exo.bid_size), exo.ask, _decimal(exo.ask_size))
            if top != entry.last_top:
                entry.last_top = top
                quote = Quote(entry.symbol, entry.price(exo.bid), entry.price(exo.ask), top[1], top[3],
                              self._clock.at(t))
                for listener in list(entry.listeners):
                    listener(quote)
            return
        book.advance(t)
        self._touch(entry, direct=True)

    def _quote(self, entry: _Symbol, top: tuple[int, Decimal, int, Decimal] | None = None) -> Quote:
        bid, bid_size, ask, ask_size = top if top is not None else entry.book.top()
        return Quote(
            symbol=entry.symbol,
            bid=entry.price(bid) if bid > 0 else ZERO,
            ask=entry.price(ask) if ask > 0 else ZERO,
            bid_size=bid_size if bid > 0 else ZERO,
            ask_size=ask_size if ask > 0 else ZERO,
            timestamp=self._clock.at(self._last_t) if self._loop is not None else self._now_dt(),
        )

    def _publish(self, entry: _Symbol, *, direct: bool = False) -> None:
        if not self._wants_quotes(entry):
            return
        top = entry.book.top()
        if top == entry.last_top:
            return
        entry.last_top = top
        quote = self._quote(entry, top)
        if direct:
            for listener in list(entry.listeners):
                listener(quote)
            return
        loop = self._running_loop()
        for listener in list(entry.listeners):
            loop.call_soon(listener, quote)

    def _mid(self, entry: _Symbol, *, advance: bool = True) -> Decimal:
        if advance:
            self._advance(entry)
        bid, _, ask, _ = entry.book.top()
        if bid > 0 and ask > 0:
            ticks = Decimal(bid + ask) / 2
        elif bid > 0 or ask > 0:
            ticks = Decimal(max(bid, ask))
        else:
            return entry.book.profile.price
        return ticks * entry.tick

    # -- account ----------------------------------------------------------------------------------

    def _add_position(self, symbol: str, qty: Decimal, avg_price: Decimal | None) -> None:
        if qty < 0:
            raise ValueError(f"positions.{symbol}: short positions are not supported")
        if qty == 0:
            return
        entry = self._entry(symbol)
        if entry is None:
            raise ValueError(f"positions.{symbol}: unknown symbol")
        if not entry.asset.fractionable and qty != qty.to_integral_value():
            raise ValueError(
                f"positions.{symbol}: {qty} shares is fractional but {symbol} is not fractionable"
            )
        price = avg_price if avg_price is not None else entry.book.profile.price
        self._positions[symbol] = _Position(qty=qty, avg_price=price)

    def _buying_power(self) -> Decimal:
        return self._cash - self._reserved_cash

    def _qty_available(self, symbol: str) -> Decimal:
        position = self._positions.get(symbol)
        held = self._held.get(symbol, ZERO)
        return (position.qty if position is not None else ZERO) - held

    def _reserve(self, order: SimOrder, amount: Decimal) -> None:
        order.reserved += amount
        if order.is_buy:
            self._reserved_cash += amount
        else:
            self._held[order.symbol] = self._held.get(order.symbol, ZERO) + amount

    def _release(self, order: SimOrder, amount: Decimal | None = None) -> None:
        amount = order.reserved if amount is None else min(amount, order.reserved)
        if amount <= ZERO:
            return
        order.reserved -= amount
        if order.is_buy:
            self._reserved_cash -= amount
        else:
            left = self._held.get(order.symbol, ZERO) - amount
            if left > ZERO:
                self._held[order.symbol] = left
            else:
                self._held.pop(order.symbol, None)

    def _account(self) -> Account:
        value = self._cash
        for symbol, position in self._positions.items():
            entry = self._entry(symbol)
            if entry is not None:
                value += position.qty * self._mid(entry)
        return Account(cash=money(self._cash), buying_power=money(self._buying_power()),
                       portfolio_value=money(value))

    def _positions_now(self) -> dict[str, Position]:
        out: dict[str, Position] = {}
        for symbol, position in sorted(self._positions.items()):
            entry = self._entry(symbol)
            mid = self._mid(entry) if entry is not None else position.avg_price
            out[symbol] = Position(
                symbol=symbol,
                qty=position.qty,
                qty_available=self._qty_available(symbol),
                avg_entry_price=position.avg_price,
                market_value=money(position.qty * mid),
            )
        return out

    # -- orders -----------------------------------------------------------------------------------

    def _snapshot(self, order: SimOrder) -> OrderSnapshot:
        avg = None
        if order.filled_qty > ZERO:
            avg = (order.filled_notional / order.filled_qty).quantize(AVG_PRICE_QUANTUM)
        return OrderSnapshot(
            broker_order_id=order.broker_order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            qty=order.qty,
            status=order.status,
            filled_qty=order.filled_qty,
            filled_avg_price=avg,
            limit_price=order.limit_price,
            created_at=order.created_at,
            updated_at=order.updated_at,
            reject_reason=order.reject_reason,
            replaced_by=order.replaced_by,
            replaces=order.replaces,
        )

    def _set_status(self, order: SimOrder, status: OrderStatus) -> None:
        previous = order.status
        order.status = previous.transition(status)
        order.updated_at = self._now_dt()
        if order.status.is_terminal:
            self._finish(order)

    def _finish(self, order: SimOrder) -> None:
        """An order became final: release what it reserved, take it off the open lists."""
        self._release(order)
        open_orders = self._open.get(order.symbol)
        if open_orders is not None and order in open_orders:
            open_orders.remove(order)
            if not open_orders:
                del self._open[order.symbol]
        entry = self._symbols.get(order.symbol)
        if entry is not None:
            entry.book.remove(order)

    def _emit(
        self,
        kind: OrderEventKind,
        order: SimOrder,
        *,
        fill_qty: Decimal | None = None,
        fill_price: Decimal | None = None,
        reason: str | None = None,
    ) -> None:
        event = OrderEvent(
            kind=kind,
            order=self._snapshot(order),
            timestamp=self._now_dt(),
            fill_qty=fill_qty,
            fill_price=fill_price,
            reason=reason,
        )
        log.debug(
            "sim order event kind=%s symbol=%s cid=%s status=%s filled=%s reason=%s",
            kind.value, order.symbol, order.client_order_id, order.status.value, order.filled_qty, reason,
        )
        self._downlink.send(self._latency, lambda: self._deliver(event))

    def _deliver(self, event: OrderEvent) -> None:
        if self._orders_silent or self._loop is None:
            return
        for listener in list(self._listeners):
            self._loop.call_soon(listener, event)

    def _new_id(self) -> tuple[int, BrokerOrderId]:
        self._seq += 1
        value = ((mix64(self._id_base) << 64) | (self._seq & ((1 << 64) - 1))) & ((1 << 128) - 1)
        return self._seq, BrokerOrderId(str(uuid.UUID(int=value)))

    def _known_order(self, order_id: BrokerOrderId) -> SimOrder:
        order = self._orders.get(order_id)
        if order is None:
            saved = self._history.get(order_id)
            if saved is not None:
                raise OrderNotCancelableError(f"order {order_id} is already {saved.status.value}")
            raise OrderNotFoundError(f"order {order_id} not found")
        return order

    def _on_fill(self, order: SimOrder, qty: Decimal, ticks: int) -> None:
        entry = self._symbols[order.symbol]
        price = entry.price(ticks)
        notional = money(qty * price)
        order.filled_qty += qty
        order.filled_notional += qty * price
        position = self._positions.get(order.symbol)
        if order.is_buy:
            self._cash -= notional
            if position is None:
                self._positions[order.symbol] = _Position(qty=qty, avg_price=price)
            else:
                total = position.qty + qty
                position.avg_price = ((position.avg_price * position.qty + price * qty) / total).quantize(
                    AVG_PRICE_QUANTUM
                )
                position.qty = total
            release = _ceil_cents(qty * order.reserve_price)
        else:
            assert position is not None, "a sell filled without a position"
            assert position.qty >= qty, "a sell filled more than the position"
            self._cash += notional
            position.qty -= qty
            if position.qty == ZERO:
                del self._positions[order.symbol]
            release = qty
        if order.remaining <= ZERO:
            kind = _K.FILL
            self._set_status(order, _S.FILLED)
        else:
            self._release(order, release)
            kind = _K.PARTIAL_FILL
            keep = order.status is _S.PENDING_CANCEL
            self._set_status(order, _S.PENDING_CANCEL if keep else _S.PARTIALLY_FILLED)
        self._emit(kind, order, fill_qty=qty, fill_price=price)

    def _validate_qty(self, qty: Decimal, asset: Asset) -> None:
        if qty <= ZERO:
            raise InvalidOrderError(f"qty must be positive, got {qty}")
        if qty != qty.quantize(FRACTIONAL_SHARE, rounding=ROUND_DOWN):
            raise InvalidOrderError(f"qty {qty} has more than 9 decimals")
        if not asset.fractionable and qty != qty.to_integral_value():
            raise InvalidOrderError(f"fractional qty {qty} for {asset.symbol}, which is not fractionable")

    def _limit_ticks(self, entry: _Symbol, side: Side, limit: Decimal) -> int:
        if limit <= ZERO:
            raise InvalidOrderError(f"limit price must be positive, got {limit}")
        tick = price_tick(limit)
        if limit != limit.quantize(tick):
            raise InvalidOrderError(f"limit price {limit} is not a multiple of the tick {tick}")
        ticks = limit / entry.tick
        rounding = ROUND_DOWN if side is Side.BUY else ROUND_CEILING
        return max(1, int(ticks.to_integral_value(rounding=rounding)))

    def _check_tradable(self, entry: _Symbol | None, symbol: str) -> _Symbol:
        if entry is None:
            raise InvalidOrderError(f"asset {symbol} not found")
        if not entry.asset.tradable:
            raise InvalidOrderError(f"asset {symbol} is not tradable")
        if not self._market_open():
            opens = self._clock.at(self._session_at(self._market_time())[0]).astimezone(NEW_YORK)
            raise InvalidOrderError(
                "the simulated market is closed (regular hours 09:30-16:00 New York time, 13:00 on "
                f"early-close days); it opens at {opens.isoformat()}"
            )
        return entry

    def _check_funds(self, entry: _Symbol, side: Side, qty: Decimal, reference: Decimal,
                     credit: Decimal = ZERO) -> Decimal:
        """Check buying power or shares for an order; return what it must reserve."""
        if side is Side.BUY:
            cost = _ceil_cents(reference * qty)
            available = self._buying_power() + credit
            if cost > available:
                raise InsufficientBuyingPowerError(
                    f"insufficient buying power: order needs {cost}, available {money(available)}"
                )
            return cost
        available = self._qty_available(entry.symbol) + credit
        if qty > available:
            raise InsufficientQuantityError(
                f"insufficient qty available for {entry.symbol}: requested {qty}, available {available}"
            )
        return qty

    def _reference_price(self, entry: _Symbol, side: Side, limit: Decimal | None) -> Decimal:
        if limit is not None:
            return limit
        ticks = entry.book.reference_ask() if side is Side.BUY else entry.book.reference_bid()
        if ticks > 0:
            return Decimal(ticks) * entry.tick
        return self._mid(entry, advance=False)

    def _accept(self, request: OrderRequest) -> OrderSnapshot:
        """A new order reaches the broker: validate, accept and send it to the book."""
        if self._cid_used(request.client_order_id):
            raise DuplicateClientOrderIdError(f"client_order_id {request.client_order_id} must be unique")
        entry = self._check_tradable(self._entry(request.symbol), request.symbol)
        asset = entry.asset
        self._validate_qty(request.qty, asset)
        fractional = request.qty != request.qty.to_integral_value()
        if fractional and request.time_in_force is not TimeInForce.DAY:
            raise InvalidOrderError("fractional orders must be DAY orders")
        ticks = 0
        if request.order_type is OrderType.LIMIT:
            assert request.limit_price is not None
            ticks = self._limit_ticks(entry, request.side, request.limit_price)
        self._advance(entry)
        opposite = [o for o in self._open.get(request.symbol, ()) if o.side is not request.side]
        if opposite:
            raise InvalidOrderError(
                f"potential wash trade detected: an open {opposite[0].side.value} order of "
                f"{request.symbol} exists ({opposite[0].client_order_id})"
            )
        reference = self._reference_price(entry, request.side, request.limit_price)
        if fractional and request.qty * reference < ONE and not self._closes_position(request):
            raise InvalidOrderError(f"fractional orders must be worth at least $1 (qty {request.qty})")
        reserve = self._check_funds(entry, request.side, request.qty, reference)
        seq, order_id = self._new_id()
        now = self._now_dt()
        order = SimOrder(
            broker_order_id=order_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            order_type=request.order_type,
            time_in_force=request.time_in_force,
            qty=request.qty,
            limit_price=request.limit_price,
            limit_ticks=ticks,
            seq=seq,
            created_at=now,
            updated_at=now,
            reserve_price=reference,
        )
        self._register(order)
        self._reserve(order, reserve)
        log.debug("sim order accepted symbol=%s side=%s qty=%s type=%s limit=%s cid=%s",
                  order.symbol, order.side.value, order.qty, order.order_type.value, order.limit_price,
                  order.client_order_id)
        self._set_status(order, _S.ACCEPTED)
        self._emit(_K.ACCEPTED, order)
        self._place(entry, order)
        self._touch(entry)
        return self._snapshot(order)

    def _closes_position(self, request: OrderRequest) -> bool:
        """A sell of exactly the whole available position (dust is sold whatever its value)."""
        if request.side is not Side.SELL:
            return False
        available = self._qty_available(request.symbol)
        return available > ZERO and request.qty == available

    def _cid_used(self, client_order_id: ClientOrderId) -> bool:
        return client_order_id in self._by_cid or client_order_id in self._history_cids

    def _reserve_remaining(self, order: SimOrder) -> None:
        """Reserve what the rest of order needs (cash at its reference price, or shares)."""
        amount = _ceil_cents(order.remaining * order.reserve_price) if order.is_buy else order.remaining
        self._reserve(order, amount)

    def _register(self, order: SimOrder) -> None:
        self._orders[order.broker_order_id] = order
        self._by_cid[order.client_order_id] = order
        self._open.setdefault(order.symbol, []).append(order)
        self._schedule_close()

    def _place(self, entry: _Symbol, order: SimOrder) -> None:
        """The order reaches the matching engine."""
        if not entry.book.execute(order):
            self._reject(order, f"no liquidity to fill a market {order.side.value} of {order.symbol}")
            return
        if order.status.is_terminal or order.remaining <= ZERO:
            return
        if order in entry.book.waiting_market:
            return
        if order.order_type is OrderType.MARKET or order.time_in_force is TimeInForce.IOC:
            self._set_status(order, _S.CANCELED)
            self._emit(_K.CANCELED, order, reason="no more liquidity" if order.order_type is OrderType.MARKET
                       else "immediate or cancel")
            return
        entry.book.rest(order)

    def _reject(self, order: SimOrder, reason: str) -> None:
        order.reject_reason = reason
        self._set_status(order, _S.REJECTED)
        self._emit(_K.REJECTED, order, reason=reason)

    def _request_cancel(self, order_id: BrokerOrderId) -> None:
        order = self._known_order(order_id)
        if order.status.is_terminal:
            raise OrderNotCancelableError(f"order {order_id} is already {order.status.value}")
        if order.cancel_requested:
            return
        entry = self._symbols[order.symbol]
        self._advance(entry)
        if order.status.is_terminal:
            raise OrderNotCancelableError(f"order {order_id} is already {order.status.value}")
        order.cancel_requested = True
        self._set_status(order, _S.PENDING_CANCEL)
        self._emit(_K.PENDING_CANCEL, order)
        if entry.hold_until_cancel:
            self._release_hold(entry)
        self._uplink.send(self._latency, lambda: self._venue_cancel(entry, order))

    def _venue_cancel(self, entry: _Symbol, order: SimOrder) -> None:
        self._advance(entry)
        if order.status.is_terminal:
            self._emit(_K.CANCEL_REJECTED, order, reason=f"order is already {order.status.value}")
            return
        entry.book.remove(order)
        self._set_status(order, _S.CANCELED)
        self._emit(_K.CANCELED, order)
        self._touch(entry)

    def _request_replace(
        self,
        order_id: BrokerOrderId,
        qty: Decimal | None,
        limit_price: Decimal | None,
        client_order_id: ClientOrderId | None,
    ) -> OrderSnapshot:
        old = self._known_order(order_id)
        entry = self._symbols[old.symbol]
        self._advance(entry)
        if old.status.is_terminal or old.cancel_requested or old.replacement is not None:
            state = "pending cancel" if old.cancel_requested else (
                "pending replace" if old.replacement is not None else old.status.value)
            raise OrderNotCancelableError(f"order {order_id} cannot be replaced: it is {state}")
        if limit_price is not None and old.order_type is not OrderType.LIMIT:
            raise InvalidOrderError("only a limit order can get a new limit price")
        if client_order_id is not None and self._cid_used(client_order_id):
            raise DuplicateClientOrderIdError(f"client_order_id {client_order_id} must be unique")
        self._check_tradable(entry, old.symbol)
        new_qty = old.remaining if qty is None else qty
        self._validate_qty(new_qty, entry.asset)
        new_limit = limit_price if limit_price is not None else old.limit_price
        ticks = old.limit_ticks
        if limit_price is not None:
            ticks = self._limit_ticks(entry, old.side, limit_price)
        reference = new_limit if new_limit is not None else old.reserve_price
        reserve = self._check_funds(entry, old.side, new_qty, reference, credit=old.reserved)
        seq, new_id = self._new_id()
        now = self._now_dt()
        new = SimOrder(
            broker_order_id=new_id,
            client_order_id=client_order_id or ClientOrderId(f"sim-{new_id}"),
            symbol=old.symbol,
            side=old.side,
            order_type=old.order_type,
            time_in_force=old.time_in_force,
            qty=new_qty,
            limit_price=new_limit,
            limit_ticks=ticks,
            seq=seq,
            created_at=now,
            updated_at=now,
            reserve_price=reference,
            replaces=old.broker_order_id,
            qty_from_original=qty is None,
        )
        self._register(new)
        self._release(old)
        self._reserve(new, reserve)
        old.replacement = new
        self._set_status(old, _S.PENDING_REPLACE)
        self._emit(_K.PENDING_REPLACE, old)
        if entry.hold_until_cancel:
            self._release_hold(entry)
        self._uplink.send(self._latency, lambda: self._venue_replace(entry, old, new))
        return self._snapshot(new)

    def _venue_replace(self, entry: _Symbol, old: SimOrder, new: SimOrder) -> None:
        self._advance(entry)
        old.replacement = None
        problem: str | None = None
        if old.status.is_terminal:
            problem = f"the order to replace is already {old.status.value}"
        elif old.cancel_requested:
            problem = "the order to replace is pending cancel"
        elif new.status.is_terminal:
            problem = f"the new order is already {new.status.value}"
        elif new.qty_from_original:
            self._release(new)
            new.qty = old.remaining
            self._reserve_remaining(new)
        if problem is None and not new.is_buy and self._qty_available(new.symbol) < ZERO:
            problem = "insufficient qty available after fills of the order to replace"
        if problem is None and new.is_buy and self._buying_power() < ZERO:
            problem = "insufficient buying power after fills of the order to replace"
        if problem is not None:
            if new.status.is_open:
                self._release(new)
            if old.status.is_open:
                # The old order stays live: give its reservation back.
                self._reserve_remaining(old)
                if old.status is _S.PENDING_REPLACE:
                    self._set_status(old, _S.ACCEPTED if old.filled_qty == ZERO else _S.PARTIALLY_FILLED)
            self._emit(_K.REPLACE_REJECTED, old, reason=problem)
            if new.status.is_open:
                self._reject(new, problem)
            self._touch(entry)
            return
        entry.book.remove(old)
        old.replaced_by = new.broker_order_id
        self._set_status(old, _S.REPLACED)
        self._emit(_K.REPLACED, old)
        self._set_status(new, _S.ACCEPTED)
        self._emit(_K.ACCEPTED, new)
        self._place(entry, new)
        self._touch(entry)

    def _session_at(self, t: float) -> tuple[float, float]:
        """Market times (open, close) of the regular session open at market time t, or of
        the next one. Market time only moves forward, so the last answer stays right until
        its close."""
        bounds = self._session_bounds
        if t < bounds[1]:
            return bounds
        opens, closes = session_at_or_after(self._clock.at(t))
        bounds = ((opens - self._start).total_seconds(), (closes - self._start).total_seconds())
        self._session_bounds = bounds
        return bounds

    def _market_open(self) -> bool:
        t = self._market_time()
        opens, closes = self._session_at(t)
        return opens <= t < closes

    def _schedule_close(self) -> None:
        """Plan the end of the current (or next) session: DAY orders expire at its close."""
        loop = self._loop
        if loop is None or self._close_handle is not None:
            return
        closes = self._session_at(self._market_time())[1]
        self._close_handle = loop.call_at(self._origin + closes, self._on_close)

    def _schedule_open(self) -> None:
        loop = self._loop
        if loop is None or self._open_handle is not None:
            return
        t = self._market_time()
        opens = self._session_at(t)[0]
        self._open_handle = loop.call_at(self._origin + max(opens, t), self._on_open)

    def _on_close(self) -> None:
        """The session ends: DAY orders expire; the books of orders that stay open (GTC)
        stop matching until the next open."""
        self._close_handle = None
        touched: set[str] = set()
        for order in sorted(self._orders.values(), key=_by_seq):
            if order.status.is_open and order.time_in_force is TimeInForce.DAY:
                self._set_status(order, _S.EXPIRED)
                self._emit(_K.EXPIRED, order, reason="the trading day ended")
                touched.add(order.symbol)
        for symbol in sorted(self._open):
            entry = self._symbols[symbol]
            self._advance(entry)
            entry.book.halt()
            self._halted.add(symbol)
            touched.add(symbol)
        for symbol in touched:
            self._touch(self._symbols[symbol])
        if self._halted:
            self._schedule_open()

    def _on_open(self) -> None:
        """A session opens: books halted at the last close match again."""
        self._open_handle = None
        halted, self._halted = self._halted, set()
        for symbol in sorted(halted):
            entry = self._symbols[symbol]
            self._advance(entry)
            for order in entry.book.reopen():
                self._reject(order, f"no liquidity to fill a market {order.side.value} of {order.symbol}")
            self._touch(entry)
        if self._open:
            self._schedule_close()

    # -- Broker ---------------------------------------------------------------------------------

    async def get_account(self) -> Account:
        """Cash, buying power and portfolio value (cash plus positions at the mid)."""
        return await self._call("get_account", self._account)

    async def get_market_clock(self) -> MarketClock:
        """Whether the simulated market is in regular hours now, and its next open and close
        (the NYSE calendar: weekends, holidays and 13:00 early closes)."""
        return await self._call("get_market_clock", lambda: market_clock(self._now_dt()))

    async def get_positions(self) -> Mapping[str, Position]:
        """Open positions by symbol."""
        return await self._call("get_positions", self._positions_now)

    async def get_asset(self, symbol: str) -> Asset | None:
        """The asset of symbol, or None if the simulated exchange does not list it."""

        def look() -> Asset | None:
            entry = self._entry(symbol)
            return entry.asset if entry is not None else None

        return await self._call("get_asset", look)

    async def get_assets(self, symbols: Iterable[str]) -> Mapping[str, Asset]:
        """Assets of many symbols in one request; unknown ones are absent."""
        wanted = list(symbols)

        def look() -> dict[str, Asset]:
            out: dict[str, Asset] = {}
            for symbol in wanted:
                entry = self._entry(symbol)
                if entry is not None:
                    out[symbol] = entry.asset
            return out

        return await self._call("get_assets", look)

    async def submit_order(self, request: OrderRequest) -> OrderSnapshot:
        """Send an order; returns it as the broker acknowledged it (after 2 x latency).

        Raises RateLimitedError, DuplicateClientOrderIdError, InvalidOrderError,
        InsufficientBuyingPowerError or InsufficientQuantityError.
        """
        return await self._call("submit_order", lambda: self._accept(request))

    async def cancel_order(self, order_id: BrokerOrderId) -> None:
        """Request a cancel. Raises OrderNotFoundError, or OrderNotCancelableError if the
        order is already final when the request reaches the broker; otherwise the outcome
        (CANCELED, or FILLED by a fill that came first) arrives as events."""
        await self._call("cancel_order", lambda: self._request_cancel(order_id))

    async def replace_order(
        self,
        order_id: BrokerOrderId,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        *,
        client_order_id: ClientOrderId | None = None,
    ) -> OrderSnapshot:
        """Replace an open order by a new one (new id; the old one ends REPLACED).

        qty is the new order's quantity (default: what is left of the old one when the
        replace takes effect); limit_price the new limit (limit orders only).
        """
        return await self._call(
            "replace_order", lambda: self._request_replace(order_id, qty, limit_price, client_order_id)
        )

    async def get_order(self, order_id: BrokerOrderId) -> OrderSnapshot:
        """The order's current state. Raises OrderNotFoundError."""

        def look() -> OrderSnapshot:
            order = self._orders.get(order_id)
            if order is not None:
                return self._snapshot(order)
            saved = self._history.get(order_id)
            if saved is not None:
                return saved
            raise OrderNotFoundError(f"order {order_id} not found")

        return await self._call("get_order", look)

    async def get_order_by_client_id(self, client_order_id: ClientOrderId) -> OrderSnapshot | None:
        """The order with this client order id, or None."""

        def look() -> OrderSnapshot | None:
            order = self._by_cid.get(client_order_id)
            if order is not None:
                return self._snapshot(order)
            saved = self._history_cids.get(client_order_id)
            return self._history[saved] if saved is not None else None

        return await self._call("get_order_by_client_id", look)

    async def list_open_orders(self, symbols: Iterable[str] | None = None) -> list[OrderSnapshot]:
        """Open orders, oldest first, optionally of some symbols only."""
        wanted = None if symbols is None else set(symbols)

        def look() -> list[OrderSnapshot]:
            orders = [o for group in self._open.values() for o in group
                      if wanted is None or o.symbol in wanted]
            return [self._snapshot(o) for o in sorted(orders, key=_by_seq)]

        return await self._call("list_open_orders", look)

    def add_order_listener(self, listener: OrderListener) -> Callable[[], None]:
        """Deliver every order event to listener (on the loop); returns the remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    # -- QuoteFeed ------------------------------------------------------------------------------

    async def subscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        """Stream quotes of symbols to listener: the current one at once, then every change
        of the top of book. Unknown symbols are ignored. Raises QuoteStreamError if the
        stream is down (test hook fail_quote_stream)."""
        self._running_loop()
        if self._quote_stream_fails:
            raise QuoteStreamError("the simulated quote stream is down")
        for symbol in symbols:
            entry = self._entry(symbol)
            if entry is None or listener in entry.listeners:
                continue
            self._advance(entry)
            entry.listeners.append(listener)
            entry.last_top = None
            if self._wants_quotes(entry):
                quote = self._quote(entry)
                entry.last_top = entry.book.top()
                self._running_loop().call_soon(listener, quote)
            self._reschedule(entry)

    async def unsubscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        """Stop streaming quotes of symbols to listener."""
        for symbol in symbols:
            entry = self._symbols.get(symbol)
            if entry is not None and listener in entry.listeners:
                entry.listeners.remove(listener)
                self._reschedule(entry)

    async def get_quote(self, symbol: str) -> Quote | None:
        """The current quote (a REST snapshot, 2 x latency), or None for an unknown symbol."""

        def look() -> Quote | None:
            entry = self._entry(symbol)
            if entry is None:
                return None
            if entry.stale is not None:
                return entry.stale
            self._advance(entry)
            quote = self._quote(entry)
            self._touch(entry)
            return quote

        return await self._call("get_quote", look)

    # -- test hooks ------------------------------------------------------------------------------

    def force_quote(
        self,
        symbol: str,
        bid: Decimal,
        ask: Decimal,
        bid_size: Decimal = Decimal(100),
        ask_size: Decimal = Decimal(100),
        *,
        random_trades: bool = False,
    ) -> None:
        """Test hook: set symbol's exogenous quote and freeze it until release_quote().

        Random trades stop too unless random_trades. A zero price empties that side (a
        zero-sided quote); bid >= ask gives a crossed or locked quote. Our own impact is
        reset; resting orders the new quote crosses fill at their limit.
        """
        entry = self._require(symbol)
        tick = entry.tick
        values = []
        for name, price in (("bid", bid), ("ask", ask)):
            ticks = price / tick
            if price < 0 or ticks != ticks.to_integral_value():
                raise ValueError(f"{name} {price} is not a non-negative multiple of the tick {tick}")
            values.append(int(ticks))
        sizes = []
        for name, size in (("bid_size", bid_size), ("ask_size", ask_size)):
            if size < 1 or size != size.to_integral_value():
                raise ValueError(f"{name} must be a whole number of shares >= 1, got {size}")
            sizes.append(int(size))
        self._advance(entry)
        entry.book.force(BookTop(values[0], values[1], sizes[0], sizes[1]), random_trades)
        self._touch(entry)

    def release_quote(self, symbol: str) -> None:
        """Test hook: let symbol's quote follow its random path again."""
        entry = self._require(symbol)
        self._advance(entry)
        entry.book.unforce()
        self._touch(entry)

    def inject_trade(self, symbol: str, size: int, *, at: str = "bid") -> None:
        """Test hook: an exogenous trade of size shares now, at "bid", "ask" or "inside".

        A trade at the bid is a seller hitting the bid: it consumes the queue ahead of
        our resting buys, then fills them.
        """
        if at not in _HOOK_SIDES:
            raise ValueError(f"at must be bid, ask or inside, got {at!r}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        entry = self._require(symbol)
        self._advance(entry)
        entry.book.trade(_HOOK_SIDES[at], size)
        self._touch(entry)

    def set_quote_stale(self, symbol: str, stale: bool = True) -> None:
        """Test hook: freeze the quote that get_quote and the stream show for symbol (its
        timestamp ages); the book underneath keeps moving and matching."""
        entry = self._require(symbol)
        self._advance(entry)
        entry.stale = self._quote(entry) if stale else None
        entry.last_top = None
        self._touch(entry)

    def fail_quote_stream(self, fail: bool = True) -> None:
        """Test hook: make subscribe_quotes raise QuoteStreamError."""
        self._quote_stream_fails = fail

    def silence_quote_stream(self, silent: bool = True) -> None:
        """Test hook: subscribed quote streams stop delivering (a silent stream) or resume."""
        self._quotes_silent = silent
        for entry in self._symbols.values():
            entry.last_top = None
            self._touch(entry)

    def silence_order_stream(self, silent: bool = True) -> None:
        """Test hook: order events are dropped instead of delivered (REST still tells the truth)."""
        self._orders_silent = silent

    def hold_fills(self, symbol: str, *, until_cancel: bool = False) -> None:
        """Test hook: symbol's orders stop filling until release_fills().

        Resting orders keep their place, trades pass them by and market orders wait. With
        until_cancel the hold also ends when a cancel or replace of one of the symbol's
        orders reaches the broker, before it reaches the matching engine: whatever the
        book then crosses fills first, so the cancel meets a filled order (the cancel/fill
        race). Force a crossing quote while held to make sure something fills.
        """
        entry = self._require(symbol)
        self._advance(entry)
        entry.book.hold()
        entry.hold_until_cancel = until_cancel
        self._touch(entry)

    def release_fills(self, symbol: str) -> None:
        """Test hook: end hold_fills(); what has become marketable fills now."""
        entry = self._require(symbol)
        self._advance(entry)
        self._release_hold(entry)

    def _release_hold(self, entry: _Symbol) -> None:
        entry.hold_until_cancel = False
        for order in entry.book.release():
            self._reject(order, f"no liquidity to fill a market {order.side.value} of {order.symbol}")
        self._touch(entry)

    def fail_next(self, method: str, error: TrimtabError, *, applied: bool = False) -> None:
        """Test hook: the next call of method (a REST method name) raises error.

        With applied the call takes effect first and only its answer is lost (for example
        UnknownOrderOutcomeError on submit_order: the order exists). Calls queue up.
        """
        if method not in REST_METHODS:
            raise ValueError(f"unknown method {method!r} (one of {', '.join(sorted(REST_METHODS))})")
        self._failures.setdefault(method, []).append(_Failure(error, applied))


def _by_seq(order: SimOrder) -> int:
    return order.seq


def _expired(snapshot: OrderSnapshot) -> OrderSnapshot:
    return OrderSnapshot(
        broker_order_id=snapshot.broker_order_id,
        client_order_id=snapshot.client_order_id,
        symbol=snapshot.symbol,
        side=snapshot.side,
        order_type=snapshot.order_type,
        qty=snapshot.qty,
        status=snapshot.status.transition(OrderStatus.EXPIRED),
        filled_qty=snapshot.filled_qty,
        filled_avg_price=snapshot.filled_avg_price,
        limit_price=snapshot.limit_price,
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
        reject_reason=snapshot.reject_reason,
        replaced_by=snapshot.replaced_by,
        replaces=snapshot.replaces,
    )


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{what} path is a directory: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} file is not UTF-8 text: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from None

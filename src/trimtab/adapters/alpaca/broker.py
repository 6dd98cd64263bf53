"""AlpacaBroker: the Broker and QuoteFeed ports on alpaca-py.

REST goes through alpaca-py's TradingClient and StockHistoricalDataClient, run on a small
thread pool so the event loop never blocks, within a token bucket of the account's
request budget. alpaca-py's own retry is switched off (it would resubmit an order POST
after a 504); an order whose outcome is unknown raises UnknownOrderOutcomeError and the
engine resolves it by client order id.

Order events come from one trade_updates stream per broker. A watchdog expects an event
after every submit, cancel and replace; when one is overdue it reads the order by REST,
and if REST knows more than the stream delivered, the stream is judged silent: the
missing events are delivered from REST, polling of open orders takes over within the
budget, and the stream is reconnected with jittered backoff. Every event reaches the
listeners once: a later copy of a state already delivered (from the stream after a poll,
or the other way round) is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from trimtab.adapters.alpaca import convert
from trimtab.adapters.alpaca._sdk import (
    AlpacaAsset,
    AlpacaClock,
    AlpacaOrder,
    AlpacaPosition,
    AlpacaQuote,
    AssetClass,
    AssetStatus,
    DataFeed,
    GetAssetsRequest,
    GetOrdersRequest,
    QueryOrderStatus,
    StockHistoricalDataClient,
    StockLatestQuoteRequest,
    TradeAccount,
    TradeUpdate,
    TradingClient,
)
from trimtab.adapters.alpaca.config import AlpacaConfig, from_environment
from trimtab.adapters.alpaca.errors import Operation
from trimtab.adapters.alpaca.hub import AccountHub
from trimtab.adapters.alpaca.ratelimit import TokenBucket
from trimtab.adapters.alpaca.streams import OrderStream
from trimtab.adapters.alpaca.transport import Transport
from trimtab.adapters.clock import SystemClock
from trimtab.domain.account import Account, Asset, MarketClock, Position
from trimtab.domain.errors import (
    BrokerUnavailableError,
    InvalidOrderError,
    OrderNotFoundError,
    QuoteStreamError,
    RetryableError,
)
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderEventKind,
    OrderRequest,
    OrderSnapshot,
    OrderType,
)
from trimtab.domain.quotes import Quote
from trimtab.logs import get_logger
from trimtab.ports.broker import OrderListener
from trimtab.ports.clock import Clock
from trimtab.ports.quotes import QuoteListener

log = get_logger(__name__)

ASSET_LIST_THRESHOLD = 4
"""Above this many symbols, assets are read with one list request instead of one each."""
KNOWN_ORDERS_CAP = 20000
POLL_BATCH = 500
MAX_SINGLE_READS = 10


class Expect(Enum):
    """What the watchdog waits to hear about an order."""

    ANY = "any"  # after a submit: at least the new/accepted event
    FINAL = "final"  # after a cancel (or for a market order): a terminal state


@dataclass(slots=True)
class Expectation:
    kind: Expect
    deadline: float
    backoff: float


def _wire(value: Decimal) -> str:
    """A Decimal as Alpaca's decimal string (never exponent notation)."""
    return format(value, "f")


class AlpacaBroker:
    """The Broker and QuoteFeed ports over Alpaca's API, through alpaca-py.

    Use ``AlpacaBroker(AlpacaConfig(...))`` or ``AlpacaBroker.from_environment()``. The
    constructor does no I/O; ``start()`` opens the clients and the order stream, and
    ``close()`` closes everything start() and the quote subscriptions opened.
    """

    def __init__(self, config: AlpacaConfig, *, clock: Clock | None = None) -> None:
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._transport = Transport(
            self._clock, config.max_workers, config.max_rate_limit_retries, config.max_rate_limit_wait
        )
        self._bucket = TokenBucket(config.requests_per_minute, config.burst, self._clock)
        self._data_bucket = TokenBucket(
            config.data_requests_per_minute, min(config.burst, config.data_requests_per_minute), self._clock
        )
        self._trading: TradingClient | None = None
        self._data: StockHistoricalDataClient | None = None
        self._hub: AccountHub | None = None
        self._order_stream: OrderStream | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._quote_lock: asyncio.Lock | None = None
        self._quote_listeners: dict[str, list[QuoteListener]] = {}
        self._rest_quotes: dict[str, tuple[float, Quote]] = {}
        self._listeners: list[OrderListener] = []
        self._latest: OrderedDict[BrokerOrderId, OrderSnapshot] = OrderedDict()
        self._delivered: OrderedDict[BrokerOrderId, OrderSnapshot] = OrderedDict()
        self._expect: dict[BrokerOrderId, Expectation] = {}
        self._refusals: set[tuple[BrokerOrderId, OrderEventKind]] = set()
        self._started = False
        self._closed = False
        # Watchdog state.
        self.degraded = False
        self._degraded_at_connection = 0
        self._next_poll = 0.0
        self._reconcile = False
        self._disconnected_since: float | None = None
        self._reconnect_backoff = 1.0
        self._next_forced_reconnect = 0.0
        self._random = random.Random()
        # Counters for reports and the benchmark.
        self.stream_events = 0
        self.rest_events = 0
        self.polls = 0
        self.forced_reconnects = 0
        self.silences_detected = 0

    @classmethod
    def from_environment(
        cls, *, live: bool = False, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> AlpacaBroker:
        """An AlpacaBroker configured from APCA_API_* variables (see config.from_environment)."""
        return cls(from_environment(live=live, environ=environ, **overrides))

    def __repr__(self) -> str:
        return (
            f"AlpacaBroker(base_url={self._config.base_url!r}, feed={self._config.feed!r}, "
            f"live={self._config.live})"
        )

    # --- identity and counters -------------------------------------------------------

    @property
    def name(self) -> str:
        return "alpaca-live" if self._config.live else "alpaca"

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def config(self) -> AlpacaConfig:
        return self._config

    @property
    def requests_made(self) -> int:
        """REST requests sent to the trading API and the data API (429 answers included)."""
        return self._transport.requests

    @property
    def rate_limited(self) -> int:
        return self._transport.rate_limited

    @property
    def peak_requests_per_minute(self) -> int:
        """The most trading requests this broker sent within any sliding minute."""
        return self._bucket.peak_per_minute

    @property
    def stream_connected(self) -> bool:
        return self._order_stream is not None and self._order_stream.connected

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the REST clients and the trade_updates stream, and start the watchdog."""
        if self._closed:
            raise RuntimeError("this AlpacaBroker has been closed")
        if self._started:
            return
        config = self._config
        self._transport.open()
        timeout = (config.connect_timeout, config.read_timeout)
        trading = TradingClient(
            config.key_id, config.secret_key, paper=not config.live, url_override=config.base_url
        )
        # alpaca-py retries 429 and 504 three times, 3 s apart, order POSTs included; a 504
        # after the order was stored would then come back as a duplicate. Retries are ours.
        trading._retry = 0
        trading._session.close()
        trading._session = self._transport.session(timeout)
        data = StockHistoricalDataClient(config.key_id, config.secret_key, url_override=config.data_url)
        data._retry = 0
        data._session.close()
        data._session = self._transport.session(timeout)
        self._trading, self._data = trading, data
        self._quote_lock = asyncio.Lock()
        self._started = True
        hub = AccountHub.acquire(config, self._clock)
        self._hub = hub
        self._bucket, self._data_bucket = hub.bucket, hub.data_bucket
        stream = hub.join_orders(self)
        self._order_stream = stream
        if not stream.connected:
            self._disconnected_since = self._clock.monotonic()
        self._watchdog_task = asyncio.create_task(self._watchdog(), name="alpaca-watchdog")
        # Wait (briefly) for the stream, so the first orders' events are not missed; if it
        # does not come up the watchdog polls until it does.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.stream_ack_timeout):
                await stream.first_connection.wait()
        if not stream.connected:
            log.warning(
                "trade_updates stream not connected after %.1fs; polling until it is",
                config.stream_ack_timeout,
            )
        log.info("alpaca broker started base_url=%s feed=%s", config.base_url, config.feed)

    async def close(self) -> None:
        """Stop the streams and the watchdog and close the clients. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        task = self._watchdog_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        hub = self._hub
        if hub is not None:
            hub.leave_orders(self)
            symbols = list(self._quote_listeners)
            self._quote_listeners.clear()
            if symbols:
                await hub.remove_quotes(self._on_quote, symbols)
            await hub.release()
        self._transport.close()
        for client in (self._trading, self._data):
            if client is not None:
                client._session.close()
        log.info("alpaca broker closed requests=%d", self._transport.requests)

    def _client(self) -> TradingClient:
        if self._trading is None or self._closed:
            raise BrokerUnavailableError("the Alpaca broker is not started")
        return self._trading

    def _data_client(self) -> StockHistoricalDataClient:
        if self._data is None or self._closed:
            raise BrokerUnavailableError("the Alpaca broker is not started")
        return self._data

    # --- account ---------------------------------------------------------------------

    async def get_account(self) -> Account:
        client = self._client()
        model = await self._transport.call(self._bucket, Operation.READ, "get account", client.get_account)
        return convert.account(convert.expect(model, TradeAccount))

    async def get_market_clock(self) -> MarketClock:
        """Alpaca's market clock: open now or not, the next open and close."""
        client = self._client()
        model = await self._transport.call(self._bucket, Operation.READ, "get clock", client.get_clock)
        return convert.market_clock(convert.expect(model, AlpacaClock))

    async def get_positions(self) -> Mapping[str, Position]:
        client = self._client()
        models = await self._transport.call(
            self._bucket, Operation.READ, "get positions", client.get_all_positions
        )
        positions = [convert.position(convert.expect(m, AlpacaPosition)) for m in models]
        return {p.symbol: p for p in positions}

    async def get_asset(self, symbol: str) -> Asset | None:
        client = self._client()
        try:
            model = await self._transport.call(
                self._bucket, Operation.READ, f"get asset {symbol}", lambda: client.get_asset(symbol)
            )
        except OrderNotFoundError:
            return None
        return convert.asset(convert.expect(model, AlpacaAsset))

    async def get_assets(self, symbols: Iterable[str]) -> Mapping[str, Asset]:
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            return {}
        if len(wanted) <= ASSET_LIST_THRESHOLD:
            found = await asyncio.gather(*(self.get_asset(s) for s in wanted))
            return {s: a for s, a in zip(wanted, found, strict=True) if a is not None}
        client = self._client()
        request = GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY)
        models: Any = await self._transport.call(
            self._bucket, Operation.READ, "list assets", lambda: client.get_all_assets(request)
        )
        chosen = set(wanted)
        result: dict[str, Asset] = {}
        for model in models:
            if isinstance(model, AlpacaAsset) and model.symbol in chosen:
                result[model.symbol] = convert.asset(model)
        # The list holds active US equities; look the rest up one by one (a few at most).
        missing = [s for s in wanted if s not in result][:MAX_SINGLE_READS]
        if missing:
            found = await asyncio.gather(*(self.get_asset(s) for s in missing))
            result.update({s: a for s, a in zip(missing, found, strict=True) if a is not None})
        return result

    # --- orders ----------------------------------------------------------------------

    async def submit_order(self, request: OrderRequest) -> OrderSnapshot:
        """Send an order under its client order id; an unknown outcome raises UnknownOrderOutcomeError."""
        if len(request.client_order_id) > self._config.client_order_id_max_length:
            raise InvalidOrderError(
                f"client_order_id {request.client_order_id} is longer than "
                f"{self._config.client_order_id_max_length} characters"
            )
        body: dict[str, Any] = {
            "symbol": request.symbol,
            "qty": _wire(request.qty),
            "side": request.side.value,
            "type": request.order_type.value,
            "time_in_force": request.time_in_force.value,
            "client_order_id": str(request.client_order_id),
        }
        if request.limit_price is not None:
            body["limit_price"] = _wire(request.limit_price)
        client = self._client()

        def send() -> OrderSnapshot:
            # Quantities go as decimal strings: alpaca-py's request models hold floats.
            return convert.snapshot(AlpacaOrder(**client.post("/orders", body)))  # type: ignore[arg-type]

        snap = await self._transport.call(
            self._bucket, Operation.SUBMIT, f"submit order cid={request.client_order_id}", send
        )
        self._remember(snap)
        self._expect_event(snap.broker_order_id, Expect.ANY)
        if request.order_type is OrderType.MARKET and not snap.status.is_terminal:
            self._expect_event(snap.broker_order_id, Expect.FINAL, self._config.market_order_expect)
        log.info(
            "alpaca order submitted cid=%s id=%s status=%s",
            snap.client_order_id,
            snap.broker_order_id,
            snap.status.value,
        )
        return snap

    async def cancel_order(self, order_id: BrokerOrderId) -> None:
        client = self._client()
        await self._transport.call(
            self._bucket,
            Operation.CANCEL,
            f"cancel order id={order_id}",
            lambda: _checked_id(order_id, client.cancel_order_by_id),
        )
        self._expect_event(order_id, Expect.FINAL)

    async def replace_order(
        self, order_id: BrokerOrderId, qty: Decimal | None = None, limit_price: Decimal | None = None
    ) -> OrderSnapshot:
        """Replace an open order's quantity and/or limit price; returns the new order.

        The old order ends as replaced (its event arrives on the stream). alpaca-py's
        replace request only takes whole-share quantities, so a fractional qty is refused.
        """
        body: dict[str, Any] = {}
        if qty is not None:
            if qty <= 0 or qty != qty.to_integral_value():
                raise InvalidOrderError(f"replace needs a positive whole-share qty, got {qty}")
            body["qty"] = _wire(qty.to_integral_value())
        if limit_price is not None:
            body["limit_price"] = _wire(limit_price)
        if not body:
            raise InvalidOrderError("replace_order needs qty or limit_price")
        client = self._client()

        def send() -> OrderSnapshot:
            _checked_id(order_id, lambda oid: None)
            return convert.snapshot(AlpacaOrder(**client.patch(f"/orders/{order_id}", body)))

        snap = await self._transport.call(
            self._bucket, Operation.REPLACE, f"replace order id={order_id}", send
        )
        self._remember(snap)
        self._expect_event(order_id, Expect.FINAL)
        self._expect_event(snap.broker_order_id, Expect.ANY)
        return snap

    async def get_order(self, order_id: BrokerOrderId) -> OrderSnapshot:
        snap = await self._read_order(order_id)
        self._observe(snap)
        return snap

    async def _read_order(self, order_id: BrokerOrderId) -> OrderSnapshot:
        client = self._client()
        model = await self._transport.call(
            self._bucket,
            Operation.READ,
            f"get order id={order_id}",
            lambda: _checked_id(order_id, client.get_order_by_id),
        )
        return convert.snapshot(model)

    async def get_order_by_client_id(self, client_order_id: ClientOrderId) -> OrderSnapshot | None:
        client = self._client()
        try:
            model = await self._transport.call(
                self._bucket,
                Operation.READ,
                f"get order cid={client_order_id}",
                lambda: client.get_order_by_client_id(client_order_id),
            )
        except OrderNotFoundError:
            return None
        snap = convert.snapshot(convert.expect(model, AlpacaOrder))
        self._remember(snap)
        self._observe(snap)
        return snap

    async def list_open_orders(self, symbols: Iterable[str] | None = None) -> list[OrderSnapshot]:
        client = self._client()
        wanted = sorted(set(symbols)) if symbols is not None else None
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=POLL_BATCH, symbols=wanted or None)
        models: Any = await self._transport.call(
            self._bucket, Operation.READ, "list open orders", lambda: client.get_orders(request)
        )
        snaps = [convert.snapshot(m) for m in models]
        if wanted is not None:
            snaps = [s for s in snaps if s.symbol in wanted]
        for snap in snaps:
            self._observe(snap)
        return snaps

    def add_order_listener(self, listener: OrderListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    # --- quotes ----------------------------------------------------------------------

    async def subscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        """Stream symbols' quotes to listener (reference-counted per symbol).

        A symbol's first subscriber starts its stream subscription and gets the latest
        quote by one REST request for all new symbols, so it need not wait for a change.
        Raises QuoteStreamError if the stream cannot start.
        """
        hub = self._hub
        if not self._started or self._closed or hub is None or self._quote_lock is None:
            raise QuoteStreamError("the Alpaca broker is not started")
        wanted = list(dict.fromkeys(symbols))
        async with self._quote_lock:
            new = [s for s in wanted if not self._quote_listeners.get(s)]
            for symbol in wanted:
                self._quote_listeners.setdefault(symbol, []).append(listener)
            if not new:
                return
            try:
                await hub.add_quotes(self._on_quote, new)
            except QuoteStreamError:
                for symbol in wanted:
                    self._drop_listener(symbol, listener)
                raise
        # Prime the new symbols with a quote now: one fetched by REST a moment ago (the
        # engine sizes orders from REST quotes just before it subscribes), else one request
        # for all of them.
        now = self._clock.monotonic()
        primed = {}
        for symbol in new:
            fetched = self._rest_quotes.get(symbol)
            if fetched is not None and now - fetched[0] <= self._config.quote_reuse_seconds:
                primed[symbol] = fetched[1]
        missing = [s for s in new if s not in primed]
        if missing:
            try:
                primed.update(await self._latest_quotes(missing))
            except RetryableError as exc:
                log.warning("latest quotes request failed symbols=%d reason=%s", len(missing), exc)
        for quote in primed.values():
            self._fan_out(quote)

    async def unsubscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        hub = self._hub
        if hub is None or self._quote_lock is None or self._closed:
            return
        async with self._quote_lock:
            gone = [s for s in dict.fromkeys(symbols) if self._drop_listener(s, listener)]
            if gone:
                await hub.remove_quotes(self._on_quote, gone)

    def _drop_listener(self, symbol: str, listener: QuoteListener) -> bool:
        """Remove one subscription of listener; True when symbol has no subscriber left."""
        listeners = self._quote_listeners.get(symbol)
        if not listeners:
            return False
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            del self._quote_listeners[symbol]
            return True
        return False

    def _on_quote(self, model: AlpacaQuote) -> None:
        try:
            quote = convert.quote(model)
        except ValueError as exc:
            log.warning("unreadable quote symbol=%s reason=%s", model.symbol, exc)
            return
        self._fan_out(quote)

    def _fan_out(self, quote: Quote) -> None:
        for listener in list(self._quote_listeners.get(quote.symbol, ())):
            listener(quote)

    async def get_quote(self, symbol: str) -> Quote | None:
        """The latest quote by REST, or None if there is none."""
        return (await self._latest_quotes([symbol])).get(symbol)

    async def _latest_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        data = self._data_client()
        feed = DataFeed.SIP if self._config.feed == "sip" else DataFeed.IEX
        request = StockLatestQuoteRequest(symbol_or_symbols=symbols, feed=feed)
        answer: Any = await self._transport.call(
            self._data_bucket,
            Operation.READ,
            f"latest quotes symbols={len(symbols)}",
            lambda: data.get_stock_latest_quote(request),
        )
        result: dict[str, Quote] = {}
        fetched_at = self._clock.monotonic()
        for symbol, model in dict(answer).items():
            if isinstance(model, AlpacaQuote):
                try:
                    result[symbol] = convert.quote(model, symbol)
                except ValueError as exc:
                    log.warning("unreadable quote symbol=%s reason=%s", symbol, exc)
                    continue
                self._rest_quotes[symbol] = (fetched_at, result[symbol])
        return result

    # --- order events: stream, REST observations, the watchdog ------------------------

    async def on_trade_update(self, update: TradeUpdate) -> None:
        """A trade_updates event from the account's shared stream."""
        event = convert.trade_update_event(update)
        if event is None:
            return
        if self._deliver(event):
            self.stream_events += 1
            stream = self._order_stream
            if self.degraded and stream is not None and stream.connections > self._degraded_at_connection:
                self._recovered()

    def on_stream_connect(self, connections: int) -> None:
        """The shared stream (re)connected: after a gap, read the open orders once."""
        self._disconnected_since = None
        if connections > 1:
            # Events sent while the socket was down are lost; read the open orders once.
            self._reconcile = True

    def _remember(self, snap: OrderSnapshot) -> None:
        """Track an order of ours (from a REST answer) without delivering anything."""
        oid = snap.broker_order_id
        current = self._latest.get(oid)
        if current is None or _advances(current, snap):
            self._latest[oid] = snap
            self._latest.move_to_end(oid)
        while len(self._latest) > KNOWN_ORDERS_CAP:
            self._latest.popitem(last=False)

    def _observe(self, snap: OrderSnapshot) -> int:
        """Deliver the events that lead to a state read by REST; returns how many."""
        oid = snap.broker_order_id
        if oid not in self._latest and oid not in self._delivered:
            return 0
        self._remember(snap)
        delivered = 0
        for event in convert.synthesized_events(self._delivered.get(oid), snap):
            if self._deliver(event):
                delivered += 1
        self.rest_events += delivered
        return delivered

    def _deliver(self, event: OrderEvent) -> bool:
        """Pass an event to the listeners unless its state was delivered already."""
        snap = event.order
        oid = snap.broker_order_id
        last = self._delivered.get(oid)
        if event.kind in (OrderEventKind.CANCEL_REJECTED, OrderEventKind.REPLACE_REJECTED):
            # A refusal changes no state; deliver each one once, even after a final state.
            key = (oid, event.kind)
            if key in self._refusals or (last is not None and snap.filled_qty < last.filled_qty):
                return False
            self._refusals.add(key)
        elif last is not None and not _advances(last, snap):
            return False
        self._delivered[oid] = snap
        self._delivered.move_to_end(oid)
        while len(self._delivered) > KNOWN_ORDERS_CAP:
            self._delivered.popitem(last=False)
        self._remember(snap)
        expectation = self._expect.get(oid)
        if expectation is not None and (expectation.kind is Expect.ANY or snap.status.is_terminal):
            del self._expect[oid]
        log.info(
            "order event kind=%s cid=%s status=%s filled=%s",
            event.kind.value,
            snap.client_order_id,
            snap.status.value,
            snap.filled_qty,
        )
        for listener in list(self._listeners):
            listener(event)
        return True

    def _expect_event(self, oid: BrokerOrderId, kind: Expect, within: float | None = None) -> None:
        """Expect the stream to tell about oid soon; the watchdog checks by REST if it does not."""
        delivered = self._delivered.get(oid)
        if delivered is not None and (kind is Expect.ANY or delivered.status.is_terminal):
            return
        current = self._expect.get(oid)
        if current is not None and current.kind is Expect.FINAL and kind is Expect.ANY:
            return
        timeout = within if within is not None else self._config.stream_ack_timeout
        self._expect[oid] = Expectation(kind, self._clock.monotonic() + timeout, timeout)

    def _watched_orders(self) -> list[OrderSnapshot]:
        """Open orders and orders the stream still owes an event: what a poll reads."""
        return [s for oid, s in self._latest.items() if not s.status.is_terminal or oid in self._expect]

    async def _watchdog(self) -> None:
        interval = self._config.watchdog_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self._watch_once()
            except RetryableError as exc:
                log.warning("watchdog poll failed reason=%s", exc)

    async def _watch_once(self) -> None:
        now = self._clock.monotonic()
        stream = self._order_stream
        if stream is not None and not stream.connected:
            if self._disconnected_since is None:
                self._disconnected_since = now
            elif not self.degraded and now - self._disconnected_since > self._config.stream_ack_timeout:
                self._degrade("trade_updates stream disconnected", reconnect=False)
        if self._reconcile:
            self._reconcile = False
            open_orders = self._watched_orders()
            if open_orders:
                found = await self._poll(open_orders)
                log.info("reconciled after reconnect orders=%d events=%d", len(open_orders), found)
            return
        if self.degraded:
            open_orders = self._watched_orders()
            if open_orders and now >= self._next_poll:
                self._next_poll = now + self._config.poll_interval
                await self._poll(open_orders)
            overdue = [e for e in self._expect.values() if e.deadline <= now]
            if overdue and stream is not None and stream.connected:
                await self._force_reconnect()
            return
        overdue_ids = [oid for oid, e in self._expect.items() if e.deadline <= now]
        if not overdue_ids:
            return
        snaps = [self._latest[oid] for oid in overdue_ids if oid in self._latest]
        missing = [oid for oid in overdue_ids if oid not in self._latest]
        for oid in missing:
            self._expect.pop(oid, None)
        found = await self._poll(snaps) if snaps else 0
        if found:
            self.silences_detected += 1
            self._degrade(f"REST showed {found} events the stream did not deliver", reconnect=True)
            await self._force_reconnect()
            return
        for oid in overdue_ids:
            expectation = self._expect.get(oid)
            if expectation is not None:
                expectation.backoff = min(expectation.backoff * 2, 60.0)
                expectation.deadline = now + expectation.backoff

    def _degrade(self, reason: str, *, reconnect: bool) -> None:
        if self.degraded:
            return
        self.degraded = True
        stream = self._order_stream
        self._degraded_at_connection = stream.connections if stream is not None else 0
        self._next_poll = self._clock.monotonic() + self._config.poll_interval
        log.warning("order stream degraded, polling REST reason=%s reconnect=%s", reason, reconnect)

    def _recovered(self) -> None:
        self.degraded = False
        self._reconnect_backoff = 1.0
        log.info("order stream recovered; polling stopped")

    async def _force_reconnect(self) -> None:
        stream = self._order_stream
        if stream is None:
            return
        now = self._clock.monotonic()
        if now < self._next_forced_reconnect:
            return
        delay = self._reconnect_backoff * (0.5 + self._random.random() / 2)
        self._next_forced_reconnect = now + delay + self._config.stream_ack_timeout
        self._reconnect_backoff = min(self._reconnect_backoff * 2, 30.0)
        self.forced_reconnects += 1
        self._degraded_at_connection = stream.connections
        log.warning("reconnecting the trade_updates stream attempt=%d", self.forced_reconnects)
        await stream.drop_connection()

    async def _poll(self, orders: list[OrderSnapshot]) -> int:
        """Read the given orders by REST (one list request, a few single reads) and deliver news."""
        if not orders:
            return 0
        self.polls += 1
        client = self._client()
        since = min(s.created_at for s in orders) - timedelta(seconds=1)
        request = GetOrdersRequest(
            status=QueryOrderStatus.ALL, after=since, limit=POLL_BATCH, direction="asc"
        )
        models: Any = await self._transport.call(
            self._bucket, Operation.READ, "poll orders", lambda: client.get_orders(request)
        )
        seen: set[BrokerOrderId] = set()
        found = 0
        for model in models:
            snap = convert.snapshot(model)
            seen.add(snap.broker_order_id)
            found += self._observe(snap)
        unseen = [s for s in orders if s.broker_order_id not in seen][:MAX_SINGLE_READS]
        for snap in unseen:
            try:
                fresh = await self._read_order(snap.broker_order_id)
            except OrderNotFoundError:
                continue
            found += self._observe(fresh)
        return found


def _advances(last: OrderSnapshot, snap: OrderSnapshot) -> bool:
    """True when snap is news after last (events and reads may arrive out of order)."""
    if snap.filled_qty > last.filled_qty:
        return True
    if snap.filled_qty < last.filled_qty or last.status.is_terminal:
        return False
    if snap.status is last.status:
        return False
    return snap.status.is_terminal or last.status.can_become(snap.status)


def _checked_id(order_id: str, call: Callable[[str], Any]) -> Any:
    """Call with an order id, refusing one that is not a UUID as Alpaca would (404)."""
    try:
        uuid.UUID(str(order_id))
    except ValueError:
        raise OrderNotFoundError(f"order id {order_id} is not an Alpaca order id") from None
    return call(order_id)

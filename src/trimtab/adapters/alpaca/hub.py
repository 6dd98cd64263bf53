"""What the AlpacaBrokers of one account share within one event loop.

Alpaca counts the request budget per account and allows few stream connections per
account (often one data stream). Brokers of the same account on the same loop therefore
share one AccountHub: one token bucket per API, one trade_updates stream whose events go
to every broker, and one stock data stream with per-symbol reference counts. The last
broker to leave closes the streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

from trimtab.adapters.alpaca._sdk import AlpacaQuote, TradeUpdate
from trimtab.adapters.alpaca.config import AlpacaConfig
from trimtab.adapters.alpaca.ratelimit import TokenBucket
from trimtab.adapters.alpaca.streams import OrderStream, QuoteStream
from trimtab.domain.errors import QuoteStreamError
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock

log = get_logger(__name__)

QuoteSink = Callable[[AlpacaQuote], None]
STOP_TIMEOUT = 5.0


class OrderSink(Protocol):
    """A broker listening to the shared trade_updates stream."""

    async def on_trade_update(self, update: TradeUpdate) -> None: ...

    def on_stream_connect(self, connections: int) -> None: ...


class AccountHub:
    """The request budget and the streams of one account on one event loop."""

    _hubs: ClassVar[dict[tuple[int, str, str], AccountHub]] = {}

    def __init__(
        self, key: tuple[int, str, str], loop: asyncio.AbstractEventLoop, config: AlpacaConfig, clock: Clock
    ) -> None:
        self._key = key
        self._loop = loop
        self._config = config
        self._clock = clock
        self.bucket = TokenBucket(config.requests_per_minute, config.burst, clock)
        self.data_bucket = TokenBucket(
            config.data_requests_per_minute, min(config.burst, config.data_requests_per_minute), clock
        )
        self.users = 0
        self._order_sinks: list[OrderSink] = []
        self.order_stream: OrderStream | None = None
        self._order_task: asyncio.Task[None] | None = None
        self.quote_stream: QuoteStream | None = None
        self._quote_task: asyncio.Task[None] | None = None
        self._quote_sinks: dict[str, list[QuoteSink]] = {}
        self._quote_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AccountHub(base_url={self._config.base_url!r}, users={self.users})"

    @classmethod
    def acquire(cls, config: AlpacaConfig, clock: Clock) -> AccountHub:
        """The hub of config's account on the running loop (created on first use)."""
        loop = asyncio.get_running_loop()
        key = (id(loop), config.base_url, config.key_id)
        hub = cls._hubs.get(key)
        if hub is None or hub._loop is not loop:
            hub = cls(key, loop, config, clock)
            cls._hubs[key] = hub
        hub.users += 1
        return hub

    async def release(self) -> None:
        """Leave the hub; the last user closes the streams."""
        self.users -= 1
        if self.users > 0:
            return
        if self._hubs.get(self._key) is self:
            del self._hubs[self._key]
        streams = [s for s in (self.order_stream, self.quote_stream) if s is not None]
        tasks = [t for t in (self._order_task, self._quote_task) if t is not None]
        # Tell the SDK's loops to stop first: on Python 3.11 a cancellation can be lost
        # inside asyncio.wait_for, and the loop must end anyway.
        for stream in streams:
            await stream.request_stop()
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                log.warning("stream task did not stop in time name=%s", task.get_name())
        for stream in streams:
            await stream.shutdown()
        self._order_task = self._quote_task = None
        self.order_stream = None
        self.quote_stream = None

    # --- trade_updates ---

    def join_orders(self, sink: OrderSink) -> OrderStream:
        """Deliver the account's trade updates to sink; starts the stream for the first one."""
        self._order_sinks.append(sink)
        stream = self.order_stream
        if stream is None:
            config = self._config
            stream = OrderStream(
                config.key_id, config.secret_key, config.trading_stream, self._clock, self._on_connect
            )
            stream.subscribe_trade_updates(self._on_update)
            self.order_stream = stream
            self._order_task = asyncio.create_task(stream.run_here(), name="alpaca-trade-updates")
        return stream

    def leave_orders(self, sink: OrderSink) -> None:
        if sink in self._order_sinks:
            self._order_sinks.remove(sink)

    async def _on_update(self, update: TradeUpdate) -> None:
        for sink in list(self._order_sinks):
            await sink.on_trade_update(update)

    def _on_connect(self, connections: int) -> None:
        for sink in list(self._order_sinks):
            sink.on_stream_connect(connections)

    # --- quotes ---

    async def add_quotes(self, sink: QuoteSink, symbols: Iterable[str]) -> None:
        """Stream symbols' quotes to sink. Raises QuoteStreamError if the stream cannot start."""
        async with self._quote_lock:
            wanted = list(dict.fromkeys(symbols))
            new = [s for s in wanted if not self._quote_sinks.get(s)]
            for symbol in wanted:
                self._quote_sinks.setdefault(symbol, []).append(sink)
            if not new:
                return
            try:
                await self._subscribe(new)
            except QuoteStreamError:
                for symbol in wanted:
                    self._drop(symbol, sink)
                raise

    async def remove_quotes(self, sink: QuoteSink, symbols: Iterable[str]) -> None:
        async with self._quote_lock:
            gone = [s for s in dict.fromkeys(symbols) if self._drop(s, sink)]
            stream = self.quote_stream
            if gone and stream is not None:
                await stream.remove_quotes(gone)

    def _drop(self, symbol: str, sink: QuoteSink) -> bool:
        """Remove one subscription of sink; True when symbol has no subscriber left."""
        sinks = self._quote_sinks.get(symbol)
        if not sinks:
            return False
        if sink in sinks:
            sinks.remove(sink)
        if not sinks:
            del self._quote_sinks[symbol]
            return True
        return False

    async def _subscribe(self, symbols: list[str]) -> None:
        stream = self.quote_stream
        if stream is None:
            config = self._config
            stream = QuoteStream(config.key_id, config.secret_key, config.data_stream, config.feed)
            self.quote_stream = stream
        await stream.add_quotes(self._on_quote, symbols)
        if self._quote_task is None:
            self._quote_task = asyncio.create_task(stream.run_here(), name="alpaca-quotes")
        if stream.ready.is_set():
            return
        try:
            async with asyncio.timeout(self._config.quote_stream_start_timeout):
                await stream.ready.wait()
        except TimeoutError:
            reason = stream.failure or "no connection"
            log.warning("quote stream did not start reason=%s", reason)
            await stream.remove_quotes(symbols)
            raise QuoteStreamError(f"the Alpaca quote stream did not start: {reason}") from None

    async def _on_quote(self, model: AlpacaQuote) -> None:
        for sink in list(self._quote_sinks.get(model.symbol, ())):
            sink(model)

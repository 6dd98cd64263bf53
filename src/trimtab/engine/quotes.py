"""The quote service: latest quote per symbol from the stream, REST refresh, validity rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from trimtab.domain.errors import QuoteStreamError, RateLimitedError, RetryableError
from trimtab.domain.quotes import Quote
from trimtab.engine.config import ExecutionConfig
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock
from trimtab.ports.quotes import QuoteFeed

log = get_logger(__name__)

QuoteWatcher = Callable[[Quote], None]

MARKOUT_LINGER = 65.0
"""Seconds a symbol's stream stays open after its last release while quotes are observed
(recorded): long enough to see the market 60 s after the last fill (markouts)."""

MAX_LINGERING = 64
"""At most this many released streams linger at once; the oldest is closed first (brokers
cap the symbols one connection may stream, and each stream costs CPU)."""


class QuoteService:
    """Serves usable quotes to the order algorithms.

    A quote is usable when both sides are positive, it is not crossed, it is fresh and its
    spread is within the limit. A bad or missing quote is refreshed by REST up to
    quote_refresh_attempts times, quote_refresh_interval apart.

    Streams are subscribed per symbol while an order of it is being worked (reference
    counted), never for a whole plan at once: brokers cap the symbols one connection may
    stream. A stream that cannot start is recorded once (stream_error) and the algorithms
    fall back to market orders.

    An observer (see observe) sees every quote the service receives, streamed or fetched,
    and, when a stream closes, its latest quote stamped with the closing time (it still
    held then). While an observer is set, a released stream lingers for `linger` seconds
    (at most `max_lingering` of them), so the market after an order's last fill is
    observed too. Shutdown (stop) closes lingering streams at once.
    """

    def __init__(self, feed: QuoteFeed | None, clock: Clock, config: ExecutionConfig) -> None:
        self._feed = feed
        self._clock = clock
        self._config = config
        self._latest: dict[str, Quote] = {}
        self._watchers: dict[str, list[QuoteWatcher]] = {}
        self._refs: dict[str, int] = {}
        self._observer: QuoteWatcher | None = None
        self._lingering: dict[str, asyncio.Task[None]] = {}
        self.linger = MARKOUT_LINGER
        self.max_lingering = MAX_LINGERING
        self.stream_error: str | None = None if feed is not None else "the broker has no quote feed"

    def observe(self, observer: QuoteWatcher | None) -> None:
        """Pass every quote received from now on to observer (None: to nobody).

        One observer at a time: the journal of the plan being run, which records them.
        """
        self._observer = observer

    @property
    def streaming(self) -> bool:
        return self.stream_error is None

    def retry_stream(self) -> None:
        """Forget a stream failure so the next acquire() tries again (each plan does)."""
        if self._feed is not None:
            self.stream_error = None

    async def acquire(self, symbol: str) -> bool:
        """Stream symbol's quotes while it is worked. False if the stream cannot start."""
        if self._feed is None or self.stream_error is not None:
            return False
        count = self._refs.get(symbol, 0)
        self._refs[symbol] = count + 1
        if count > 0:
            return True
        lingering = self._lingering.pop(symbol, None)
        if lingering is not None:
            lingering.cancel()  # still subscribed: keep the stream
            return True
        try:
            await self._feed.subscribe_quotes([symbol], self._on_quote)
        except (QuoteStreamError, ConnectionError, TimeoutError, OSError, RetryableError) as exc:
            self._refs.pop(symbol, None)
            if self.stream_error is None:
                self.stream_error = f"quote stream could not start: {exc}"
                log.warning("quote stream failed, falling back to market orders reason=%s", exc)
            return False
        return True

    async def release(self, symbol: str) -> None:
        """The end of one acquire(); the last one unsubscribes."""
        count = self._refs.get(symbol, 0)
        if count <= 0:
            return
        if count > 1:
            self._refs[symbol] = count - 1
            return
        del self._refs[symbol]
        if self._observer is None or self.linger <= 0 or self.max_lingering <= 0:
            await self._unsubscribe([symbol])
            return
        if len(self._lingering) >= self.max_lingering:
            oldest = next(iter(self._lingering))
            self._lingering.pop(oldest).cancel()
            await self._unsubscribe([oldest])
        self._lingering[symbol] = asyncio.create_task(self._unsubscribe_later(symbol))

    async def _unsubscribe_later(self, symbol: str) -> None:
        await asyncio.sleep(self.linger)
        if self._lingering.get(symbol) is asyncio.current_task():
            del self._lingering[symbol]
            await self._unsubscribe([symbol])

    async def settle(self) -> None:
        """Wait until every lingering stream has closed, its linger run out."""
        while self._lingering:
            await asyncio.gather(*list(self._lingering.values()), return_exceptions=True)

    async def stop(self) -> None:
        lingering = list(self._lingering.items())
        self._lingering.clear()
        for _, task in lingering:
            task.cancel()
        await asyncio.gather(*(task for _, task in lingering), return_exceptions=True)
        symbols = sorted(set(self._refs) | {symbol for symbol, _ in lingering})
        self._refs.clear()
        await self._unsubscribe(symbols)

    async def _unsubscribe(self, symbols: list[str]) -> None:
        if self._feed is None or not symbols:
            return
        self._mark_end(symbols)
        try:
            await self._feed.unsubscribe_quotes(symbols, self._on_quote)
        except (ConnectionError, TimeoutError, OSError, RetryableError) as exc:
            log.warning("quote unsubscribe failed reason=%s", exc)

    def _mark_end(self, symbols: list[str]) -> None:
        """Tell the observer how long each stream was seen: its latest quote, as of now.

        A stream sends changes only, so without this a quiet market and a closed stream
        look alike in the record; the markouts need to know the quote still held.
        """
        if self._observer is None:
            return
        now = self._clock.now()
        for symbol in symbols:
            latest = self._latest.get(symbol)
            if latest is not None and latest.timestamp < now:
                self._observer(replace(latest, timestamp=now))

    def _on_quote(self, quote: Quote) -> None:
        self._latest[quote.symbol] = quote
        if self._observer is not None:
            self._observer(quote)
        for watcher in self._watchers.get(quote.symbol, ()):
            watcher(quote)

    def watch(self, symbol: str, watcher: QuoteWatcher) -> Callable[[], None]:
        """Call watcher on every streamed quote of symbol; returns the remover."""
        self._watchers.setdefault(symbol, []).append(watcher)

        def remove() -> None:
            watchers = self._watchers.get(symbol, [])
            if watcher in watchers:
                watchers.remove(watcher)

        return remove

    def problem(self, quote: Quote | None) -> str | None:
        if quote is None:
            return "no quote"
        return quote.problem(self._clock.now(), self._config.quote_max_age, self._config.max_spread_bps)

    async def usable(self, symbol: str) -> tuple[Quote | None, str | None]:
        """A usable quote, refreshing a bad one; (None, reason) if it stays bad."""
        quote = self._latest.get(symbol)
        problem = self.problem(quote)
        if problem is None:
            return quote, None
        attempts = self._config.quote_refresh_attempts
        for attempt in range(attempts + 1):
            if attempt > 0:
                await asyncio.sleep(self._config.quote_refresh_interval)
            fresh = await self._fetch(symbol)
            if fresh is not None:
                self._latest[symbol] = fresh
                quote = fresh
                if self._observer is not None:
                    self._observer(fresh)
            problem = self.problem(quote)
            if problem is None:
                return quote, None
        log.warning("no usable quote symbol=%s reason=%s refreshes=%d", symbol, problem, attempts)
        return None, problem

    async def _fetch(self, symbol: str) -> Quote | None:
        if self._feed is None:
            return None
        try:
            return await self._feed.get_quote(symbol)
        except RateLimitedError as exc:
            await asyncio.sleep(exc.retry_after or self._config.quote_refresh_interval)
            return None
        except RetryableError as exc:
            log.warning("quote request failed symbol=%s reason=%s", symbol, exc)
            return None

"""The quote service: latest quote per symbol from the stream, REST refresh, validity rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from trimtab.domain.errors import QuoteStreamError, RateLimitedError, RetryableError
from trimtab.domain.quotes import Quote
from trimtab.engine.config import ExecutionConfig
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock
from trimtab.ports.quotes import QuoteFeed

log = get_logger(__name__)

QuoteWatcher = Callable[[Quote], None]


class QuoteService:
    """Serves usable quotes to the order algorithms.

    A quote is usable when both sides are positive, it is not crossed, it is fresh and its
    spread is within the limit. A bad or missing quote is refreshed by REST up to
    quote_refresh_attempts times, quote_refresh_interval apart.

    Streams are subscribed per symbol while an order of it is being worked (reference
    counted), never for a whole plan at once: brokers cap the symbols one connection may
    stream. A stream that cannot start is recorded once (stream_error) and the algorithms
    fall back to market orders.
    """

    def __init__(self, feed: QuoteFeed | None, clock: Clock, config: ExecutionConfig) -> None:
        self._feed = feed
        self._clock = clock
        self._config = config
        self._latest: dict[str, Quote] = {}
        self._watchers: dict[str, list[QuoteWatcher]] = {}
        self._refs: dict[str, int] = {}
        self.stream_error: str | None = None if feed is not None else "the broker has no quote feed"

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
        await self._unsubscribe([symbol])

    async def stop(self) -> None:
        symbols = sorted(self._refs)
        self._refs.clear()
        await self._unsubscribe(symbols)

    async def _unsubscribe(self, symbols: list[str]) -> None:
        if self._feed is None or not symbols:
            return
        try:
            await self._feed.unsubscribe_quotes(symbols, self._on_quote)
        except (ConnectionError, TimeoutError, OSError, RetryableError) as exc:
            log.warning("quote unsubscribe failed reason=%s", exc)

    def _on_quote(self, quote: Quote) -> None:
        self._latest[quote.symbol] = quote
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

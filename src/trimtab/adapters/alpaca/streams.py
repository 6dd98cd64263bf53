"""alpaca-py's two WebSocket clients, run as tasks on the caller's event loop.

alpaca-py's streams are written to own a thread and an event loop (``run()``) and to be
told about subscriptions from another thread, which blocks on a future. The adapter
runs them as tasks on its own loop instead, so these subclasses add the few hooks it
needs: a callback on every (re)connection, the time of the last message, and
subscription changes that are awaited rather than blocked on. The SDK keeps doing the
wire protocol, the keepalive pings and the reconnection backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from trimtab.adapters.alpaca._sdk import AlpacaQuote, StockDataStream, TradeUpdate, TradingStream
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock

log = get_logger(__name__)
SDK_SOCKET_LOGGERS = ("websockets.client", "websockets.protocol")


class _RedactSecrets(logging.Filter):
    """Scrub the key pair from the websockets library's debug logs of frames (the auth frames)."""

    def __init__(self) -> None:
        super().__init__("trimtab-redact")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(secret in text for secret in self.secrets):
                record.msg = "[frame with credentials redacted]"
                record.args = ()
        return True


_REDACT = _RedactSecrets()
for _name in SDK_SOCKET_LOGGERS:
    logging.getLogger(_name).addFilter(_REDACT)


def redact(*secrets: str) -> None:
    """Keep these strings out of the websockets library's logs."""
    _REDACT.secrets.update(s for s in secrets if len(s) >= 4)


TradeHandler = Callable[[TradeUpdate], Awaitable[None]]
QuoteHandler = Callable[[AlpacaQuote], Awaitable[None]]


class OrderStream(TradingStream):
    """The account's trade_updates stream, with a connection callback and a silence clock."""

    def __init__(
        self,
        key_id: str,
        secret_key: str,
        url: str,
        clock: Clock,
        on_connect: Callable[[int], None],
    ) -> None:
        super().__init__(key_id, secret_key, paper=True, url_override=url)
        redact(key_id, secret_key)
        self._clock = clock
        self._on_connect = on_connect
        self.connections = 0
        self.last_message = clock.monotonic()
        self.first_connection = asyncio.Event()

    def __repr__(self) -> str:
        return f"OrderStream(url={self._endpoint!r}, connections={self.connections})"

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]
        self.connections += 1
        self.last_message = self._clock.monotonic()
        log.info("trade_updates stream connected connections=%d", self.connections)
        self.first_connection.set()
        self._on_connect(self.connections)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        self.last_message = self._clock.monotonic()
        await super()._dispatch(msg)

    async def run_here(self) -> None:
        """Run the SDK's connect/consume/reconnect loop on the running event loop."""
        await self._run_forever()  # type: ignore[no-untyped-call]

    @property
    def connected(self) -> bool:
        return bool(self._running) and self._ws is not None

    async def drop_connection(self) -> None:
        """Close the socket; the SDK's loop notices and reconnects with jittered backoff."""
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def request_stop(self) -> None:
        """Make the SDK's loop end at its next turn, without reconnecting."""
        await self.stop_ws()

    async def shutdown(self) -> None:
        """Stop the SDK's loop and close the socket for good (the owner cancels the task too)."""
        await self.stop_ws()
        await self.close()


class QuoteStream(StockDataStream):
    """The stock data stream, with awaited subscription changes and a readiness event."""

    def __init__(self, key_id: str, secret_key: str, url: str, feed: str) -> None:
        super().__init__(key_id, secret_key, url_override=url)
        redact(key_id, secret_key)
        self._feed_name = feed
        self.ready = asyncio.Event()
        self.failure: str | None = None
        self.connections = 0

    def __repr__(self) -> str:
        return f"QuoteStream(url={self._endpoint!r}, connections={self.connections})"

    async def _start_ws(self) -> None:
        try:
            await super()._start_ws()
        except ValueError as exc:
            self.failure = str(exc)
            raise
        self.connections += 1
        self.failure = None
        self.ready.set()
        log.info("quote stream connected feed=%s connections=%d", self._feed_name, self.connections)

    async def run_here(self) -> None:
        """Run the SDK's connect/consume/reconnect loop on the running event loop."""
        await self._run_forever()

    def symbols(self) -> set[str]:
        return set(self._handlers["quotes"])

    async def add_quotes(self, handler: QuoteHandler, symbols: Iterable[str]) -> None:
        """Subscribe symbols' quotes to handler; sends the subscription if connected."""
        self._ensure_coroutine(handler)
        for symbol in symbols:
            self._handlers["quotes"][symbol] = handler
        if self._running and self._ws is not None:
            await self._send_subscribe_msg()

    async def remove_quotes(self, symbols: Iterable[str]) -> None:
        """Unsubscribe symbols' quotes; sends the unsubscription if connected."""
        gone = [s for s in symbols if s in self._handlers["quotes"]]
        if not gone:
            return
        for symbol in gone:
            del self._handlers["quotes"][symbol]
        if self._running and self._ws is not None:
            await self._send_unsubscribe_msg("quotes", gone)

    async def request_stop(self) -> None:
        """Make the SDK's loop end at its next turn, without reconnecting."""
        await self.stop_ws()

    async def shutdown(self) -> None:
        """Stop the SDK's loop and close the socket for good (the owner cancels the task too)."""
        await self.stop_ws()
        await self.close()

"""The quote feed port: latest top-of-book per symbol, by stream and by REST snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from trimtab.domain.quotes import Quote

QuoteListener = Callable[[Quote], None]


@runtime_checkable
class QuoteFeed(Protocol):
    async def subscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        """Start streaming quotes of symbols to listener. Raises QuoteStreamError if it cannot start."""
        ...

    async def unsubscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        """Stop streaming quotes of symbols to listener."""
        ...

    async def get_quote(self, symbol: str) -> Quote | None:
        """The latest quote by request (REST snapshot), or None if the broker has none."""
        ...

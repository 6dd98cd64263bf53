"""CPU per quote update per working order, on the engine's own path.

A quote stream delivers each update to the QuoteService, which keeps the latest quote,
passes it to the plan's journal (recorded in the ledger, throttled) and to the watcher
of the order working the symbol (the smart ladder's "moved away?" check). This measures
that path per update, with every update a change of the touch (the worst case: each one
is recorded), with and without the ledger.

    python bench/quote_path.py [--updates 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trimtab.adapters.ledger import SqlLedger
from trimtab.domain.orders import OrderRequest, OrderType, Side, make_client_order_id
from trimtab.domain.quotes import Quote
from trimtab.engine.algos import moved_away
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.journal import Journal
from trimtab.engine.quotes import QuoteService

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


class _Clock:
    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return 0.0


class _Feed:
    """A quote feed that hands its listener to the caller."""

    def __init__(self) -> None:
        self.listener: Callable[[Quote], None] | None = None

    async def subscribe_quotes(self, symbols: Iterable[str], listener: Callable[[Quote], None]) -> None:
        self.listener = listener

    async def unsubscribe_quotes(self, symbols: Iterable[str], listener: Callable[[Quote], None]) -> None:
        self.listener = None

    async def get_quote(self, symbol: str) -> Quote | None:
        return None


def measure(updates: int, with_ledger: bool) -> float:
    """Microseconds of CPU per quote update."""
    feed = _Feed()
    clock = _Clock()
    config = ExecutionConfig()
    service = QuoteService(feed, clock, config)
    ledger = SqlLedger("sqlite://") if with_ledger else None
    journal = Journal(ledger, "speed", clock, clock, "bench", 30.0)
    if ledger is not None:
        ledger.begin_plan("speed", "h", "{}", None, "bench", now=T0, lease_ttl=timedelta(seconds=30))
    request = OrderRequest(make_client_order_id("speed", "IBM", 0), "IBM", Side.BUY, Decimal(100),
                           OrderType.LIMIT, Decimal("182.50"))
    asyncio.run(journal.intent(request, 0, Quote("IBM", Decimal("182.50"), Decimal("182.53"), Decimal(200),
                                                 Decimal(300), T0)))
    service.observe(journal.quote_observer)
    limit = Decimal("182.51")
    threshold = config.repeg_threshold_bps
    woken = 0

    def on_quote(quote: Quote) -> None:  # what SmartAlgorithm._rest watches
        nonlocal woken
        if moved_away(quote, Side.BUY, limit, threshold):
            woken += 1

    asyncio.run(service.acquire("IBM"))
    service.watch("IBM", on_quote)
    listener = feed.listener
    assert listener is not None
    bids = [Decimal("182.49"), Decimal("182.50")]
    quotes = [
        Quote("IBM", bids[i % 2], Decimal("182.53"), Decimal(200), Decimal(300),
              T0 + timedelta(milliseconds=500 * i))
        for i in range(updates)
    ]
    started = time.process_time()
    for quote in quotes:
        listener(quote)
    if ledger is not None:
        ledger.flush()
    elapsed = time.process_time() - started
    if ledger is not None:
        ledger.close()
    return elapsed / updates * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--updates", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"{'ledger':>6} {'updates':>8} {'us/update':>9}")
    for with_ledger in (False, True):
        cost = measure(args.updates, with_ledger)
        print(f"{'on' if with_ledger else 'off':>6} {args.updates:>8} {cost:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

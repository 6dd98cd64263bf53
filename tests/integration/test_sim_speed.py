"""The simulated exchange stays cheap with a thousand symbols.

A symbol without resting orders is not simulated between looks: it jumps. Streamed and
working symbols are simulated event by event. Bounds are generous (CI machines are slow
and shared); typical figures are in the comments.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from trimtab.adapters.sim import SimBroker, run_virtual
from trimtab.domain.orders import ClientOrderId, OrderRequest, OrderType, Side
from trimtab.domain.quotes import Quote

SYMBOLS = [f"S{i:04d}" for i in range(1000)]


def test_a_thousand_market_orders_and_a_long_jump() -> None:
    broker = SimBroker(seed=2, cash=Decimal(10_000_000), request_budget=100_000)

    async def one(i: int, symbol: str) -> None:
        quote = await broker.get_quote(symbol)
        assert quote is not None
        qty = Decimal(max(1, int(Decimal(5000) / quote.ask)))
        await broker.submit_order(
            OrderRequest(ClientOrderId(f"m{i}"), symbol, Side.BUY, qty, OrderType.MARKET)
        )

    async def main() -> int:
        await asyncio.gather(*(one(i, s) for i, s in enumerate(SYMBOLS)))
        await asyncio.sleep(3600)  # an hour later every symbol jumps to its new quote
        positions = await broker.get_positions()
        await broker.get_account()
        return len(positions)

    started = time.process_time()
    assert run_virtual(main()) == 1000
    assert time.process_time() - started < 6.0  # typically ~1 s


def test_a_thousand_streamed_symbols_with_resting_orders() -> None:
    broker = SimBroker(seed=2, cash=Decimal(100_000_000), request_budget=100_000)
    quotes: list[Quote] = []

    async def one(i: int, symbol: str) -> None:
        quote = await broker.get_quote(symbol)
        assert quote is not None
        qty = Decimal(max(1, int(Decimal(20000) / quote.bid)))
        await broker.submit_order(
            OrderRequest(ClientOrderId(f"l{i}"), symbol, Side.BUY, qty, OrderType.LIMIT, quote.bid)
        )

    async def main() -> int:
        await broker.subscribe_quotes(SYMBOLS, quotes.append)
        await asyncio.gather(*(one(i, s) for i, s in enumerate(SYMBOLS)))
        await asyncio.sleep(60)
        return len(await broker.list_open_orders())

    started = time.process_time()
    still_open = run_virtual(main())
    assert time.process_time() - started < 10.0  # typically ~2 s
    assert 0 < still_open < 500
    assert len(quotes) > 40_000

"""Brokers of one account on one loop share its request budget and its streams."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from tests.contract.venues import KEY_ID, alpaca_config, sandbox_for
from trimtab.adapters.alpaca import AlpacaBroker
from trimtab.domain.orders import ClientOrderId, OrderEvent, OrderRequest, OrderStatus, OrderType, Side
from trimtab.domain.quotes import Quote


def test_two_brokers_share_one_stream_and_one_budget() -> None:
    with sandbox_for({"cash": "10000"}) as handle:

        async def main() -> None:
            first, second = AlpacaBroker(alpaca_config(handle)), AlpacaBroker(alpaca_config(handle))
            seen_first: list[OrderEvent] = []
            seen_second: list[OrderEvent] = []
            first.add_order_listener(seen_first.append)
            second.add_order_listener(seen_second.append)
            await first.start()
            await second.start()
            try:
                assert first._hub is second._hub
                assert first._bucket is second._bucket
                for _ in range(100):  # the server registers the connection just after authorizing it
                    if handle.call(lambda: len(handle.account(KEY_ID).subscribers)) == 1:
                        break
                    await asyncio.sleep(0.02)
                assert len(handle.account(KEY_ID).subscribers) == 1
                quotes: list[Quote] = []
                await first.subscribe_quotes(["SPY"], quotes.append)
                await second.subscribe_quotes(["SPY"], quotes.append)
                request = OrderRequest(
                    ClientOrderId(f"sh-{uuid.uuid4().hex[:8]}"), "IBM", Side.BUY, Decimal(2), OrderType.MARKET
                )
                snap = await first.submit_order(request)
                for _ in range(200):
                    done = [e for e in seen_second if e.order.status is OrderStatus.FILLED]
                    if done and any(e.order.status is OrderStatus.FILLED for e in seen_first):
                        break
                    await asyncio.sleep(0.02)
                assert done[0].order.broker_order_id == snap.broker_order_id
                await second.unsubscribe_quotes(["SPY"], quotes.append)
                await second.close()
                # The first broker keeps its stream and its quotes.
                assert first.stream_connected
                hub = first._hub
                assert hub is not None
                assert hub.quote_stream is not None
                assert "SPY" in hub.quote_stream.symbols()
            finally:
                await second.close()
                await first.close()
            assert first._hub is not None
            assert first._hub.users == 0

        asyncio.run(main())

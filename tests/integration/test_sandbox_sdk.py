"""alpaca-py's own clients (not trimtab's adapter) against the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from trimtab.adapters.alpaca._sdk import (
    AlpacaOrderStatus as OrderStatus,
)
from trimtab.adapters.alpaca._sdk import (
    AlpacaQuote,
    APIError,
    ClosePositionRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    OrderSide,
    QueryOrderStatus,
    ReplaceOrderRequest,
    StockDataStream,
    StockHistoricalDataClient,
    StockLatestQuoteRequest,
    TradeUpdate,
    TradingClient,
    TradingStream,
)
from trimtab.adapters.alpaca._sdk import (
    AlpacaTimeInForce as TimeInForce,
)
from trimtab.adapters.sandbox import AccountConfig, SandboxHandle, start_sandbox

KEY, SECRET = "PKSDK1", "sdk-secret-1"
KEY2, SECRET2 = "PKSDK2", "sdk-secret-2"
ACCOUNTS = [
    AccountConfig(
        key_id=KEY, secret_key=SECRET, name="one", account={"cash": "50000", "positions": {"SPY": "40"}}
    ),
    AccountConfig(key_id=KEY2, secret_key=SECRET2, name="two", account={"cash": "1234.56"}),
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    handle = start_sandbox(ACCOUNTS, speed=20.0, seed=3)
    try:
        yield handle
    finally:
        handle.stop()


@contextlib.contextmanager
def client(handle: SandboxHandle, key: str = KEY, secret: str = SECRET) -> Iterator[TradingClient]:
    trading = TradingClient(key, secret, paper=True, url_override=handle.url)
    trading._retry = 0
    try:
        yield trading
    finally:
        trading._session.close()


def new_cid() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


def test_submit_read_back_and_position(sandbox: SandboxHandle) -> None:
    with client(sandbox) as trading:
        cid = new_cid()
        order: Any = trading.submit_order(
            MarketOrderRequest(
                symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id=cid
            )
        )
        assert order.client_order_id == cid
        assert order.symbol == "AAPL"
        for _ in range(200):
            found: Any = trading.get_order_by_client_id(cid)
            if found.status == OrderStatus.FILLED:
                break
        assert found.id == order.id
        assert found.status == OrderStatus.FILLED
        assert Decimal(str(found.filled_qty)) == 3
        assert found.filled_avg_price is not None
        position: Any = trading.get_open_position("AAPL")
        assert Decimal(position.qty) == 3
        assert position.symbol == "AAPL"
        closed: Any = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=["AAPL"]))
        assert order.id in [o.id for o in closed]
        same: Any = trading.get_order_by_id(order.id)
        assert same.client_order_id == cid


def test_trade_updates_stream_delivers_the_order_events(sandbox: SandboxHandle) -> None:
    async def scenario() -> list[TradeUpdate]:
        updates: list[TradeUpdate] = []
        done = asyncio.Event()
        cid = new_cid()

        async def on_update(update: TradeUpdate) -> None:
            if update.order.client_order_id == cid:
                updates.append(update)
                if (
                    str(update.event) in ("fill", "TradeEvent.FILL")
                    or update.order.status == OrderStatus.FILLED
                ):
                    done.set()

        stream = TradingStream(KEY, SECRET, paper=True, url_override=sandbox.stream_url)
        stream.subscribe_trade_updates(on_update)
        task = asyncio.create_task(stream._run_forever())  # type: ignore[no-untyped-call]
        try:
            for _ in range(200):
                if sandbox.account(KEY).subscribers and all(
                    s.listening for s in sandbox.account(KEY).subscribers
                ):
                    break
                await asyncio.sleep(0.01)
            with client(sandbox) as trading:
                request = MarketOrderRequest(
                    symbol="MSFT",
                    qty=2,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.DAY,
                    client_order_id=cid,
                )
                await asyncio.to_thread(trading.submit_order, request)
                async with asyncio.timeout(10):
                    await done.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await stream.close()
        return updates

    updates = asyncio.run(scenario())
    events = [u.event.value if hasattr(u.event, "value") else str(u.event) for u in updates]
    assert events[0] == "new"
    assert events[-1] == "fill"
    fill = updates[-1]
    assert fill.qty is not None
    assert Decimal(str(fill.qty)) == 2
    assert fill.price is not None
    assert fill.position_qty is not None
    assert fill.execution_id is not None


def test_quotes_by_rest_and_by_stream(sandbox: SandboxHandle) -> None:
    data = StockHistoricalDataClient(KEY, SECRET, url_override=sandbox.url)
    try:
        latest: Any = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=["SPY", "QQQ"]))
    finally:
        data._session.close()
    assert set(latest) == {"SPY", "QQQ"}
    assert 0 < latest["SPY"].bid_price < latest["SPY"].ask_price

    async def scenario() -> list[AlpacaQuote]:
        quotes: list[AlpacaQuote] = []
        got = asyncio.Event()

        async def on_quote(quote: AlpacaQuote | dict[Any, Any]) -> None:
            assert isinstance(quote, AlpacaQuote)
            quotes.append(quote)
            if len(quotes) >= 3:
                got.set()

        stream = StockDataStream(KEY, SECRET, url_override=sandbox.data_stream_url("iex"))
        stream.subscribe_quotes(on_quote, "SPY")
        task = asyncio.create_task(stream._run_forever())
        try:
            async with asyncio.timeout(10):
                await got.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await stream.close()
        return quotes

    quotes = asyncio.run(scenario())
    assert all(q.symbol == "SPY" and q.bid_price > 0 and q.timestamp.tzinfo is not None for q in quotes)


def test_replace_cancel_and_close_position(sandbox: SandboxHandle) -> None:
    with client(sandbox) as trading:
        resting: Any = trading.submit_order(
            LimitOrderRequest(
                symbol="SPY",
                qty=5,
                side=OrderSide.SELL,
                time_in_force=TimeInForce.DAY,
                limit_price=999.0,
                client_order_id=new_cid(),
            )
        )
        for _ in range(100):
            if trading.get_order_by_id(resting.id).status == OrderStatus.NEW:  # type: ignore[union-attr]
                break
        new: Any = trading.replace_order_by_id(resting.id, ReplaceOrderRequest(limit_price=998.0))
        assert new.id != resting.id
        assert new.replaces == resting.id
        assert Decimal(str(new.limit_price)) == Decimal("998")
        for _ in range(100):
            old: Any = trading.get_order_by_id(resting.id)
            if old.status == OrderStatus.REPLACED:
                break
        assert old.status == OrderStatus.REPLACED
        assert old.replaced_by == new.id
        for _ in range(100):
            if trading.get_order_by_id(new.id).status == OrderStatus.NEW:  # type: ignore[union-attr]
                break
        cancels: Any = trading.cancel_orders()
        assert [c.id for c in cancels] == [new.id]
        for _ in range(100):
            if trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []:
                break
        assert trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []
        before = Decimal(trading.get_open_position("SPY").qty)  # type: ignore[union-attr]
        order: Any = trading.close_position("SPY", ClosePositionRequest(percentage="25"))
        assert Decimal(str(order.qty)) == before / 4
        assert order.side == OrderSide.SELL


def test_errors_keep_alpacas_shape(sandbox: SandboxHandle) -> None:
    with client(sandbox, KEY, "wrong") as bad, pytest.raises(APIError) as refused:
        bad.get_account()
    assert refused.value.status_code == 401
    assert refused.value.response.json() == {"message": "unauthorized."}
    with client(sandbox, KEY2, SECRET2) as trading:
        assert trading.get_account().cash == "1234.56"  # type: ignore[union-attr]
        with pytest.raises(APIError) as poor:
            trading.submit_order(
                MarketOrderRequest(symbol="IBM", qty=1000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
            )
        assert poor.value.status_code == 403
        assert poor.value.code == 40310000
        with pytest.raises(APIError) as short:
            trading.submit_order(
                MarketOrderRequest(symbol="IBM", qty=1, side=OrderSide.SELL, time_in_force=TimeInForce.DAY)
            )
        assert short.value.status_code == 403
        assert short.value.response.json()["available"] == "0"
        cid = new_cid()
        trading.submit_order(
            MarketOrderRequest(
                symbol="IBM", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id=cid
            )
        )
        with pytest.raises(APIError) as duplicate:
            trading.submit_order(
                MarketOrderRequest(
                    symbol="IBM",
                    qty=1,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.DAY,
                    client_order_id=cid,
                )
            )
        assert duplicate.value.status_code == 422
        assert duplicate.value.code == 40010001
        with pytest.raises(APIError) as missing:
            trading.get_order_by_id(str(uuid.uuid4()))
        assert missing.value.status_code == 404
        assert missing.value.code == 40410000
        with pytest.raises(APIError) as no_position:
            trading.get_open_position("TSLA")
        assert no_position.value.status_code == 404
        response = trading._session.get(
            f"{sandbox.url}/v2/clock", headers={"APCA-API-KEY-ID": KEY2, "APCA-API-SECRET-KEY": SECRET2}
        )
        assert int(response.headers["X-Ratelimit-Limit"]) == 200
        assert 0 <= int(response.headers["X-Ratelimit-Remaining"]) < 200
        assert int(response.headers["X-Ratelimit-Reset"]) > 0


def test_notional_order_echoes_the_amount(sandbox: SandboxHandle) -> None:
    with client(sandbox) as trading:
        order: Any = trading.submit_order(
            MarketOrderRequest(
                symbol="QQQ", notional=500.5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
        assert order.notional == "500.5"
        assert order.qty is None


def test_request_budget_answers_429_with_headers() -> None:
    accounts = [AccountConfig(key_id=KEY, secret_key=SECRET)]
    handle = start_sandbox(accounts, speed=20.0, requests_per_minute=5)
    try:
        with client(handle) as trading:
            for _ in range(5):
                trading.get_clock()
            with pytest.raises(APIError) as limited:
                trading.get_clock()
        assert limited.value.status_code == 429
        assert limited.value.code == 42910000
        headers = limited.value.response.headers
        assert headers["X-Ratelimit-Remaining"] == "0"
        assert int(headers["X-Ratelimit-Reset"]) > 0
        stats = handle.stats()[0]
        assert stats["refused"] == 1
        assert stats["peak_per_minute"] == 5
    finally:
        handle.stop()


def test_admin_endpoint_sets_faults(sandbox: SandboxHandle) -> None:
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    with requests.Session() as session:
        refused = session.get(f"{sandbox.url}/_sandbox/faults")
        assert refused.status_code == 401
        answer = session.post(
            f"{sandbox.url}/_sandbox/faults", json={"stale_quotes_seconds": 30}, headers=headers
        )
        assert answer.status_code == 200
        assert answer.json()["stale_quotes_seconds"] == 30
        bad = session.post(f"{sandbox.url}/_sandbox/faults", json={"nonsense": 1}, headers=headers)
        assert bad.status_code == 422
        session.post(f"{sandbox.url}/_sandbox/faults", json={"stale_quotes_seconds": 0}, headers=headers)
        stats = session.get(f"{sandbox.url}/_sandbox/stats", headers=headers).json()
        assert [a["name"] for a in stats["accounts"]] == ["one", "two"]

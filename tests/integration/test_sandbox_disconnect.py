"""Stream clients that go away abruptly (no close frame, as when their process is killed).

The sandbox ends such a connection quietly (no error record, no traceback), releases what
it held for it (the trade_updates subscriber, the data stream's quotes and tasks) and serves
the next clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect

from trimtab.adapters.sandbox import AccountConfig, SandboxHandle, running_sandbox

KEY, SECRET = "PKDROP", "drop-secret"
ACCOUNTS = [AccountConfig(key_id=KEY, secret_key=SECRET, name="drop", account={"cash": "50000"})]
DROPS = 8
"""Clients dropped per case. Each drop races the server's answer to what the client sent
just before; the server loses most races, so each case meets a send to a gone client."""
SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT"]


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(ACCOUNTS, speed=20.0, seed=5, quote_interval=0.0) as handle:
        yield handle


def loop_tasks(handle: SandboxHandle) -> int:
    return handle.call(lambda: len(asyncio.all_tasks()))


async def drop(ws: ClientConnection) -> None:
    """Go away like a killed client: reset the TCP connection, with no close frame."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()
    await ws.wait_closed()  # the socket is closed (and the reset sent) on the next loop turn


async def open_stream(url: str, **options: Any) -> ClientConnection:
    return await connect(url, ping_interval=None, open_timeout=5, **options)


async def trade_client(handle: SandboxHandle, **options: Any) -> ClientConnection:
    ws = await open_stream(handle.stream_url, **options)
    await ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET}))
    assert json.loads(await ws.recv())["data"]["status"] == "authorized"
    return ws


async def listen(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    assert json.loads(await ws.recv()) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}


async def recv_data(ws: ClientConnection) -> list[dict[str, Any]]:
    """The next data stream frame: a msgpack list of messages."""
    frame = await ws.recv()
    assert isinstance(frame, bytes)
    messages = msgpack.unpackb(frame)
    assert isinstance(messages, list)
    return messages


async def data_client(handle: SandboxHandle) -> ClientConnection:
    ws = await open_stream(handle.data_stream_url("iex"))
    assert await recv_data(ws) == [{"T": "success", "msg": "connected"}]
    await ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
    assert await recv_data(ws) == [{"T": "success", "msg": "authenticated"}]
    return ws


async def next_data(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        for message in await recv_data(ws):
            if message["T"] == kind:
                return message


async def serves_new_clients(handle: SandboxHandle) -> None:
    """Both streams still answer a new client in full, and it can close normally."""
    trade = await trade_client(handle)
    await listen(trade)
    data = await data_client(handle)
    await data.send(msgpack.packb({"action": "subscribe", "quotes": ["SPY"]}))
    assert (await next_data(data, "subscription"))["quotes"] == ["SPY"]
    quote = await next_data(data, "q")
    assert quote["S"] == "SPY"
    assert 0 < quote["bp"] < quote["ap"]
    await trade.close()
    await data.close()


def assert_released(handle: SandboxHandle, tasks_before: int) -> None:
    """No connection left on the account and no task left on the sandbox's loop."""
    deadline = time.monotonic() + 2.0
    while True:
        stats = handle.stats()[0]
        tasks = loop_tasks(handle)
        if stats["stream_connections"] == 0 and stats["data_connections"] == 0 and tasks <= tasks_before:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"connections or tasks left: {stats=} {tasks=} {tasks_before=}")
        time.sleep(0.01)


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    assert "Traceback" not in caplog.text


def leaves_it_serving(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture, scenario: Callable[[], Awaitable[None]]
) -> None:
    """Run the clients of scenario, then check: every connection and task released, a new
    client served in full, and nothing logged as an error."""
    tasks_before = loop_tasks(sandbox)

    async def then_serving() -> None:
        await scenario()
        await asyncio.to_thread(assert_released, sandbox, tasks_before)
        await serves_new_clients(sandbox)

    asyncio.run(then_serving())
    assert_released(sandbox, tasks_before)
    assert_quiet(caplog)


def test_trade_updates_clients_dropping_mid_answer(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        for _ in range(DROPS):
            ws = await open_stream(sandbox.stream_url)
            await ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET}))
            await drop(ws)
            ws = await trade_client(sandbox)
            await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            await drop(ws)

    leaves_it_serving(sandbox, caplog, scenario)


def test_trade_updates_client_dropping_while_updates_are_sent(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """The client stops reading, the server's writes back up, then the client goes away."""
    pad = os.urandom(30_000).hex()  # random, so that compression keeps it large
    frame = json.dumps({"stream": "trade_updates", "data": {"event": "pad", "pad": pad}}).encode()

    def queue_frames() -> int:
        (subscriber,) = sandbox.account(KEY).subscribers
        for _ in range(20):
            subscriber.queue.put_nowait(frame)
        return subscriber.queue.qsize()

    def backlog() -> int:
        (subscriber,) = sandbox.account(KEY).subscribers
        return subscriber.queue.qsize()

    async def scenario() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", sandbox.port))
        sock.setblocking(False)
        ws = await trade_client(sandbox, sock=sock, max_queue=1)
        await listen(ws)
        for _ in range(100):
            await asyncio.to_thread(sandbox.call, queue_frames)
            await asyncio.sleep(0.02)
            if await asyncio.to_thread(sandbox.call, backlog):
                break  # the server's writer waits for the transport to drain
        else:
            raise AssertionError("the server never waited to write")
        await drop(ws)

    leaves_it_serving(sandbox, caplog, scenario)


def test_data_stream_clients_dropping_mid_answer_and_mid_quotes(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        for _ in range(DROPS):
            ws = await open_stream(sandbox.data_stream_url("iex"))
            await ws.recv()
            await ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
            await drop(ws)
            ws = await data_client(sandbox)
            await ws.send(msgpack.packb({"action": "subscribe", "quotes": SYMBOLS}))
            await drop(ws)
            ws = await data_client(sandbox)
            await ws.send(msgpack.packb({"action": "subscribe", "quotes": SYMBOLS}))
            await next_data(ws, "q")
            await drop(ws)

    leaves_it_serving(sandbox, caplog, scenario)


def test_clients_closing_normally(sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        for _ in range(3):
            trade = await trade_client(sandbox)
            await listen(trade)
            data = await data_client(sandbox)
            await data.send(msgpack.packb({"action": "subscribe", "quotes": SYMBOLS}))
            await next_data(data, "q")
            await trade.close()
            await data.close()

    leaves_it_serving(sandbox, caplog, scenario)

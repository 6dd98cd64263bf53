"""Running the sandbox: serve() in the foreground, start_sandbox() on a background thread.

The server runs on uvicorn over a SpeedLoop (the market runs `speed` times faster than
real time; the request budget, stream timeouts and wire timestamps stay in real time).
It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

import uvicorn

from trimtab.adapters.clock import SystemClock
from trimtab.adapters.sandbox.accounts import AccountConfig, SandboxAccount, new_exchange
from trimtab.adapters.sandbox.app import AppOptions, FaultState, SandboxApp
from trimtab.adapters.sandbox.clock import SpeedLoop, WireClock
from trimtab.adapters.sandbox.faults import Faults
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.state import session_start
from trimtab.adapters.sim.trading_calendar import NEW_YORK
from trimtab.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

DEFAULT_PORT = 8473
SHUTDOWN_GRACE = 2.0
"""Real seconds open connections get to finish when the server stops."""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How the sandbox runs. Durations are real seconds."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    speed: float = 1.0
    seed: int = 0
    requests_per_minute: int = 200
    latency: float = 0.02
    """One-way latency of the simulated exchange, in market seconds."""
    client_order_id_max_length: int = 128
    quote_interval: float = 0.02
    market_date: date | None = None
    """The simulated trading day (its 10:00 New York is where the market starts); default today."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be positive, got {self.speed}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")


class _Server(uvicorn.Server):
    """uvicorn's server with a hook when it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class Sandbox:
    """The sandbox's state on its event loop: accounts, faults, the app and the server."""

    def __init__(
        self, accounts: Sequence[AccountConfig], config: SandboxConfig, faults: Faults | None
    ) -> None:
        if not accounts:
            raise ValueError("the sandbox needs at least one account")
        self.configs = list(accounts)
        self.config = config
        self.fault_state = FaultState(faults.model_copy() if faults is not None else Faults())
        self.accounts: list[SandboxAccount] = []
        self.app: SandboxApp | None = None
        self._server: _Server | None = None
        self._system = SystemClock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def _market_start(self) -> datetime:
        """10:00 New York of the market date (today by default; the next trading day when
        that is a weekend or a holiday).

        The market opens when the sandbox starts, whatever the real hour: wire times are
        real times (see WireClock), so clients see a market that is open from now on.
        """
        day = self.config.market_date or self._system.now().astimezone(NEW_YORK).date()
        return session_start(day)

    async def open(self) -> SandboxApp:
        """Create and start every account's exchange; returns the app."""
        self.loop = asyncio.get_running_loop()
        start = self._market_start()
        for number, account_config in enumerate(self.configs, start=1):
            exchange = new_exchange(
                account_config, seed=self.config.seed, start=start, latency=self.config.latency
            )
            wire_clock = WireClock(self.config.speed, self._system)
            account = SandboxAccount(
                account_config,
                exchange,
                wire_clock,
                lambda: self.fault_state.faults,
                self._system,
                requests_per_minute=self.config.requests_per_minute,
                number=number,
            )
            await account.start()
            wire_clock.anchor(exchange.clock.now())
            self.accounts.append(account)
        options = AppOptions(
            speed=self.config.speed,
            client_order_id_max_length=self.config.client_order_id_max_length,
            quote_interval=self.config.quote_interval,
        )
        self.app = SandboxApp(self.accounts, self.fault_state, options)
        return self.app

    async def close(self) -> None:
        for account in self.accounts:
            await account.close()

    async def run(self, sock: socket.socket, on_started: Callable[[], None]) -> None:
        """Serve on sock until stop() is called."""
        app = await self.open()
        speed = self.config.speed
        uv_config = uvicorn.Config(
            app.build(),
            ws="websockets-sansio",
            http="h11",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=max(5, int(5 * speed)),
            timeout_graceful_shutdown=max(1, int(SHUTDOWN_GRACE * speed)),
            ws_ping_interval=None,
            ws_ping_timeout=None,
        )
        server = _Server(uv_config, on_started)
        self._server = server
        chaos = asyncio.create_task(self._disconnect_every())
        try:
            await server.serve(sockets=[sock])
        finally:
            chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos
            await self.close()

    def stop(self) -> None:
        """Ask the server to stop (call on the sandbox's loop)."""
        for account in self.accounts:
            account.disconnect_streams()
        if self._server is not None:
            self._server.should_exit = True

    async def _disconnect_every(self) -> None:
        assert self.app is not None
        last = self._system.monotonic()
        while True:
            await asyncio.sleep(0.25 * self.config.speed)
            every = self.fault_state.faults.stream_disconnect_every
            now = self._system.monotonic()
            if every > 0 and now - last >= every:
                last = now
                self.app.disconnect_all()
            elif every <= 0:
                last = now


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _run_loop(sandbox: Sandbox, sock: socket.socket, on_started: Callable[[], None]) -> None:
    loop = SpeedLoop(sandbox.config.speed)
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(sandbox.run(sock, on_started))
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            sock.close()


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    accounts: Sequence[AccountConfig] = (),
    speed: float = 1.0,
    faults: Faults | None = None,
    seed: int = 0,
    *,
    on_started: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve the sandbox in the foreground until interrupted (Ctrl-C / SIGTERM).

    options are further SandboxConfig fields (requests_per_minute, latency,
    client_order_id_max_length, quote_interval, market_date).
    """
    config = SandboxConfig(host=host, port=port, speed=speed, seed=seed, **options)
    sandbox = Sandbox(accounts, config, faults)
    sock = bind_socket(host, port)
    url = _url(host, sock.getsockname()[1])

    def started() -> None:
        log.info("sandbox listening url=%s accounts=%d speed=%s", url, len(sandbox.accounts), speed)
        if on_started is not None:
            on_started(url)

    with _sigterm_interrupts():
        try:
            _run_loop(sandbox, sock, started)
        except KeyboardInterrupt:
            log.warning("sandbox stopped url=%s", url)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Let SIGTERM end serve() like Ctrl-C does (uvicorn re-raises the signal it caught)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class SandboxHandle:
    """A sandbox running on a background thread. Stop it with stop() (or use it as a context manager)."""

    def __init__(self, sandbox: Sandbox, thread: threading.Thread, url: str) -> None:
        self._sandbox = sandbox
        self._thread = thread
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def __repr__(self) -> str:
        return f"SandboxHandle(url={self.url!r}, accounts={len(self._sandbox.configs)})"

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stream_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/stream"

    def data_stream_url(self, feed: str = "iex") -> str:
        return "ws" + self.url.removeprefix("http") + f"/v2/{feed}"

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run fn on the sandbox's loop (awaiting it if it returns an awaitable); return its result."""
        loop = self._sandbox.loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the sandbox is not running")

        async def run() -> T:
            result: Any = fn()
            if inspect.isawaitable(result):
                result = await result
            return result  # type: ignore[no-any-return]

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("the sandbox did not answer in time") from None

    def exchange(self, key_id: str) -> SimBroker:
        """The SimBroker of an account (use it only through call())."""
        for account in self._sandbox.accounts:
            if account.config.key_id == key_id:
                return account.exchange
        raise KeyError("no sandbox account with that key id")

    def account(self, key_id: str) -> SandboxAccount:
        for account in self._sandbox.accounts:
            if account.config.key_id == key_id:
                return account
        raise KeyError("no sandbox account with that key id")

    def set_faults(self, **changes: Any) -> Faults:
        """Change the faults in force (the fields of Faults)."""
        app = self._sandbox.app
        assert app is not None

        def apply() -> Faults:
            faults = self._sandbox.fault_state.update(changes)
            if faults.stream_disconnect:
                app.disconnect_all()
                faults.stream_disconnect = False
            return faults.model_copy()

        return self.call(apply)

    def disconnect_streams(self) -> int:
        app = self._sandbox.app
        assert app is not None
        return self.call(app.disconnect_all)

    def stats(self) -> list[dict[str, Any]]:
        app = self._sandbox.app
        assert app is not None
        return self.call(lambda: [app.account_stats(a) for a in self._sandbox.accounts])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and join its thread. Safe to call twice."""
        loop = self._sandbox.loop
        if self._thread.is_alive() and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._sandbox.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the sandbox thread did not stop in time")


def start_sandbox(
    accounts: Sequence[AccountConfig],
    *,
    speed: float = 1.0,
    faults: Faults | None = None,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 15.0,
    **options: Any,
) -> SandboxHandle:
    """Start a sandbox on a background thread (port 0: a free port) and wait until it listens."""
    config = SandboxConfig(host=host, port=port, speed=speed, seed=seed, **options)
    sandbox = Sandbox(accounts, config, faults)
    sock = bind_socket(host, port)
    url = _url(host, sock.getsockname()[1])
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            _run_loop(sandbox, sock, started.set)
        except BaseException as exc:  # the thread's top boundary: report to the starter
            failure.append(exc)
            log.exception("sandbox thread failed")
        finally:
            started.set()

    thread = threading.Thread(target=main, name="trimtab-sandbox", daemon=True)
    thread.start()
    if not started.wait(startup_timeout) or failure or not thread.is_alive():
        handle = SandboxHandle(sandbox, thread, url)
        with contextlib.suppress(RuntimeError):
            handle.stop(timeout=5.0)
        if failure:
            raise RuntimeError(f"the sandbox failed to start: {failure[0]!r}") from failure[0]
        raise RuntimeError("the sandbox did not start in time")
    return SandboxHandle(sandbox, thread, url)


@contextlib.contextmanager
def running_sandbox(accounts: Sequence[AccountConfig], **kwargs: Any) -> Iterator[SandboxHandle]:
    """start_sandbox() as a context manager that always stops it."""
    handle = start_sandbox(accounts, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()

"""The broker port: account, positions, assets, orders and the stream of order events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from trimtab.domain.account import Account, Asset, MarketClock, Position
from trimtab.domain.orders import BrokerOrderId, ClientOrderId, OrderEvent, OrderRequest, OrderSnapshot
from trimtab.ports.clock import Clock

OrderListener = Callable[[OrderEvent], None]


@runtime_checkable
class Broker(Protocol):
    """What the engine needs from a broker. Errors come from trimtab.domain.errors."""

    @property
    def name(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def requests_made(self) -> int:
        """REST requests made so far (for budgets and reports)."""
        ...

    async def start(self) -> None:
        """Open connections and streams. Called by the Executor's `async with`."""
        ...

    async def close(self) -> None:
        """Close everything start() opened. Safe to call twice."""
        ...

    async def get_account(self) -> Account: ...

    async def get_market_clock(self) -> MarketClock:
        """Whether the market is open now (regular hours), and its next open and close."""
        ...

    async def get_positions(self) -> Mapping[str, Position]: ...

    async def get_asset(self, symbol: str) -> Asset | None: ...

    async def get_assets(self, symbols: Iterable[str]) -> Mapping[str, Asset]:
        """Assets of many symbols in as few requests as the broker allows; unknown ones are absent."""
        ...

    async def submit_order(self, request: OrderRequest) -> OrderSnapshot:
        """Send an order. Raises RejectedError subclasses or RetryableError ones."""
        ...

    async def cancel_order(self, order_id: BrokerOrderId) -> None:
        """Request a cancel; the outcome arrives as an order event."""
        ...

    async def get_order(self, order_id: BrokerOrderId) -> OrderSnapshot: ...

    async def get_order_by_client_id(self, client_order_id: ClientOrderId) -> OrderSnapshot | None: ...

    async def list_open_orders(self, symbols: Iterable[str] | None = None) -> list[OrderSnapshot]: ...

    def add_order_listener(self, listener: OrderListener) -> Callable[[], None]:
        """Deliver every order event to listener; returns a function that removes it."""
        ...

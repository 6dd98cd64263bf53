"""Where the broker contract runs: SimBroker directly, or AlpacaBroker over the sandbox.

A scenario is an async function of a Venue. The venue gives the broker under test, the
order events it delivered, and the simulated exchange's test hooks (run on the exchange's
own loop: directly for the SimBroker, through the sandbox's thread for Alpaca).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from trimtab.adapters.alpaca import AlpacaBroker, AlpacaConfig
from trimtab.adapters.sandbox import AccountConfig, SandboxHandle, start_sandbox
from trimtab.adapters.sim import SimBroker, run_virtual
from trimtab.domain.orders import BrokerOrderId, OrderEvent, OrderEventKind, OrderSnapshot
from trimtab.ports.broker import Broker

T = TypeVar("T")

KEY_ID = "PKCONTRACT"
SECRET = "contract-secret"
SEED = 11
SPEED = 20.0


class ContractBroker(Broker, Protocol):
    """The Broker port plus replace_order, which both implementations offer."""

    async def replace_order(
        self, order_id: BrokerOrderId, qty: Decimal | None = None, limit_price: Decimal | None = None
    ) -> OrderSnapshot: ...


class Venue:
    """A broker under test with its event log and the exchange's hooks."""

    name = "venue"

    def __init__(self, broker: ContractBroker) -> None:
        self.broker = broker
        self.events: list[OrderEvent] = []
        self._changed = asyncio.Event()
        broker.add_order_listener(self._on_event)

    def _on_event(self, event: OrderEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def hook(self, fn: Callable[[SimBroker], T]) -> T:
        raise NotImplementedError

    def events_of(self, order_id: BrokerOrderId) -> list[OrderEvent]:
        return [e for e in self.events if e.order.broker_order_id == order_id]

    def kinds_of(self, order_id: BrokerOrderId) -> list[OrderEventKind]:
        return [e.kind for e in self.events_of(order_id)]

    async def until(
        self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait until condition() holds (market time on the sim, real time over Alpaca)."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def until_event(
        self, order_id: BrokerOrderId, kind: OrderEventKind, timeout: float = 10.0
    ) -> OrderEvent:
        def seen() -> bool:
            return kind in self.kinds_of(order_id)

        try:
            await self.until(seen, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {kind.value} event for {order_id}; got {[k.value for k in self.kinds_of(order_id)]}"
            ) from None
        return next(e for e in self.events_of(order_id) if e.kind is kind)

    async def until_final(self, order_id: BrokerOrderId, timeout: float = 10.0) -> OrderEvent:
        def final() -> bool:
            return any(e.order.status.is_terminal for e in self.events_of(order_id))

        try:
            await self.until(final, timeout)
        except TimeoutError:
            raise AssertionError(
                f"order {order_id} not final; events {[k.value for k in self.kinds_of(order_id)]}"
            ) from None
        return next(e for e in self.events_of(order_id) if e.order.status.is_terminal)


class SimVenue(Venue):
    name = "sim"

    def __init__(self, broker: SimBroker) -> None:
        super().__init__(broker)
        self.sim = broker

    def hook(self, fn: Callable[[SimBroker], T]) -> T:
        return fn(self.sim)


class AlpacaVenue(Venue):
    name = "alpaca"

    def __init__(self, broker: AlpacaBroker, handle: SandboxHandle) -> None:
        super().__init__(broker)
        self.alpaca = broker
        self.handle = handle

    def hook(self, fn: Callable[[SimBroker], T]) -> T:
        exchange = self.handle.exchange(KEY_ID)
        return self.handle.call(lambda: fn(exchange))


Scenario = Callable[[Venue], Awaitable[None]]


def sim_broker(account: Mapping[str, Any]) -> SimBroker:
    return SimBroker.from_account_text(json.dumps(dict(account)), seed=SEED)


@contextmanager
def sandbox_for(account: Mapping[str, Any], **options: Any) -> Iterator[SandboxHandle]:
    accounts = [AccountConfig(key_id=KEY_ID, secret_key=SECRET, name="contract", account=dict(account))]
    handle = start_sandbox(accounts, speed=options.pop("speed", SPEED), seed=SEED, **options)
    try:
        yield handle
    finally:
        handle.stop()


def alpaca_config(handle: SandboxHandle, **overrides: Any) -> AlpacaConfig:
    return AlpacaConfig(KEY_ID, SECRET, base_url=handle.url, data_url=handle.url, **overrides)


def run_on(venue_name: str, account: Mapping[str, Any], scenario: Scenario) -> None:
    """Run scenario on a fresh account at the named venue, and close everything after."""
    if venue_name == "sim":

        async def on_sim() -> None:
            broker = sim_broker(account)
            await broker.start()
            try:
                await scenario(SimVenue(broker))
            finally:
                await broker.close()

        run_virtual(on_sim())
        return
    with sandbox_for(account) as handle:

        async def on_alpaca() -> None:
            broker = AlpacaBroker(alpaca_config(handle))
            await broker.start()
            try:
                await scenario(AlpacaVenue(broker, handle))
            finally:
                await broker.close()

        asyncio.run(on_alpaca())

"""Order tracking: the broker's event stream resolves each order's progress.

Every order is registered under its client order id before it is sent, so events that
arrive before the submit call returns are not lost. Waiting is done on asyncio events
set by the stream, never by polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from trimtab.domain.money import ZERO
from trimtab.domain.orders import ClientOrderId, OrderEvent, OrderSnapshot
from trimtab.logs import get_logger
from trimtab.ports.broker import Broker

log = get_logger(__name__)


@dataclass(slots=True)
class TrackedOrder:
    client_order_id: ClientOrderId
    snapshot: OrderSnapshot | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[OrderEvent] = field(default_factory=list)

    @property
    def filled_qty(self) -> Decimal:
        return self.snapshot.filled_qty if self.snapshot else ZERO

    @property
    def is_terminal(self) -> bool:
        return self.snapshot is not None and self.snapshot.status.is_terminal


class OrderTracker:
    """Keeps the latest state of every order of a run, updated by the broker's events."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._orders: dict[ClientOrderId, TrackedOrder] = {}
        self._remove_listener: Callable[[], None] | None = None
        self.listeners: list[Callable[[OrderEvent], None]] = []

    def start(self) -> None:
        if self._remove_listener is None:
            self._remove_listener = self._broker.add_order_listener(self._on_event)

    def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def register(self, client_order_id: ClientOrderId) -> TrackedOrder:
        tracked = self._orders.get(client_order_id)
        if tracked is None:
            tracked = TrackedOrder(client_order_id)
            self._orders[client_order_id] = tracked
        return tracked

    def get(self, client_order_id: ClientOrderId) -> TrackedOrder | None:
        return self._orders.get(client_order_id)

    def tracked(self) -> list[TrackedOrder]:
        return list(self._orders.values())

    def open_orders(self) -> list[TrackedOrder]:
        return [t for t in self._orders.values() if t.snapshot is not None and not t.is_terminal]

    def update(self, snapshot: OrderSnapshot) -> None:
        """Merge a snapshot from a REST answer or an event; the furthest state wins."""
        tracked = self.register(snapshot.client_order_id)
        current = tracked.snapshot
        if current is not None and not _is_newer(current, snapshot):
            return
        tracked.snapshot = snapshot
        tracked.changed.set()
        tracked.changed = asyncio.Event()
        if snapshot.status.is_terminal:
            tracked.done.set()

    def _on_event(self, event: OrderEvent) -> None:
        tracked = self._orders.get(event.order.client_order_id)
        if tracked is None:
            # Not one of ours (the account's other orders): never track, never cancel it.
            return
        tracked.events.append(event)
        self.update(event.order)
        for listener in self.listeners:
            listener(event)

    async def wait_done(self, client_order_id: ClientOrderId, timeout: float) -> bool:
        """Wait until the order is terminal; False on timeout."""
        tracked = self.register(client_order_id)
        if tracked.is_terminal:
            return True
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await tracked.done.wait()
        except TimeoutError:
            return False
        return True


def _is_newer(current: OrderSnapshot, candidate: OrderSnapshot) -> bool:
    """True if candidate is a later state than current (events may arrive out of order)."""
    if current.status.is_terminal:
        # A terminal state is final; only more fill information may still arrive.
        return candidate.status is current.status and candidate.filled_qty > current.filled_qty
    if candidate.filled_qty < current.filled_qty:
        return False
    if candidate.status is current.status:
        return candidate.filled_qty >= current.filled_qty
    return (
        candidate.status.is_terminal
        or current.status.can_become(candidate.status)
        or (candidate.filled_qty > current.filled_qty)
    )


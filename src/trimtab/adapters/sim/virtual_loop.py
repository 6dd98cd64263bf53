"""An asyncio event loop whose clock is virtual: idle waits jump time forward at once.

When no callback is ready and the next timer is t seconds away, the loop advances its
clock by t instead of sleeping. Real I/O still works (it is polled without blocking);
when nothing is scheduled at all the loop blocks on real I/O as usual.

With a speed, idle waits are paced instead: a wait of t virtual seconds takes t / speed
real seconds, so a person (or a test that must interrupt a run) can follow it.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            return super().select(None)
        speed = self.loop.speed
        if speed is not None:
            started = time.monotonic()
            events = super().select(timeout / speed)
            elapsed = (time.monotonic() - started) * speed
            self.loop.advance(min(timeout, elapsed) if events else timeout)
            return events
        if self.loop.pending_real_io > 0:
            # Something runs in a thread or over a socket: let real time pass for it.
            events = super().select(min(timeout, 0.001))
            if events:
                return events
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time. Use run_virtual() to run a coroutine on one."""

    def __init__(self, start_time: float = 0.0, speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_time = start_time
        self.pending_real_io = 0

    def time(self) -> float:
        return self._virtual_time

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_time += seconds


def run_virtual(coro: Coroutine[Any, Any, T], speed: float | None = None) -> T:
    """Run coro to completion on a fresh virtual-time loop and close the loop.

    speed None runs as fast as possible; a number paces idle waits at that many times
    real time. Like asyncio.run, tasks still pending when coro returns are cancelled.
    """
    loop = VirtualTimeLoop(speed=speed)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))

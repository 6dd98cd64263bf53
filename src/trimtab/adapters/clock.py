"""Clocks: the system clock for real brokers, and a clock that follows the event loop.

The loop clock reads asyncio's loop.time(), so on the virtual-time loop of the simulated
exchange minutes of market time pass in milliseconds, and on a normal loop it is real time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    """Wall-clock time. The one place trimtab reads the real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class LoopClock:
    """Time of the running asyncio loop, anchored to a calendar instant.

    now() = anchor + (loop.time() - loop time at anchoring). The first reading anchors.
    """

    def __init__(self, anchor: datetime) -> None:
        if anchor.tzinfo is None:
            raise ValueError("the anchor of a LoopClock must be timezone-aware")
        self._anchor = anchor.astimezone(UTC)
        self._anchor_loop_time: float | None = None

    def _loop_time(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            # Outside a running loop time stands still at the last anchor.
            return self._anchor_loop_time if self._anchor_loop_time is not None else 0.0

    def monotonic(self) -> float:
        loop_time = self._loop_time()
        if self._anchor_loop_time is None:
            self._anchor_loop_time = loop_time
        return loop_time

    def now(self) -> datetime:
        loop_time = self.monotonic()
        assert self._anchor_loop_time is not None
        return self._anchor + timedelta(seconds=loop_time - self._anchor_loop_time)

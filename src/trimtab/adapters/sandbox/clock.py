"""Time in the sandbox: an event loop that runs `speed` times faster than real time.

The simulated exchange reads the time of its event loop. On a SpeedLoop, loop.time()
advances `speed` seconds per real second and every wait of the selector is divided by
`speed`, so a market minute passes in 60/speed real seconds while sockets are served for
real. Timestamps on the wire are mapped back onto real time (WireClock), so a client's
own clock (Alpaca's adapter uses the system clock) agrees with the sandbox about how old
a quote or an order is, whatever the speed.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from datetime import UTC, datetime, timedelta

from trimtab.adapters.clock import SystemClock


class _SpeedSelector(selectors.DefaultSelector):
    speed: float = 1.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            timeout = timeout / self.speed
        return super().select(timeout)


class SpeedLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock runs `speed` times faster than real time."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        selector = _SpeedSelector()
        selector.speed = speed
        super().__init__(selector)
        self.speed = speed
        self._real_origin = time.monotonic()

    def time(self) -> float:
        return self._real_origin + (time.monotonic() - self._real_origin) * self.speed


class WireClock:
    """Maps the exchange's (sped-up, possibly other-day) times onto real wall-clock time.

    Anchored once: the exchange time `sim_anchor` is the real instant `real_anchor`; an
    exchange time t is sent as real_anchor + (t - sim_anchor) / speed.
    """

    def __init__(self, speed: float, system: SystemClock | None = None) -> None:
        self.speed = speed
        self._system = system or SystemClock()
        self._sim_anchor: datetime | None = None
        self._real_anchor: datetime | None = None

    def anchor(self, sim_now: datetime) -> None:
        self._sim_anchor = sim_now
        self._real_anchor = self._system.now()

    def now(self) -> datetime:
        """Real time now."""
        return self._system.now()

    def wire(self, sim_time: datetime) -> datetime:
        if self._sim_anchor is None or self._real_anchor is None:
            return sim_time
        return self._real_anchor + (sim_time - self._sim_anchor) / self.speed

    def sim(self, wire_time: datetime) -> datetime:
        if self._sim_anchor is None or self._real_anchor is None:
            return wire_time
        return self._sim_anchor + (wire_time - self._real_anchor) * self.speed

    def epoch(self) -> float:
        return self._system.now().timestamp()

    def in_seconds(self, seconds: float) -> datetime:
        return self._system.now() + timedelta(seconds=seconds)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with nanoseconds and Z, as Alpaca writes times (naive means UTC)."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{utc.strftime('%Y-%m-%dT%H:%M:%S')}.{utc.microsecond:06d}000Z"

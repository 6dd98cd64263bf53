"""A token bucket that keeps requests within a per-minute budget and honours the server's word.

The bucket holds `burst` tokens and refills at (limit - burst) per minute, so that any
sliding minute sees at most `limit` requests. When the server reports its own view
(X-Ratelimit-Remaining and X-Ratelimit-Reset) the bucket never holds more tokens than the
server says remain, and a 429 empties it until the reset.
"""

from __future__ import annotations

import asyncio
from collections import deque

from trimtab.ports.clock import Clock


class TokenBucket:
    """Await acquire() before each request; report the server's headers with observe()."""

    def __init__(self, limit_per_minute: int, burst: int, clock: Clock) -> None:
        if limit_per_minute < 1 or not 1 <= burst <= limit_per_minute:
            raise ValueError("need 1 <= burst <= limit_per_minute")
        self._clock = clock
        self._capacity = float(burst)
        self._rate = max(limit_per_minute - burst, 1) / 60.0
        self._tokens = float(burst)
        self._updated = clock.monotonic()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()
        self._granted: deque[float] = deque()
        self.peak_per_minute = 0
        self.waited_seconds = 0.0

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now

    def delay(self) -> float:
        """Seconds until a token would be available now (0 if one is)."""
        now = self._clock.monotonic()
        self._refill(now)
        wait = max(self._blocked_until - now, 0.0)
        if self._tokens < 1.0:
            wait = max(wait, (1.0 - self._tokens) / self._rate)
        return wait

    async def acquire(self) -> None:
        """Wait for a token and take it. Waiters are served in order."""
        async with self._lock:
            while True:
                wait = self.delay()
                if wait <= 0:
                    break
                self.waited_seconds += wait
                await asyncio.sleep(wait)
            self._tokens -= 1.0
            now = self._clock.monotonic()
            self._granted.append(now)
            while self._granted and self._granted[0] <= now - 60.0:
                self._granted.popleft()
            self.peak_per_minute = max(self.peak_per_minute, len(self._granted))

    def observe(self, remaining: int | None, reset_in: float | None) -> None:
        """Take the server's remaining budget into account (X-Ratelimit-Remaining / -Reset)."""
        if remaining is None:
            return
        now = self._clock.monotonic()
        self._refill(now)
        if remaining <= 0 and reset_in is not None:
            self.block(reset_in)
        elif remaining < self._tokens:
            self._tokens = float(remaining)

    def block(self, seconds: float) -> None:
        """Hand out nothing for `seconds` (after a 429), then one token, then refill as usual."""
        now = self._clock.monotonic()
        self._refill(now)
        self._blocked_until = max(self._blocked_until, now + max(seconds, 0.0))
        self._tokens = 1.0
        self._updated = max(self._updated, self._blocked_until)

"""The sandbox's request budget: at most `limit` requests in any sliding minute of real time."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from trimtab.ports.clock import Clock

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch: int

    def headers(self) -> dict[str, str]:
        return {
            "X-Ratelimit-Limit": str(self.limit),
            "X-Ratelimit-Remaining": str(self.remaining),
            "X-Ratelimit-Reset": str(self.reset_epoch),
        }


class SlidingWindow:
    """Counts requests in the last minute. Real time: the budget does not speed up."""

    def __init__(self, limit: int, clock: Clock) -> None:
        if limit < 1:
            raise ValueError("the request limit must be at least 1")
        self.limit = limit
        self._clock = clock
        self._hits: deque[float] = deque()
        self.total = 0
        self.refused = 0
        self.peak = 0

    def _trim(self, now: float) -> None:
        while self._hits and self._hits[0] <= now - WINDOW_SECONDS:
            self._hits.popleft()

    def hit(self, forced_refusal: bool = False) -> Verdict:
        """Count one request; allowed unless the minute's budget is spent (or a 429 is forced)."""
        now = self._clock.monotonic()
        self._trim(now)
        self.total += 1
        allowed = not forced_refusal and len(self._hits) < self.limit
        if allowed:
            self._hits.append(now)
            self.peak = max(self.peak, len(self._hits))
        else:
            self.refused += 1
        remaining = max(self.limit - len(self._hits), 0)
        wait = (self._hits[0] + WINDOW_SECONDS - now) if self._hits else 0.0
        if forced_refusal:
            # An injected burst: tell the client to come back at the next full second.
            wait, remaining = 0.2, 0
        reset = math.ceil(self._clock.now().timestamp() + max(wait, 0.0))
        return Verdict(allowed=allowed, limit=self.limit, remaining=remaining, reset_epoch=reset)

"""Running alpaca-py's blocking REST clients off the event loop, within the request budget.

Every request goes through Transport.call: take a token from the bucket, run the SDK call
on a small thread pool, read the rate-limit headers of the answer, and map failures onto
trimtab's error tree. A 429 is a definite "not done", so it is waited out and retried
here a few times (writes included) before RateLimitedError reaches the engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from pydantic import ValidationError
from requests.adapters import HTTPAdapter

from trimtab.adapters.alpaca._sdk import APIError
from trimtab.adapters.alpaca.errors import Operation, map_api_error, map_transport_error, retry_after_of
from trimtab.adapters.alpaca.ratelimit import TokenBucket
from trimtab.domain.errors import BrokerUnavailableError, RateLimitedError, UnknownOrderOutcomeError
from trimtab.logs import get_logger
from trimtab.ports.clock import Clock

log = get_logger(__name__)
T = TypeVar("T")


class TimeoutSession(requests.Session):
    """A requests Session with a default timeout (alpaca-py sets none)."""

    def __init__(self, timeout: tuple[float, float], pool_size: int) -> None:
        super().__init__()
        self._timeout = timeout
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class Transport:
    """The REST request path shared by the trading and the data clients of one account."""

    def __init__(
        self, clock: Clock, max_workers: int, max_rate_limit_retries: int, max_rate_limit_wait: float
    ) -> None:
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._max_workers = max_workers
        self._retries = max_rate_limit_retries
        self._max_wait = max_rate_limit_wait
        self._local = threading.local()
        self.requests = 0
        self.rate_limited = 0

    def open(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="trimtab-alpaca"
            )

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def session(self, timeout: tuple[float, float]) -> TimeoutSession:
        """A session for an SDK client: default timeout and a hook that keeps the headers."""
        session = TimeoutSession(timeout, self._max_workers)
        session.hooks["response"].append(self._keep_headers)
        return session

    def _keep_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.headers = response.headers

    def _run(self, fn: Callable[[], T]) -> tuple[T, Mapping[str, str] | None]:
        self._local.headers = None
        result = fn()
        headers: Mapping[str, str] | None = self._local.headers
        return result, headers

    async def call(self, bucket: TokenBucket, operation: Operation, what: str, fn: Callable[[], T]) -> T:
        """Run fn (a blocking SDK call) in the pool, within the bucket, mapping its failures."""
        if self._pool is None:
            raise BrokerUnavailableError(f"{what}: the Alpaca connection is not started")
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            await bucket.acquire()
            self.requests += 1
            try:
                result, headers = await loop.run_in_executor(self._pool, self._run, fn)
            except APIError as exc:
                response = exc.response
                error_headers = response.headers if isinstance(response, requests.Response) else None
                self._observe(bucket, error_headers)
                error = map_api_error(exc, operation, self._clock.now(), what)
                if isinstance(error, RateLimitedError):
                    self.rate_limited += 1
                    wait = min(error.retry_after if error.retry_after is not None else 1.0, self._max_wait)
                    bucket.block(wait)
                    if attempt < self._retries:
                        attempt += 1
                        log.warning("rate limited, waiting request=%s wait=%.2fs try=%d", what, wait, attempt)
                        continue
                raise error from None
            except requests.RequestException as exc:
                raise map_transport_error(exc, operation, what) from None
            except ValidationError as exc:
                detail = f"{what}: unexpected answer from Alpaca ({exc.error_count()} validation errors)"
                if operation in (Operation.SUBMIT, Operation.REPLACE):
                    raise UnknownOrderOutcomeError(detail) from None
                raise BrokerUnavailableError(detail) from None
            self._observe(bucket, headers)
            return result

    def _observe(self, bucket: TokenBucket, headers: Mapping[str, str] | None) -> None:
        if not headers:
            return
        remaining_text = headers.get("X-Ratelimit-Remaining")
        if remaining_text is None:
            return
        try:
            remaining = int(remaining_text)
        except ValueError:
            return
        reset_in = retry_after_of(headers, self._clock.now())
        bucket.observe(remaining, reset_in)

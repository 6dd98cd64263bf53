"""Settings of the Alpaca adapter, and reading them from Alpaca's environment variables.

The key pair is kept out of every repr, log line and error message: the dataclass fields
that hold it are excluded from repr, and nothing here formats them into text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from trimtab.domain.errors import ConfigurationError, SafetyRefusalError

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
DATA_STREAM_URL = "wss://stream.data.alpaca.markets"
PAPER_HOST = "paper-api.alpaca.markets"
LIVE_HOST = "api.alpaca.markets"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

ENV_KEY_ID = "APCA_API_KEY_ID"
ENV_SECRET_KEY = "APCA_API_SECRET_KEY"
ENV_BASE_URL = "APCA_API_BASE_URL"
ENV_DATA_URL = "APCA_API_DATA_URL"
ENV_FEED = "APCA_DATA_FEED"

Feed = Literal["iex", "sip"]


@dataclass(frozen=True, slots=True)
class AlpacaConfig:
    """Everything the Alpaca adapter needs. Durations are seconds of real time.

    key_id and secret_key never appear in repr(). Build one with from_environment() or
    directly; validate() runs in __post_init__.
    """

    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    base_url: str = PAPER_URL
    data_url: str = DATA_URL
    trading_stream_url: str = ""
    data_stream_url: str = ""
    feed: Feed = "iex"
    live: bool = False

    # The request budget: Alpaca allows 200 requests per minute per account. The bucket
    # holds `burst` tokens and refills (limit - burst) per minute, so that no sliding
    # minute ever sees more than `limit` requests.
    requests_per_minute: int = 200
    burst: int = 20
    data_requests_per_minute: int = 200

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    max_workers: int = 8
    max_rate_limit_retries: int = 3
    max_rate_limit_wait: float = 60.0

    # The watchdog of the trade_updates stream.
    watchdog_interval: float = 0.5
    stream_ack_timeout: float = 5.0
    market_order_expect: float = 10.0
    poll_interval: float = 2.0
    recovery_events: int = 1
    quote_stream_start_timeout: float = 10.0
    quote_reuse_seconds: float = 2.0
    """A quote fetched by REST this recently primes a new subscription without a request."""
    client_order_id_max_length: int = 128

    def __post_init__(self) -> None:
        if not self.key_id or not self.secret_key:
            raise ConfigurationError(f"Alpaca needs a key pair: set {ENV_KEY_ID} and {ENV_SECRET_KEY}")
        if self.feed not in ("iex", "sip"):
            raise ConfigurationError(f"feed must be iex or sip, got {self.feed!r}")
        if self.requests_per_minute < 1 or not 1 <= self.burst < self.requests_per_minute:
            raise ConfigurationError("burst must be at least 1 and below requests_per_minute")
        for name in (
            "connect_timeout",
            "read_timeout",
            "watchdog_interval",
            "stream_ack_timeout",
            "poll_interval",
            "quote_stream_start_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        _check_url(self.base_url, "base_url")
        _check_url(self.data_url, "data_url")
        if is_live_url(self.base_url) and not self.live:
            raise SafetyRefusalError(
                f"{self.base_url} is not a known paper or local endpoint; "
                "live trading needs an explicit --live"
            )
        if self.live and is_known_paper_or_local(self.base_url):
            raise ConfigurationError(
                f"--live was given but the base URL {self.base_url} is a paper or local endpoint"
            )

    @property
    def trading_stream(self) -> str:
        return self.trading_stream_url or trading_stream_url_of(self.base_url)

    @property
    def data_stream(self) -> str:
        return self.data_stream_url or data_stream_url_of(self.data_url, self.feed)


def _check_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{name} must be an http(s) URL, got {url!r}")


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_loopback(url: str) -> bool:
    return _host(url) in LOOPBACK_HOSTS


def is_known_paper_or_local(url: str) -> bool:
    return _host(url) == PAPER_HOST or is_loopback(url)


def is_live_url(url: str) -> bool:
    """True for the live endpoint and for any host not known to be paper or local."""
    return not is_known_paper_or_local(url)


def trading_stream_url_of(base_url: str) -> str:
    """ws(s)://host[:port][/prefix]/stream for a REST base URL."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/stream", "", ""))


def data_stream_url_of(data_url: str, feed: str) -> str:
    """The stock data stream of a data REST URL: Alpaca's own host, or the same host locally."""
    parts = urlsplit(data_url.rstrip("/"))
    if parts.hostname == urlsplit(DATA_URL).hostname:
        return f"{DATA_STREAM_URL}/v2/{feed}"
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/v2/{feed}", "", ""))


def from_environment(
    *,
    live: bool = False,
    environ: Mapping[str, str] | None = None,
    feed: Feed | None = None,
    **overrides: object,
) -> AlpacaConfig:
    """Read APCA_API_KEY_ID, APCA_API_SECRET_KEY, APCA_API_BASE_URL and APCA_API_DATA_URL.

    Paper is the default. The live endpoint (or any endpoint not known to be paper or
    local) is refused with SafetyRefusalError unless live is True. The data URL defaults
    to the base URL when that points at a local sandbox, else to Alpaca's data API.
    """
    env = os.environ if environ is None else environ
    key_id = env.get(ENV_KEY_ID, "").strip()
    secret = env.get(ENV_SECRET_KEY, "").strip()
    if not key_id or not secret:
        missing = [name for name, value in ((ENV_KEY_ID, key_id), (ENV_SECRET_KEY, secret)) if not value]
        raise ConfigurationError(f"Alpaca credentials missing: set {' and '.join(missing)}")
    base = env.get(ENV_BASE_URL, "").strip().rstrip("/") or (LIVE_URL if live else PAPER_URL)
    data = env.get(ENV_DATA_URL, "").strip().rstrip("/")
    if not data:
        data = base if is_loopback(base) else DATA_URL
    chosen_feed = feed or env.get(ENV_FEED, "").strip().lower() or "iex"
    if chosen_feed not in ("iex", "sip"):
        raise ConfigurationError(f"{ENV_FEED} must be iex or sip, got {chosen_feed!r}")
    kwargs: dict[str, object] = {"base_url": base, "data_url": data, "feed": chosen_feed, "live": live}
    kwargs.update(overrides)
    return AlpacaConfig(key_id, secret, **kwargs)  # type: ignore[arg-type]

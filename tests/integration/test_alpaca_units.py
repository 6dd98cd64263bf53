"""The Alpaca adapter's pieces on their own: error mapping, settings, the token bucket, conversions."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import requests

from trimtab.adapters.alpaca import AlpacaBroker, AlpacaConfig, from_environment
from trimtab.adapters.alpaca._sdk import APIError
from trimtab.adapters.alpaca.config import data_stream_url_of, trading_stream_url_of
from trimtab.adapters.alpaca.convert import synthesized_events
from trimtab.adapters.alpaca.errors import Operation, map_api_error, map_transport_error
from trimtab.adapters.alpaca.ratelimit import TokenBucket
from trimtab.adapters.alpaca.streams import redact
from trimtab.adapters.sandbox import Faults, accounts_from_data, parse_fault
from trimtab.adapters.sandbox.accounts import AccountConfig
from trimtab.adapters.sandbox.clock import SpeedLoop, WireClock, rfc3339
from trimtab.adapters.sandbox.ratelimit import SlidingWindow
from trimtab.domain.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DuplicateClientOrderIdError,
    InsufficientBuyingPowerError,
    InsufficientQuantityError,
    InvalidOrderError,
    OrderNotCancelableError,
    OrderNotFoundError,
    RateLimitedError,
    SafetyRefusalError,
    TrimtabError,
    UnknownOrderOutcomeError,
)
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEventKind,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
)

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
SECRET = "sup3r-s3cret-value"


def api_error(status: int, body: object, headers: dict[str, str] | None = None) -> APIError:
    response = requests.Response()
    response.status_code = status
    text = body if isinstance(body, str) else json.dumps(body)
    response._content = text.encode()
    response.headers.update(headers or {})
    return APIError(text, requests.HTTPError(response=response))  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("status", "body", "operation", "expected"),
    [
        (
            403,
            {"code": 40310000, "message": "insufficient buying power"},
            Operation.SUBMIT,
            InsufficientBuyingPowerError,
        ),
        (
            403,
            {
                "code": 40310000,
                "message": "insufficient qty available for order (requested: 10, available: 0)",
                "available": "0",
                "existing_qty": "0",
                "held_for_orders": "0",
                "symbol": "IBM",
            },
            Operation.SUBMIT,
            InsufficientQuantityError,
        ),
        (
            403,
            {"code": 40310000, "message": "potential wash trade detected. use complex orders"},
            Operation.SUBMIT,
            InvalidOrderError,
        ),
        (
            422,
            {"code": 40010001, "message": "client_order_id must be unique"},
            Operation.SUBMIT,
            DuplicateClientOrderIdError,
        ),
        (422, {"code": 40010001, "message": "qty must be > 0"}, Operation.SUBMIT, InvalidOrderError),
        (
            422,
            {"code": 42210000, "message": 'order is already in "filled" state'},
            Operation.CANCEL,
            OrderNotCancelableError,
        ),
        (
            422,
            {"code": 42210000, "message": 'order is already in "filled" state'},
            Operation.REPLACE,
            OrderNotCancelableError,
        ),
        (404, {"code": 40410000, "message": "order not found"}, Operation.READ, OrderNotFoundError),
        (401, {"message": "unauthorized."}, Operation.READ, ConfigurationError),
        (500, {"code": 50010000, "message": "internal server error"}, Operation.READ, BrokerUnavailableError),
        (
            500,
            {"code": 50010000, "message": "internal server error"},
            Operation.CANCEL,
            BrokerUnavailableError,
        ),
        (504, "upstream request timeout", Operation.SUBMIT, UnknownOrderOutcomeError),
        (502, "<html>bad gateway</html>", Operation.REPLACE, UnknownOrderOutcomeError),
        (429, {"code": 42910000, "message": "rate limit exceeded"}, Operation.SUBMIT, RateLimitedError),
    ],
)
def test_api_errors_map_onto_the_tree(
    status: int, body: object, operation: Operation, expected: type[TrimtabError]
) -> None:
    mapped = map_api_error(api_error(status, body), operation, NOW, "what")
    assert type(mapped) is expected
    assert "what" in str(mapped)


def test_rate_limit_error_carries_the_reset() -> None:
    reset = str(int(NOW.timestamp()) + 7)
    error = map_api_error(
        api_error(
            429,
            {"code": 42910000, "message": "rate limit exceeded"},
            {"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": reset},
        ),
        Operation.READ,
        NOW,
        "get account",
    )
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == pytest.approx(7.0)


def test_transport_errors_are_unknown_only_for_writes_that_may_have_been_sent() -> None:
    timeout = requests.ReadTimeout("read timed out")
    assert isinstance(map_transport_error(timeout, Operation.SUBMIT, "submit"), UnknownOrderOutcomeError)
    assert isinstance(map_transport_error(timeout, Operation.READ, "read"), BrokerUnavailableError)
    refused = requests.ConnectionError(ConnectionRefusedError(111, "refused"))
    assert isinstance(map_transport_error(refused, Operation.SUBMIT, "submit"), BrokerUnavailableError)
    assert isinstance(
        map_transport_error(requests.ConnectTimeout(), Operation.SUBMIT, "s"), BrokerUnavailableError
    )


def test_environment_defaults_to_paper_and_hides_the_secret() -> None:
    config = from_environment(environ={"APCA_API_KEY_ID": "PKID", "APCA_API_SECRET_KEY": SECRET})
    assert config.base_url == "https://paper-api.alpaca.markets"
    assert config.data_url == "https://data.alpaca.markets"
    assert config.trading_stream == "wss://paper-api.alpaca.markets/stream"
    assert config.data_stream == "wss://stream.data.alpaca.markets/v2/iex"
    assert SECRET not in repr(config)
    assert "PKID" not in repr(config)
    broker = AlpacaBroker(config)
    assert SECRET not in repr(broker)


def test_live_endpoint_needs_live() -> None:
    env = {
        "APCA_API_KEY_ID": "PKID",
        "APCA_API_SECRET_KEY": SECRET,
        "APCA_API_BASE_URL": "https://api.alpaca.markets",
    }
    with pytest.raises(SafetyRefusalError) as refused:
        from_environment(environ=env)
    assert SECRET not in str(refused.value)
    with pytest.raises(SafetyRefusalError):
        from_environment(environ={**env, "APCA_API_BASE_URL": "https://proxy.example.com"})
    live = from_environment(environ=env, live=True)
    assert live.live
    assert live.base_url == "https://api.alpaca.markets"
    no_url = from_environment(environ={"APCA_API_KEY_ID": "PKID", "APCA_API_SECRET_KEY": SECRET}, live=True)
    assert no_url.base_url == "https://api.alpaca.markets"
    with pytest.raises(ConfigurationError):
        from_environment(environ={**env, "APCA_API_BASE_URL": "https://paper-api.alpaca.markets"}, live=True)


def test_missing_keys_name_the_variables_not_the_values() -> None:
    with pytest.raises(ConfigurationError) as missing:
        from_environment(environ={"APCA_API_KEY_ID": "PKID"})
    assert "APCA_API_SECRET_KEY" in str(missing.value)
    assert "PKID" not in str(missing.value)


def test_local_sandbox_urls() -> None:
    config = from_environment(
        environ={
            "APCA_API_KEY_ID": "K",
            "APCA_API_SECRET_KEY": "S",
            "APCA_API_BASE_URL": "http://127.0.0.1:8473/",
        },
        feed="sip",
    )
    assert config.data_url == "http://127.0.0.1:8473"
    assert config.trading_stream == "ws://127.0.0.1:8473/stream"
    assert config.data_stream == "ws://127.0.0.1:8473/v2/sip"
    assert trading_stream_url_of("https://h.example/prefix") == "wss://h.example/prefix/stream"
    assert data_stream_url_of("http://localhost:1/", "iex") == "ws://localhost:1/v2/iex"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return self.t


def test_token_bucket_keeps_any_minute_within_the_limit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(200, 20, clock)

    async def spend() -> float:
        granted = 0
        while granted < 20:
            assert bucket.delay() == 0
            await bucket.acquire()
            granted += 1
        return bucket.delay()

    wait = asyncio.run(spend())
    assert wait == pytest.approx(60 / 180)
    clock.t += 60
    # A full minute refills only (limit - burst) tokens, capped at the burst.
    assert bucket.delay() == 0
    bucket.observe(remaining=3, reset_in=10)
    assert bucket.delay() == 0
    bucket.observe(remaining=0, reset_in=5)
    assert bucket.delay() == pytest.approx(5)
    bucket.block(8)
    assert bucket.delay() == pytest.approx(8)


def snap(status: OrderStatus, filled: str, avg: str | None, qty: str = "10") -> OrderSnapshot:
    return OrderSnapshot(
        broker_order_id=BrokerOrderId("o1"),
        client_order_id=ClientOrderId("c1"),
        symbol="IBM",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=Decimal(qty),
        status=status,
        filled_qty=Decimal(filled),
        filled_avg_price=Decimal(avg) if avg else None,
        limit_price=Decimal("100"),
        created_at=NOW,
        updated_at=NOW,
    )


def test_rest_reads_become_the_missing_events() -> None:
    first = synthesized_events(None, snap(OrderStatus.PARTIALLY_FILLED, "4", "100"))
    assert [e.kind for e in first] == [OrderEventKind.PARTIAL_FILL]
    assert first[0].fill_qty == Decimal(4)
    later = synthesized_events(
        snap(OrderStatus.PARTIALLY_FILLED, "4", "100"), snap(OrderStatus.CANCELED, "6", "100.5")
    )
    assert [e.kind for e in later] == [OrderEventKind.PARTIAL_FILL, OrderEventKind.CANCELED]
    # 6 at 100.5 after 4 at 100: the 2 new shares cost 101.5.
    assert later[0].fill_qty == Decimal(2)
    assert later[0].fill_price == Decimal("101.5")
    accepted = synthesized_events(None, snap(OrderStatus.ACCEPTED, "0", None))
    assert [e.kind for e in accepted] == [OrderEventKind.ACCEPTED]
    assert (
        synthesized_events(snap(OrderStatus.ACCEPTED, "0", None), snap(OrderStatus.ACCEPTED, "0", None)) == []
    )


def test_faults_parse_from_the_command_line() -> None:
    faults = parse_fault("submit-504:3")
    assert faults.submit_error_status == 504
    assert faults.submit_errors == 3
    faults = parse_fault("zero-quotes:spy,qqq", parse_fault("429-burst", faults))
    assert faults.rate_limit_burst == 20
    assert faults.zero_quote_symbols == ["SPY", "QQQ"]
    assert faults.quote_zeroed("SPY")
    assert not faults.quote_zeroed("IBM")
    assert parse_fault("stream-disconnect-every:2.5").stream_disconnect_every == 2.5
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("explode")
    with pytest.raises(ValueError, match="bad fault"):
        parse_fault("stale-quotes:soon")
    assert Faults().model_dump()["stream_silent"] is False


def test_accounts_file_is_validated_and_keys_stay_hidden() -> None:
    accounts = accounts_from_data(
        {
            "accounts": [
                {"key_id": "K1", "secret_key": SECRET, "cash": "5", "universe": ["spy"]},
                {"key_id": "K2", "secret_key": "x", "name": "b", "positions": {"IBM": "1"}},
            ]
        }
    )
    assert [a.name for a in accounts] == ["account1", "b"]
    assert accounts[0].universe == ("SPY",)
    assert dict(accounts[0].account) == {"cash": "5"}
    assert SECRET not in repr(accounts[0])
    assert accounts[0].matches("K1", SECRET)
    assert not accounts[0].matches("K1", "nope")
    with pytest.raises(ValueError, match="used twice"):
        accounts_from_data([{"key_id": "K", "secret_key": "a"}, {"key_id": "K", "secret_key": "b"}])
    with pytest.raises(ValueError, match="unknown field"):
        accounts_from_data([{"key_id": "K", "secret_key": "a", "margin": True}])
    with pytest.raises(ValueError, match="key_id and secret_key"):
        AccountConfig(key_id="", secret_key="x")


def test_speed_loop_and_wire_clock() -> None:
    loop = SpeedLoop(50.0)
    try:
        start = loop.time()

        async def nap() -> None:
            await asyncio.sleep(5.0)  # 0.1 s of real time

        loop.run_until_complete(asyncio.wait_for(nap(), timeout=60))
        assert loop.time() - start >= 5.0
    finally:
        loop.close()
    clock = WireClock(10.0)
    clock.anchor(NOW)
    assert clock.sim(clock.wire(NOW.replace(minute=10))) == NOW.replace(minute=10)
    assert rfc3339(NOW) == "2026-01-05T15:00:00.000000000Z"


def test_sliding_window_counts_a_real_minute() -> None:
    clock = FakeClock()
    window = SlidingWindow(3, clock)
    verdicts = [window.hit() for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].remaining == 0
    assert verdicts[-1].headers()["X-Ratelimit-Limit"] == "3"
    clock.t += 61
    assert window.hit().allowed
    forced = window.hit(forced_refusal=True)
    assert not forced.allowed
    assert forced.remaining == 0
    assert window.peak == 3
    assert AlpacaConfig("k", "s").requests_per_minute == 200


def test_a_closed_port_is_unavailable_not_unknown() -> None:
    with requests.Session() as session, pytest.raises(requests.ConnectionError) as failed:
        session.get("http://127.0.0.1:9/v2/account", timeout=2)
    assert isinstance(map_transport_error(failed.value, Operation.SUBMIT, "submit"), BrokerUnavailableError)


def test_websocket_debug_logs_do_not_show_the_keys(caplog: pytest.LogCaptureFixture) -> None:
    redact("PKLOGGED", SECRET)
    with caplog.at_level(logging.DEBUG, logger="websockets.client"):
        logging.getLogger("websockets.client").debug(
            "> %s", f'TEXT {{"key_id": "PKLOGGED", "secret_key": "{SECRET}"}}'
        )
    assert caplog.records
    assert SECRET not in caplog.text
    assert "PKLOGGED" not in caplog.text

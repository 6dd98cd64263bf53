"""SqlLedger on real databases: a SQLite file and the PostgreSQL of this machine.

Every test that takes the `url` fixture runs on both. PostgreSQL tests run in a schema
of their own, dropped afterwards; without a reachable PostgreSQL they are skipped.
Set TRIMTAB_TEST_POSTGRES_URL to use another server.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url

from tests.pgkit import POSTGRES_URL, scratch_schema_url
from trimtab.adapters.ledger import SqlLedger, default_ledger_url, export_jsonl, head_revision
from trimtab.adapters.ledger import schema as ledger_schema
from trimtab.domain.errors import (
    ConfigurationError,
    IllegalTransitionError,
    PlanValidationError,
)
from trimtab.domain.orders import (
    BrokerOrderId,
    OrderEvent,
    OrderEventKind,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    make_client_order_id,
)
from trimtab.domain.plan import Action
from trimtab.domain.quotes import Quote
from trimtab.domain.results import (
    Attempt,
    ExecutionResult,
    ExecutionStats,
    ExecutionStatus,
    OrderResult,
    PhaseStats,
    QuoteView,
)
from trimtab.ports.ledger import ClaimOutcome, NewIntent, PlanState

T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
TTL = timedelta(seconds=30)
PLAN_JSON = json.dumps({"plan_id": "p", "items": [{"symbol": "SPY", "action": "HOLD"}]})


# --- fixtures: one database per test, on each backend ---


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema of their own."""
    with scratch_schema_url() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return default_ledger_url(tmp_path / "home")
    value: str = request.getfixturevalue("postgres_url")
    return value


@pytest.fixture
def ledger(url: str) -> Iterator[SqlLedger]:
    with SqlLedger(url) as opened:
        yield opened


# --- builders ---


def _claim(ledger: SqlLedger, plan_id: str, owner: str = "w1", *, now: datetime = T0,
           content_hash: str = "hash-1") -> ClaimOutcome:
    claim = ledger.begin_plan(plan_id, content_hash, PLAN_JSON, "corr-1", owner,
                              now=now, lease_ttl=TTL)
    return claim.outcome


def _quote(symbol: str = "SPY") -> Quote:
    return Quote(symbol, Decimal("601.23"), Decimal("601.25"), Decimal("300"), Decimal("1200.5"),
                 T0 - timedelta(milliseconds=250))


def _request(plan_id: str, attempt: int = 0, *, qty: str = "7.2273576",
             limit: str | None = "601.24") -> OrderRequest:
    return OrderRequest(
        client_order_id=make_client_order_id(plan_id, "SPY", attempt),
        symbol="SPY",
        side=Side.SELL,
        qty=Decimal(qty),
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        limit_price=Decimal(limit) if limit is not None else None,
    )


def _snapshot(request: OrderRequest, status: OrderStatus, filled: str = "0",
              avg: str | None = None, *, at: datetime = T0) -> OrderSnapshot:
    return OrderSnapshot(
        broker_order_id=BrokerOrderId(f"b-{request.client_order_id}"),
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        order_type=request.order_type,
        qty=request.qty,
        status=status,
        filled_qty=Decimal(filled),
        filled_avg_price=Decimal(avg) if avg is not None else None,
        limit_price=request.limit_price,
        created_at=T0,
        updated_at=at,
    )


def _fill(request: OrderRequest, qty: str, price: str, cumulative: str, *,
          at: datetime = T0, final: bool = False) -> OrderEvent:
    status = OrderStatus.FILLED if final else OrderStatus.PARTIALLY_FILLED
    return OrderEvent(
        kind=OrderEventKind.FILL if final else OrderEventKind.PARTIAL_FILL,
        order=_snapshot(request, status, cumulative, price, at=at),
        timestamp=at,
        fill_qty=Decimal(qty),
        fill_price=Decimal(price),
        extra={"execution_id": f"x-{cumulative}"},
    )


def _phase(name: str) -> PhaseStats:
    return PhaseStats(name=name, orders=1, succeeded=1, failed=0, skipped=0,
                      notional=Decimal("4345.33"), started_at=T0, finished_at=T0, timed_out=False)


def _result(plan_id: str) -> ExecutionResult:
    attempt = Attempt(
        step=0, time=T0, client_order_id="tt-abc-SPY-0", broker_order_id="b-1",
        order_type="limit", limit_price=Decimal("601.24"), qty=Decimal("7.2273576"),
        quote=QuoteView(bid=Decimal("601.23"), ask=Decimal("601.25"), bid_size=Decimal("3"),
                        ask_size=Decimal("12"), time=T0),
        filled_qty=Decimal("7.2273576"), avg_fill_price=Decimal("601.24"), status="filled",
    )
    order = OrderResult(
        symbol="SPY", action=Action.SELL, side="sell", trade_amount=Decimal("-4345.33"),
        shares=Decimal("7.2273576"), filled_shares=Decimal("7.2273576"),
        avg_fill_price=Decimal("601.24"), filled_notional=Decimal("4345.376404224"),
        arrival_mid=Decimal("601.24"), cost_bps=Decimal("0.00"), order_type="limit",
        client_order_id="tt-abc-SPY-0", urgency="NORMAL", scale_factor=None, success=True,
        skipped=False, skip_reason=None, error_message=None, fallback_reason=None,
        notes=(), attempts=(attempt,),
    )
    return ExecutionResult(
        plan_id=plan_id, correlation_id="corr-1", status=ExecutionStatus.SUCCESS, success=True,
        already_executed=False, orders_placed=1, orders_succeeded=1,
        total_trade_value=Decimal("4345.38"), started_at=T0, finished_at=T0 + timedelta(minutes=2),
        message=None, warnings=(), orders=(order,),
        stats=ExecutionStats(sell=_phase("sell"), buy=_phase("buy"), settlement_seconds=1.5,
                             buying_power_for_buys=Decimal("10000"), buy_scale_factor=None,
                             requests=7),
    )


# --- migrations ---


def test_migrations_upgrade_an_empty_database_to_head(url: str) -> None:
    with SqlLedger(url, migrate=False) as ledger:
        assert ledger.current_revision() is None
        assert ledger.migrate() == head_revision()
        assert ledger.current_revision() == head_revision()
        assert ledger.migrate() == head_revision()  # a second run finds nothing to do
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert set(ledger_schema.metadata.tables) <= tables
            # The migrations build exactly the tables the code uses.
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            assert compare_metadata(context, ledger_schema.metadata) == []
    finally:
        engine.dispose()


def test_a_database_from_a_newer_trimtab_is_refused(url: str) -> None:
    with SqlLedger(url) as ledger:
        ledger.open()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        engine.dispose()
    with SqlLedger(url) as ledger, pytest.raises(ConfigurationError, match="revision 9999"):
        ledger.plan_state("p")


def test_the_first_call_migrates_a_fresh_database(url: str) -> None:
    with SqlLedger(url) as ledger:
        assert ledger.plan_state("nothing") is None
        assert ledger.current_revision() == head_revision()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with SqlLedger(default_ledger_url(home)) as ledger:
        ledger.open()
    connection = sqlite3.connect(home / "ledger.sqlite3")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


def test_in_memory_sqlite_works() -> None:
    with SqlLedger("sqlite://") as ledger:
        assert _claim(ledger, "p") is ClaimOutcome.NEW
        assert ledger.plan_state("p") is PlanState.RECEIVED
        request = _request("p")
        assert ledger.record_intent("p", request, step=0, quote=_quote(), time=T0)
        ledger.record_event("p", _fill(request, "2", "600.5", "2"))
        assert ledger.traded_notional_since(T0) == Decimal("1201.0")
        assert len(ledger.intents("p")) == 1


# --- claims ---


def test_claim_new_then_busy_for_others_resume_for_the_owner(ledger: SqlLedger) -> None:
    claim = ledger.begin_plan("p1", "hash-1", PLAN_JSON, "corr-1", "w1", now=T0, lease_ttl=TTL)
    assert claim.outcome is ClaimOutcome.NEW
    assert claim.state is PlanState.RECEIVED
    assert claim.owner == "w1"
    assert claim.lease_expires_at == T0 + TTL

    busy = ledger.begin_plan("p1", "hash-1", PLAN_JSON, None, "w2", now=T0 + timedelta(seconds=29),
                             lease_ttl=TTL)
    assert busy.outcome is ClaimOutcome.BUSY
    assert busy.owner == "w1"
    assert busy.lease_expires_at == T0 + TTL

    again = ledger.begin_plan("p1", "hash-1", PLAN_JSON, None, "w1", now=T0 + timedelta(seconds=5),
                              lease_ttl=TTL)
    assert again.outcome is ClaimOutcome.RESUME
    assert again.lease_expires_at == T0 + timedelta(seconds=5) + TTL

    record = ledger.get_plan("p1")
    assert record is not None
    assert record.correlation_id == "corr-1"
    assert record.plan_json == PLAN_JSON
    assert record.content_hash == "hash-1"
    assert record.created_at == T0


def test_resume_after_the_lease_expires(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1", "w1") is ClaimOutcome.NEW
    ledger.set_plan_state("p1", PlanState.SELLING, now=T0)
    later = T0 + TTL
    claim = ledger.begin_plan("p1", "hash-1", PLAN_JSON, None, "w2", now=later, lease_ttl=TTL)
    assert claim.outcome is ClaimOutcome.RESUME
    assert claim.state is PlanState.SELLING
    assert claim.owner == "w2"
    # The old owner finds out it lost the plan when it next renews.
    assert not ledger.renew_lease("p1", "w1", now=later, lease_ttl=TTL)
    assert ledger.renew_lease("p1", "w2", now=later + timedelta(seconds=10), lease_ttl=TTL)
    assert _claim(ledger, "p1", "w3", now=later + TTL) is ClaimOutcome.BUSY
    assert [change.note for change in ledger.history("p1")] == [
        "new", "state", "resumed (lease of w1 expired)",
    ]


def test_renewing_keeps_others_out(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1", "w1") is ClaimOutcome.NEW
    for seconds in (20, 40, 60):
        assert ledger.renew_lease("p1", "w1", now=T0 + timedelta(seconds=seconds), lease_ttl=TTL)
    assert _claim(ledger, "p1", "w2", now=T0 + timedelta(seconds=80)) is ClaimOutcome.BUSY
    assert _claim(ledger, "p1", "w2", now=T0 + timedelta(seconds=90)) is ClaimOutcome.RESUME


def test_a_renewal_commits_what_waits_and_never_revives_a_finished_plan(url: str) -> None:
    with SqlLedger(url) as running, SqlLedger(url, share_connections=False) as other:
        assert _claim(running, "p1", "w1") is ClaimOutcome.NEW
        request = _request("p1")
        running.record_event("p1", _fill(request, "1", "601.24", "1"))  # waits for a commit point
        assert other.fills("p1") == []
        assert running.renew_lease("p1", "w1", now=T0 + timedelta(seconds=10), lease_ttl=TTL)
        assert [f.qty for f in other.fills("p1")] == [Decimal("1")]  # committed with the renewal
        record = other.get_plan("p1")
        assert record is not None
        assert record.lease_expires_at == T0 + timedelta(seconds=10) + TTL
        other.finish_plan("p1", _result("p1"), PlanState.DONE, now=T0 + timedelta(seconds=20))
        assert not running.renew_lease("p1", "w1", now=T0 + timedelta(seconds=30), lease_ttl=TTL)
        assert running.plan_state("p1") is PlanState.DONE


def test_released_plan_can_be_resumed_at_once(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1", "w1") is ClaimOutcome.NEW
    assert not ledger.release_lease("p1", "w2", now=T0)
    assert ledger.release_lease("p1", "w1", now=T0)
    assert _claim(ledger, "p1", "w2", now=T0 + timedelta(seconds=1)) is ClaimOutcome.RESUME


def test_already_done_returns_the_stored_result(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1", "w1") is ClaimOutcome.NEW
    result = _result("p1")
    ledger.set_plan_state("p1", PlanState.SELLING, now=T0)
    ledger.finish_plan("p1", result, PlanState.DONE, now=T0 + timedelta(minutes=2))
    for owner in ("w1", "w2"):
        claim = ledger.begin_plan("p1", "hash-1", PLAN_JSON, None, owner,
                                  now=T0 + timedelta(days=1), lease_ttl=TTL)
        assert claim.outcome is ClaimOutcome.ALREADY_DONE
        assert claim.state is PlanState.DONE
        assert claim.result == result
        assert claim.result is not None
        assert claim.result.orders[0].filled_notional == Decimal("4345.376404224")
    assert ledger.stored_result("p1") == result
    assert ledger.stored_result("unknown") is None
    assert not ledger.renew_lease("p1", "w1", now=T0, lease_ttl=TTL)
    record = ledger.get_plan("p1")
    assert record is not None
    assert record.status == "SUCCESS"
    assert record.owner is None


def test_a_failed_plan_is_not_run_again(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    ledger.finish_plan("p1", _result("p1"), PlanState.FAILED, now=T0)
    assert _claim(ledger, "p1", "w2") is ClaimOutcome.ALREADY_DONE
    assert ledger.plan_state("p1") is PlanState.FAILED


def test_same_plan_id_with_other_content_is_refused(ledger: SqlLedger) -> None:
    assert _claim(ledger, "daily-1") is ClaimOutcome.NEW
    with pytest.raises(PlanValidationError, match="plan_id daily-1 was already used for a different plan"):
        _claim(ledger, "daily-1", "w2", content_hash="hash-2")
    ledger.finish_plan("daily-1", _result("daily-1"), now=T0)
    with pytest.raises(PlanValidationError, match="daily-1"):
        _claim(ledger, "daily-1", "w1", content_hash="hash-2")


def test_claims_validate_their_arguments(ledger: SqlLedger) -> None:
    naive = datetime(2026, 11, 24, 14, 30)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.begin_plan("p", "h", PLAN_JSON, None, "w", now=naive, lease_ttl=TTL)
    with pytest.raises(ValueError, match="lease_ttl"):
        ledger.begin_plan("p", "h", PLAN_JSON, None, "w", now=T0, lease_ttl=timedelta(0))
    with pytest.raises(PlanValidationError, match="plan_id"):
        ledger.begin_plan("x" * 129, "h", PLAN_JSON, None, "w", now=T0, lease_ttl=TTL)


def test_accounts_are_separate(url: str) -> None:
    with SqlLedger(url, account="acct-a") as a, SqlLedger(url, account="acct-b") as b:
        assert _claim(a, "daily") is ClaimOutcome.NEW
        assert _claim(b, "daily", content_hash="other") is ClaimOutcome.NEW
        a.set_flag("kill", "on", now=T0)
        assert b.get_flag("kill") is None
        request = _request("daily")
        a.record_intent("daily", request, step=0, quote=None, time=T0)
        assert b.record_intent("daily", request, step=0, quote=None, time=T0)
        a.record_event("daily", _fill(request, "1", "600", "1"))
        b.record_event("daily", _fill(request, "1", "600", "1"))  # another account's order
        assert len(b.fills("daily")) == 1
        b.record_event("daily", _fill(request, "1", "600", "2", at=T0 - TTL))
        assert b.traded_notional_since(T0) == Decimal("600")
        assert a.traded_notional_since(T0) == Decimal("600")
        assert a.traded_notional_since(T0 - TTL) == Decimal("600")
        assert [s.plan_id for s in a.list_plans()] == ["daily"]


# --- the plan state machine ---


def test_state_machine_persists_legal_transitions(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    assert ledger.plan_state("p1") is PlanState.RECEIVED
    for index, state in enumerate([PlanState.SELLING, PlanState.SETTLING, PlanState.BUYING]):
        ledger.set_plan_state("p1", state, now=T0 + timedelta(seconds=index + 1))
        assert ledger.plan_state("p1") is state
    ledger.set_plan_state("p1", PlanState.BUYING, now=T0 + timedelta(seconds=9))  # no-op
    ledger.set_plan_state("p1", PlanState.DONE, now=T0 + timedelta(seconds=10))
    history = ledger.history("p1")
    assert [(c.from_state, c.to_state) for c in history] == [
        (None, PlanState.RECEIVED),
        (PlanState.RECEIVED, PlanState.SELLING),
        (PlanState.SELLING, PlanState.SETTLING),
        (PlanState.SETTLING, PlanState.BUYING),
        (PlanState.BUYING, PlanState.DONE),
    ]
    assert history[-1].time == T0 + timedelta(seconds=10)
    record = ledger.get_plan("p1")
    assert record is not None
    assert record.updated_at == T0 + timedelta(seconds=10)


def test_state_machine_refuses_illegal_transitions(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    ledger.set_plan_state("p1", PlanState.BUYING, now=T0)  # a plan without sells skips ahead
    with pytest.raises(IllegalTransitionError, match="from BUYING to SELLING"):
        ledger.set_plan_state("p1", PlanState.SELLING, now=T0)
    assert ledger.plan_state("p1") is PlanState.BUYING
    ledger.set_plan_state("p1", PlanState.FAILED, now=T0)
    with pytest.raises(IllegalTransitionError, match="from FAILED to DONE"):
        ledger.set_plan_state("p1", PlanState.DONE, now=T0)
    with pytest.raises(IllegalTransitionError):
        ledger.finish_plan("p1", _result("p1"), PlanState.DONE, now=T0)
    with pytest.raises(LookupError, match="nope"):
        ledger.set_plan_state("nope", PlanState.SELLING, now=T0)
    assert ledger.plan_state("nope") is None


def test_a_refused_state_change_writes_nothing_and_loses_nothing(url: str) -> None:
    with SqlLedger(url) as ledger, SqlLedger(url, share_connections=False) as other:
        assert _claim(ledger, "p1") is ClaimOutcome.NEW
        ledger.set_plan_state("p1", PlanState.BUYING, now=T0)
        ledger.record_event("p1", _fill(_request("p1"), "1", "600", "1"))  # waits for a commit point
        with pytest.raises(IllegalTransitionError):
            ledger.set_plan_state("p1", PlanState.SELLING, now=T0 + TTL)
        assert other.plan_state("p1") is PlanState.BUYING
        assert [change.to_state for change in other.history("p1")] == [PlanState.RECEIVED, PlanState.BUYING]
        ledger.finish_plan("p1", _result("p1"), PlanState.DONE, now=T0 + TTL)  # commits it with the finish
        assert [f.qty for f in other.fills("p1")] == [Decimal("1")]
        record = other.get_plan("p1")
        assert record is not None
        assert record.state is PlanState.DONE
        assert record.owner is None
        assert record.lease_expires_at is None
        assert other.stored_result("p1") == _result("p1")
        assert [change.note for change in other.history("p1")][-1] == "finished SUCCESS"


def test_finish_plan_checks_its_arguments(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    with pytest.raises(IllegalTransitionError, match="DONE or FAILED"):
        ledger.finish_plan("p1", _result("p1"), PlanState.BUYING, now=T0)
    with pytest.raises(ValueError, match="not 'p1'"):
        ledger.finish_plan("p1", _result("p2"), now=T0)
    ledger.finish_plan("p1", _result("p1"), now=T0)
    with pytest.raises(IllegalTransitionError, match="from DONE to DONE"):
        ledger.finish_plan("p1", _result("p1"), now=T0)


# --- the record of orders ---


def test_intents_round_trip_exactly(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    first = _request("p1", 0, qty="7.2273576", limit="601.2400")
    market = _request("p1", 1, qty="0.000000001", limit=None)
    zone = ZoneInfo("America/New_York")
    assert ledger.record_intent("p1", first, step=0, quote=_quote(), time=T0.astimezone(zone))
    assert ledger.record_intent("p1", market, step=3, quote=None, time=T0 + timedelta(seconds=90))
    intents = ledger.intents("p1")
    assert [intent.request for intent in intents] == [first, market]
    assert str(intents[0].qty) == "7.2273576"
    assert str(intents[0].limit_price) == "601.2400"  # trailing zeros survive
    assert str(intents[1].qty) == "1E-9"
    assert intents[0].quote == _quote()
    assert intents[0].time == T0
    assert intents[0].time.tzinfo is UTC
    assert intents[1].quote is None
    assert intents[1].step == 3
    assert ledger.client_order_ids("p1") == [first.client_order_id, market.client_order_id]


def test_an_intent_is_recorded_once(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    request = _request("p1")
    assert ledger.record_intent("p1", request, step=0, quote=None, time=T0)
    assert not ledger.record_intent("p1", request, step=1, quote=None, time=T0 + TTL)
    intents = ledger.intents("p1")
    assert [(i.step, i.time) for i in intents] == [(0, T0)]  # the first one stays
    with pytest.raises(LookupError, match="unknown-plan"):
        ledger.record_intent("unknown-plan", _request("x"), step=0, quote=None, time=T0)


def test_intents_recorded_together_share_one_commit(url: str) -> None:
    with SqlLedger(url) as writer, SqlLedger(url, share_connections=False) as reader:
        assert _claim(writer, "p1") is ClaimOutcome.NEW
        first, second, third = (_request("p1", attempt) for attempt in range(3))
        assert writer.record_intent("p1", second, step=0, quote=None, time=T0)
        writer.record_order("p1", _snapshot(second, OrderStatus.ACCEPTED))  # pending until the commit
        batch = [NewIntent(first, 0, _quote(), T0), NewIntent(second, 1, None, T0 + TTL),
                 NewIntent(third, 2, None, T0 + TTL)]
        assert writer.record_intents("p1", batch) == [True, False, True]  # second was there already
        # Committed when it returns: another connection sees them, and the order before them.
        seen = reader.intents("p1")
        assert [(i.client_order_id, i.step) for i in seen] == [
            (second.client_order_id, 0), (first.client_order_id, 0), (third.client_order_id, 2)
        ]
        assert seen[1].quote == _quote()
        assert [o.client_order_id for o in reader.orders("p1")] == [second.client_order_id]
        assert writer.record_intents("p1", []) == []


def test_orders_events_and_fills_round_trip(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    request = _request("p1")
    ledger.record_intent("p1", request, step=0, quote=_quote(), time=T0)
    ack = _snapshot(request, OrderStatus.ACCEPTED)
    ledger.record_order("p1", ack)
    accepted = OrderEvent(OrderEventKind.ACCEPTED, ack, T0)
    part = _fill(request, "3.0000001", "601.24", "3.0000001", at=T0 + timedelta(seconds=1))
    rest = _fill(request, "4.2273575", "601.25", "7.2273576", at=T0 + timedelta(seconds=2),
                 final=True)
    ledger.record_event("p1", accepted)
    ledger.record_event("p1", part)
    ledger.record_event("p1", rest)
    assert ledger.orders("p1") == [ack]
    assert ledger.events("p1") == [accepted, part, rest]
    fills = ledger.fills("p1")
    assert [(f.qty, f.price) for f in fills] == [
        (Decimal("3.0000001"), Decimal("601.24")),
        (Decimal("4.2273575"), Decimal("601.25")),
    ]
    assert fills[0].client_order_id == request.client_order_id
    assert fills[0].broker_order_id == BrokerOrderId(f"b-{request.client_order_id}")
    assert fills[0].side is Side.SELL
    assert fills[1].time == T0 + timedelta(seconds=2)
    assert sum(f.notional for f in fills) == Decimal("1803.720060124") + Decimal("2541.698696875")


def test_each_fill_row_points_at_its_own_event(url: str) -> None:
    with SqlLedger(url) as ledger:
        assert _claim(ledger, "p1") is ClaimOutcome.NEW
        requests = [_request("p1", attempt) for attempt in range(3)]
        # Orders, plain events and fills interleaved, all waiting for one commit point.
        for step, request in enumerate(requests):
            accepted = _snapshot(request, OrderStatus.ACCEPTED)
            ledger.record_order("p1", accepted)
            ledger.record_event("p1", OrderEvent(OrderEventKind.ACCEPTED, accepted, T0))
            for part in range(1, 3):
                at = T0 + timedelta(seconds=10 * step + part)
                ledger.record_event("p1", _fill(request, "1", f"60{step}.{part}", str(part), at=at))
        ledger.flush()
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT f.price, e.fill_price, f.client_order_id, e.client_order_id, e.kind "
                    "FROM ledger_fills f JOIN ledger_events e ON e.id = f.event_id ORDER BY f.id"
                ).all()
        finally:
            engine.dispose()
        assert len(rows) == 6
        for fill_price, event_price, fill_cid, event_cid, kind in rows:
            assert (fill_price, fill_cid) == (event_price, event_cid)
            assert kind == "partial_fill"
        assert [str(r[0]) for r in rows] == ["600.1", "600.2", "601.1", "601.2", "602.1", "602.2"]
        assert len(ledger.events("p1")) == 9
        assert len(ledger.orders("p1")) == 3


def test_a_redelivered_fill_is_not_counted_twice(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    request = _request("p1")
    fill = _fill(request, "2", "600.00", "2.0")
    ledger.record_event("p1", fill)
    # The same fill again, from a REST poll after a stream gap; "2" is "2.0".
    again = _fill(request, "2", "600.00", "2", at=T0 + timedelta(seconds=5))
    ledger.record_event("p1", again)
    assert len(ledger.events("p1")) == 2  # every event that arrived is kept
    assert len(ledger.fills("p1")) == 1
    assert ledger.traded_notional_since(T0) == Decimal("1200.0000")
    # Also when the first copy was committed long before the second arrives.
    ledger.record_event("p1", _fill(request, "2", "600.00", "2.00", at=T0 + timedelta(hours=1)))
    assert len(ledger.fills("p1")) == 1


def test_events_are_durable_before_the_next_intent(url: str) -> None:
    with SqlLedger(url) as writer, SqlLedger(url, share_connections=False) as reader:
        assert _claim(writer, "p1") is ClaimOutcome.NEW
        first = _request("p1", 0)
        assert writer.record_intent("p1", first, step=0, quote=None, time=T0)
        assert [i.client_order_id for i in reader.intents("p1")] == [first.client_order_id]
        writer.record_order("p1", _snapshot(first, OrderStatus.ACCEPTED))
        writer.record_event("p1", _fill(first, "1", "600", "1"))
        # Waiting in memory: another process cannot see them yet...
        assert reader.events("p1") == []
        # ...until the next intent, which commits them before itself.
        second = _request("p1", 1)
        assert writer.record_intent("p1", second, step=1, quote=None, time=T0)
        assert len(reader.orders("p1")) == 1
        assert len(reader.events("p1")) == 1
        assert len(reader.fills("p1")) == 1
        assert len(reader.intents("p1")) == 2
        writer.record_event("p1", _fill(second, "1", "601", "1"))
        writer.set_plan_state("p1", PlanState.SELLING, now=T0)  # a plan change commits too
        assert len(reader.fills("p1")) == 2
        writer.record_event("p1", _fill(second, "1", "602", "2"))
        writer.flush()
        assert len(reader.fills("p1")) == 3
        writer.record_event("p1", _fill(second, "1", "603", "3"))
    with SqlLedger(url) as after_close:
        assert len(after_close.fills("p1")) == 4


def test_reads_see_their_own_pending_writes(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    request = _request("p1")
    ledger.record_event("p1", _fill(request, "1", "600", "1"))
    assert len(ledger.events("p1")) == 1
    ledger.record_event("p1", _fill(request, "1", "600", "2"))
    assert ledger.traded_notional_since(T0) == Decimal("1200")
    ledger.record_event("p1", _fill(request, "1", "600", "3"))
    assert ledger.list_plans()[0].fills == 3


def test_max_pending_zero_commits_every_event(url: str) -> None:
    with SqlLedger(url, max_pending=0) as writer, SqlLedger(url, share_connections=False) as reader:
        assert _claim(writer, "p1") is ClaimOutcome.NEW
        request = _request("p1")
        writer.record_order("p1", _snapshot(request, OrderStatus.ACCEPTED))
        assert len(reader.orders("p1")) == 1
        writer.record_event("p1", _fill(request, "1", "600", "1"))
        assert len(reader.fills("p1")) == 1


def test_pending_rows_are_committed_when_many(url: str) -> None:
    with SqlLedger(url, max_pending=3) as writer, SqlLedger(url, share_connections=False) as reader:
        assert _claim(writer, "p1") is ClaimOutcome.NEW
        request = _request("p1")
        for cumulative in range(1, 4):
            writer.record_event("p1", _fill(request, "1", "600", str(cumulative)))
        assert reader.events("p1") == []
        writer.record_event("p1", _fill(request, "1", "600", "4"))
        assert len(reader.events("p1")) == 4


def test_unknown_plans_are_refused_at_once(ledger: SqlLedger) -> None:
    request = _request("ghost")
    with pytest.raises(LookupError, match="ghost"):
        ledger.record_order("ghost", _snapshot(request, OrderStatus.ACCEPTED))
    with pytest.raises(LookupError, match="ghost"):
        ledger.record_event("ghost", _fill(request, "1", "600", "1"))
    assert ledger.intents("ghost") == []
    assert ledger.fills("ghost") == []
    assert ledger.history("ghost") == []


def test_traded_notional_since(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    assert _claim(ledger, "p2") is ClaimOutcome.NEW
    assert ledger.traded_notional_since(T0) == 0
    sell = _request("p1")
    buy = OrderRequest(make_client_order_id("p2", "TQQQ", 0), "TQQQ", Side.BUY, Decimal("10"),
                       OrderType.MARKET)
    yesterday = T0 - timedelta(days=1)
    ledger.record_event("p1", _fill(sell, "1", "500.10", "1", at=yesterday))
    ledger.record_event("p1", _fill(sell, "0.5", "601.01", "1.5", at=T0))
    ledger.record_event("p2", _fill(buy, "10", "80.015", "10", at=T0 + timedelta(hours=1),
                                    final=True))
    today = T0 - timedelta(minutes=1)
    assert ledger.traded_notional_since(today) == Decimal("300.505") + Decimal("800.150")
    assert ledger.traded_notional_since(T0) == Decimal("1100.655")  # at `since` counts
    assert ledger.traded_notional_since(yesterday) == Decimal("1600.755")
    # Any time zone: 09:30 in New York is 14:30 UTC.
    new_york = datetime(2026, 11, 24, 9, 30, tzinfo=ZoneInfo("America/New_York"))
    assert ledger.traded_notional_since(new_york) == Decimal("1100.655")
    assert ledger.traded_notional_since(T0 + timedelta(hours=2)) == 0


def test_list_plans_with_totals(ledger: SqlLedger) -> None:
    for index in range(3):
        _claim(ledger, f"plan-{index}", now=T0 + timedelta(minutes=index))
    request = _request("plan-1")
    ledger.record_intent("plan-1", request, step=0, quote=None, time=T0)
    ledger.record_intent("plan-1", _request("plan-1", 1), step=1, quote=None, time=T0)
    ledger.record_event("plan-1", _fill(request, "2", "100.5", "2"))
    ledger.record_event("plan-1", _fill(request, "1", "100.25", "3"))
    ledger.finish_plan("plan-1", _result("plan-1"), now=T0 + timedelta(minutes=5))
    plans = ledger.list_plans()
    assert [p.plan_id for p in plans] == ["plan-2", "plan-1", "plan-0"]
    one = plans[1]
    assert (one.state, one.status, one.orders, one.fills) == (PlanState.DONE, "SUCCESS", 2, 2)
    assert one.filled_notional == Decimal("301.25")
    assert one.correlation_id == "corr-1"
    assert one.created_at == T0 + timedelta(minutes=1)
    assert one.updated_at == T0 + timedelta(minutes=5)
    assert (plans[0].orders, plans[0].fills, plans[0].filled_notional) == (0, 0, Decimal(0))
    assert [p.plan_id for p in ledger.list_plans(limit=1)] == ["plan-2"]
    assert len(ledger.list_plans(limit=None)) == 3


def test_money_must_be_decimal(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    request = _request("p1")
    bad = OrderEvent(OrderEventKind.FILL, _snapshot(request, OrderStatus.FILLED, "1", "600"), T0,
                     fill_qty=Decimal("1"), fill_price=600.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        ledger.record_event("p1", bad)
    naive = datetime(2026, 11, 24, 14, 30)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_order("p1", _snapshot(request, OrderStatus.ACCEPTED, at=naive))
    assert ledger.fills("p1") == []
    assert ledger.events("p1") == []
    assert ledger.orders("p1") == []


# --- flags ---


def test_flags(ledger: SqlLedger) -> None:
    assert ledger.get_flag("kill_switch") is None
    ledger.set_flag("kill_switch", "on: manual stop", now=T0)
    assert ledger.get_flag("kill_switch") == "on: manual stop"
    ledger.set_flag("kill_switch", "on: daily cap", now=T0 + TTL)
    assert ledger.get_flag("kill_switch") == "on: daily cap"
    ledger.clear_flag("kill_switch")
    assert ledger.get_flag("kill_switch") is None
    ledger.clear_flag("kill_switch")  # clearing twice is fine


def test_a_flag_set_elsewhere_is_seen_at_the_next_read(url: str) -> None:
    with SqlLedger(url) as running, SqlLedger(url, share_connections=False) as operator:
        assert _claim(running, "p1") is ClaimOutcome.NEW
        assert running.get_flag("kill_switch") is None
        running.record_event("p1", _fill(_request("p1"), "1", "601.24", "1"))  # waits in memory
        operator.set_flag("kill_switch", "on: manual stop", now=T0)
        assert running.get_flag("kill_switch") == "on: manual stop"  # no stale snapshot
        operator.clear_flag("kill_switch")
        assert running.get_flag("kill_switch") is None
        # Reading the flag neither committed nor lost what waits for the next commit point.
        assert operator.fills("p1") == []
        running.flush()
        assert [f.qty for f in operator.fills("p1")] == [Decimal("1")]


# --- several accounts in one process ---


def _connections_named(name: str) -> int:
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s", {"name": name}
            ).scalar_one())
    finally:
        admin.dispose()


def test_the_accounts_of_a_process_share_its_connections(postgres_url: str) -> None:
    name = f"trimtab-share-{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).update_query_dict({"application_name": name}).render_as_string(
        hide_password=False)
    ledgers = [SqlLedger(url, account=f"acct-{i}") for i in range(12)]
    try:
        for i, ledger in enumerate(ledgers):
            plan_id = f"plan-{i}"
            assert _claim(ledger, plan_id) is ClaimOutcome.NEW
            assert ledger.record_intent(plan_id, _request(plan_id), step=0, quote=None, time=T0)
            ledger.record_event(plan_id, _fill(_request(plan_id), "1", "600", "1"))  # waits
            assert ledger.get_flag("kill_switch") is None
        # One pool and one held connection for all twelve accounts, not two per account.
        assert _connections_named(name) <= 2
        ledgers[0].close()  # commits what it had waiting; the others go on
        assert [f.qty for f in ledgers[1].fills("plan-0")] == []  # the accounts stay apart
        assert ledgers[1].record_intent("plan-1", _request("plan-1", 1), step=1, quote=None, time=T0)
        with SqlLedger(postgres_url, account="acct-0", share_connections=False) as elsewhere:
            assert [f.qty for f in elsewhere.fills("plan-0")] == [Decimal("1")]
            assert len(elsewhere.intents("plan-0")) == 1
    finally:
        for ledger in ledgers:
            ledger.close()
    assert _connections_named(name) == 0  # closed with the last of them


# --- several processes ---


# A child process claims a plan: it opens (and, on an empty database, migrates) the ledger,
# says "ready", waits for a line on stdin, claims, and prints the outcome.
_CLAIMER = """
import sys
from datetime import datetime, timedelta
from trimtab.adapters.ledger import SqlLedger
url, plan_id, owner, now, plan_json = sys.argv[1:6]
with SqlLedger(url) as ledger:
    ledger.open()
    print("ready", flush=True)
    sys.stdin.readline()
    claim = ledger.begin_plan(plan_id, "hash-1", plan_json, None, owner,
                              now=datetime.fromisoformat(now), lease_ttl=timedelta(seconds=30))
    print(claim.outcome.value, flush=True)
"""


def _claim_in_processes(url: str, plan_id: str, owners: list[str]) -> dict[str, str]:
    """Start one process per owner, let them all claim plan_id at once, return the outcomes."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, url, plan_id, owner, T0.isoformat(), PLAN_JSON],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for owner in owners
    ]
    outcomes: dict[str, str] = {}
    try:
        for child in children:  # wait until every one is connected and migrated
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            assert line == "ready", child.communicate(timeout=30)[1]
        for child in children:  # then release them together
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for owner, child in zip(owners, children, strict=True):
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            outcomes[owner] = out.strip()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return outcomes


def test_racing_processes_one_claims_the_plan(url: str) -> None:
    owners = [f"w{i}" for i in range(4)]
    outcomes = _claim_in_processes(url, "race-1", owners)
    assert sorted(outcomes.values()) == ["BUSY", "BUSY", "BUSY", "NEW"], outcomes
    (winner,) = [owner for owner, outcome in outcomes.items() if outcome == "NEW"]
    with SqlLedger(url) as ledger:
        record = ledger.get_plan("race-1")
        assert record is not None
        assert record.owner == winner
        assert ledger.current_revision() == head_revision()
        assert [change.note for change in ledger.history("race-1")] == ["new"]


def test_a_second_process_sees_the_finished_plan(url: str) -> None:
    with SqlLedger(url) as first:
        assert _claim(first, "p1") is ClaimOutcome.NEW
        first.finish_plan("p1", _result("p1"), now=T0)
    assert _claim_in_processes(url, "p1", ["w2"]) == {"w2": "ALREADY_DONE"}


_KILLED_WRITER = """
import sys, time
from datetime import datetime
from decimal import Decimal
from trimtab.adapters.ledger import SqlLedger
from trimtab.domain.orders import (BrokerOrderId, ClientOrderId, OrderEvent, OrderEventKind,
    OrderRequest, OrderSnapshot, OrderStatus, OrderType, Side)
url, now = sys.argv[1], datetime.fromisoformat(sys.argv[2])
ledger = SqlLedger(url)
def request(n):
    return OrderRequest(ClientOrderId(f"cid-{n}"), "SPY", Side.SELL, Decimal(1), OrderType.MARKET)
def fill(n):
    order = OrderSnapshot(BrokerOrderId(f"b-{n}"), ClientOrderId(f"cid-{n}"), "SPY", Side.SELL,
        OrderType.MARKET, Decimal(1), OrderStatus.FILLED, Decimal(1), Decimal("600.01"), None,
        now, now)
    return OrderEvent(OrderEventKind.FILL, order, now, Decimal(1), Decimal("600.01"))
ledger.record_intent("p1", request(0), step=0, quote=None, time=now)
ledger.record_event("p1", fill(0))
ledger.record_intent("p1", request(1), step=0, quote=None, time=now)
ledger.record_event("p1", fill(1))
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_writer_loses_nothing_recorded_before_its_last_intent(url: str) -> None:
    with SqlLedger(url) as ledger:
        assert _claim(ledger, "p1", "killed") is ClaimOutcome.NEW
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, url, T0.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.communicate(timeout=30)[1]
    finally:
        child.kill()  # SIGKILL: no close(), no flush
        child.communicate(timeout=30)
    with SqlLedger(url) as ledger:
        assert ledger.client_order_ids("p1") == ["cid-0", "cid-1"]
        # The fill recorded before the second intent is durable; the one after it was
        # still in memory, and comes back from the broker when the plan is reconciled.
        assert [f.client_order_id for f in ledger.fills("p1")] == ["cid-0"]
        assert _claim(ledger, "p1", "rescuer", now=T0 + TTL) is ClaimOutcome.RESUME


# --- export ---


def _populate(ledger: SqlLedger) -> None:
    assert _claim(ledger, "p1") is ClaimOutcome.NEW
    request = _request("p1")
    ledger.set_plan_state("p1", PlanState.SELLING, now=T0)
    ledger.record_intent("p1", request, step=0, quote=_quote(), time=T0)
    ledger.record_order("p1", _snapshot(request, OrderStatus.ACCEPTED))
    ledger.record_event("p1", _fill(request, "7.2273576", "601.24", "7.2273576", final=True))
    ledger.finish_plan("p1", _result("p1"), now=T0 + timedelta(minutes=2))
    assert _claim(ledger, "p2", now=T0 + timedelta(minutes=3)) is ClaimOutcome.NEW


def _read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _check_export(records: list[dict[str, Any]]) -> None:
    types = [record["type"] for record in records]
    assert types == [
        "plan", "transition", "transition", "transition", "intent", "order", "event", "fill",
        "plan", "transition",
    ]
    plan, intent, order, event, fill = (records[i] for i in (0, 4, 5, 6, 7))
    assert plan["plan_id"] == "p1"
    assert plan["state"] == "DONE"
    assert plan["plan"] == json.loads(PLAN_JSON)
    assert ExecutionResult.model_validate(plan["result"]) == _result("p1")
    assert intent["qty"] == "7.2273576"
    assert intent["quote"]["ask_size"] == "1200.5"
    assert intent["time"] == "2026-11-24T14:30:00+00:00"
    assert order["status"] == "accepted"
    assert event["kind"] == "fill"
    assert event["order"]["filled_qty"] == "7.2273576"
    assert fill["price"] == "601.24"
    assert fill["notional"] == str(Decimal("7.2273576") * Decimal("601.24"))
    assert records[8]["plan_id"] == "p2"
    assert records[8]["result"] is None


def test_export_to_a_file(ledger: SqlLedger, tmp_path: Path) -> None:
    _populate(ledger)
    target = tmp_path / "exports" / "ledger.jsonl"
    summary = export_jsonl(ledger, target)
    assert summary.destination == str(target)
    assert summary.records == {"plan": 2, "transition": 4, "intent": 1, "order": 1, "event": 1,
                               "fill": 1}
    data = target.read_bytes()
    assert summary.bytes_written == len(data)
    _check_export(_read_jsonl(data))
    assert [p.name for p in target.parent.iterdir()] == ["ledger.jsonl"]  # no temporary left
    only_p2 = export_jsonl(ledger, tmp_path / "p2.jsonl", plan_ids=["p2"])
    assert only_p2.records == {"plan": 1, "transition": 1}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on localhost, with throwaway credentials in the environment."""
    moto_server = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed (pip install 'moto[server]')"
    )
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-do-not-export")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield endpoint
    finally:
        server.stop()


def test_export_to_s3(ledger: SqlLedger, s3_endpoint: str, tmp_path: Path) -> None:
    _populate(ledger)
    client = boto3.client("s3")
    try:
        client.create_bucket(Bucket="trimtab-exports")
        summary = export_jsonl(ledger, "s3://trimtab-exports/daily/2026-11-24")
        assert summary.destination == "s3://trimtab-exports/daily/2026-11-24/ledger.jsonl"
        named = export_jsonl(ledger, "s3://trimtab-exports/one.jsonl", plan_ids=["p1"])
        assert named.destination == "s3://trimtab-exports/one.jsonl"
        body = client.get_object(
            Bucket="trimtab-exports", Key="daily/2026-11-24/ledger.jsonl"
        )["Body"].read()
        single = client.get_object(Bucket="trimtab-exports", Key="one.jsonl")["Body"].read()
    finally:
        client.close()
    assert summary.bytes_written == len(body)
    _check_export(_read_jsonl(body))
    assert len(_read_jsonl(single)) == 8
    # The S3 object is byte for byte the local export, and holds no credentials.
    local = tmp_path / "local.jsonl"
    export_jsonl(ledger, local)
    assert local.read_bytes() == body
    for secret in ("test-secret-do-not-export", "test-access-key-id", s3_endpoint):
        assert secret.encode() not in body

"""The ledger port's pure parts: the plan state machine, the content hash, URLs and S3 keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from trimtab.adapters.ledger import LEDGER_FILE_NAME, SqlLedger, default_ledger_url
from trimtab.adapters.ledger.export import parse_s3_destination
from trimtab.adapters.ledger.schema import DecimalText
from trimtab.domain.errors import ConfigurationError, IllegalTransitionError
from trimtab.domain.plan import parse_plan
from trimtab.ports.ledger import ClaimOutcome, Ledger, PlanClaim, PlanState, plan_content_hash

S = PlanState
PHASES = [S.RECEIVED, S.SELLING, S.SETTLING, S.BUYING, S.DONE]


def test_the_happy_path_is_legal() -> None:
    state = S.RECEIVED
    for new in PHASES[1:]:
        state = state.transition(new)
    assert state is S.DONE


@pytest.mark.parametrize("state", [S.RECEIVED, S.SELLING, S.SETTLING, S.BUYING])
def test_any_unfinished_state_may_fail(state: PlanState) -> None:
    assert state.transition(S.FAILED) is S.FAILED


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_transition_table(old: PlanState, new: PlanState) -> None:
    if old.is_terminal:
        allowed = False
    elif new is S.FAILED or new is old:
        allowed = True
    else:
        allowed = PHASES.index(new) > PHASES.index(old)
    assert old.can_become(new) is allowed
    if allowed:
        assert old.transition(new) is new
    else:
        with pytest.raises(IllegalTransitionError, match=f"from {old.value} to {new.value}"):
            old.transition(new)


def test_backwards_and_out_of_final_states_are_illegal() -> None:
    with pytest.raises(IllegalTransitionError):
        S.BUYING.transition(S.SELLING)
    with pytest.raises(IllegalTransitionError):
        S.DONE.transition(S.FAILED)
    with pytest.raises(IllegalTransitionError):
        S.FAILED.transition(S.FAILED)


def test_claim_owned() -> None:
    for outcome, owned in [
        (ClaimOutcome.NEW, True),
        (ClaimOutcome.RESUME, True),
        (ClaimOutcome.BUSY, False),
        (ClaimOutcome.ALREADY_DONE, False),
    ]:
        claim = PlanClaim(outcome, "p", S.RECEIVED, None, None)
        assert claim.owned is owned


def _plan(
    items: Sequence[Mapping[str, object]], correlation_id: str | None = None
) -> dict[str, object]:
    return {"plan_id": "2026-11-24-daily", "correlation_id": correlation_id, "items": items}


SPY_SELL = {"symbol": "SPY", "action": "SELL", "trade_amount": "-5000.00"}
BND_CLOSE = {"symbol": "BND", "action": "SELL", "target_weight": "0"}
TQQQ_BUY = {"symbol": "TQQQ", "action": "BUY", "trade_amount": "2500"}


def test_content_hash_ignores_order_formatting_and_correlation_id() -> None:
    base = plan_content_hash(parse_plan(_plan([SPY_SELL, BND_CLOSE, TQQQ_BUY], "run-1")))
    reordered = plan_content_hash(parse_plan(_plan([TQQQ_BUY, SPY_SELL, BND_CLOSE], "run-2")))
    reformatted = plan_content_hash(
        parse_plan(
            _plan(
                [
                    {"symbol": "spy", "action": "sell", "trade_amount": "-5000"},
                    {"symbol": "BND", "action": "SELL", "target_weight": "0.00"},
                    {"symbol": "TQQQ", "action": "BUY", "trade_amount": "2500.000"},
                ]
            )
        )
    )
    assert base == reordered == reformatted
    assert len(base) == 64


def test_content_hash_sees_what_is_traded() -> None:
    base = plan_content_hash(parse_plan(_plan([SPY_SELL, TQQQ_BUY])))
    more = plan_content_hash(
        parse_plan(_plan([SPY_SELL, {**TQQQ_BUY, "trade_amount": "2500.01"}]))
    )
    fewer = plan_content_hash(parse_plan(_plan([SPY_SELL])))
    urgent = plan_content_hash(parse_plan(_plan([SPY_SELL, {**TQQQ_BUY, "urgency": "HIGH"}])))
    assert len({base, more, fewer, urgent}) == 4


def test_default_ledger_url(tmp_path: Path) -> None:
    url = default_ledger_url(tmp_path)
    assert url == f"sqlite:///{tmp_path / LEDGER_FILE_NAME}"


def test_constructor_does_no_io(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ledger = SqlLedger(default_ledger_url(home))
    ledger.close()
    assert not home.exists()
    assert isinstance(ledger, Ledger)


def test_url_password_is_masked() -> None:
    ledger = SqlLedger("postgresql+psycopg://trader:s3cret@db.example:5432/ledger")
    assert "s3cret" not in repr(ledger)
    assert "s3cret" not in ledger.url
    ledger.close()


def test_plain_postgresql_urls_use_psycopg() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        ledger = SqlLedger(url)
        assert ledger.url == "postgresql+psycopg://u@h/db"
        assert ledger.dialect == "postgresql"
        ledger.close()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="account"):
        SqlLedger("sqlite://", account="")
    with pytest.raises(ConfigurationError, match="not a database URL"):
        SqlLedger("not a url")
    ledger = SqlLedger("mysql://root@localhost/x")
    with pytest.raises(ConfigurationError, match="unsupported database 'mysql'"):
        ledger.plan_state("p")
    ledger.close()


def test_closed_ledger_refuses_work() -> None:
    ledger = SqlLedger("sqlite://")
    ledger.close()
    ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        ledger.plan_state("p")


@pytest.mark.parametrize(
    ("destination", "bucket", "key"),
    [
        ("s3://bucket", "bucket", "ledger.jsonl"),
        ("s3://bucket/", "bucket", "ledger.jsonl"),
        ("s3://bucket/exports/daily", "bucket", "exports/daily/ledger.jsonl"),
        ("s3://bucket/exports/daily/", "bucket", "exports/daily/ledger.jsonl"),
        ("s3://bucket/exports/2026-11-24.jsonl", "bucket", "exports/2026-11-24.jsonl"),
    ],
)
def test_parse_s3_destination(destination: str, bucket: str, key: str) -> None:
    assert parse_s3_destination(destination) == (bucket, key)


def test_parse_s3_destination_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="bucket"):
        parse_s3_destination("s3:///prefix")


def test_decimal_column_refuses_floats() -> None:
    column = DecimalText()
    dialect = sqlite.dialect()
    with pytest.raises(TypeError, match="Decimal"):
        column.process_bind_param(1.5, dialect)
    with pytest.raises(ValueError, match="finite"):
        column.process_bind_param(Decimal("NaN"), dialect)
    assert column.process_bind_param(Decimal("1.50"), dialect) == "1.50"
    assert column.process_result_value("1.50", dialect) == Decimal("1.50")

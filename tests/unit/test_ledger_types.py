"""The ledger's column conversions: the fused ones of the frequent inserts give exactly what
SQLAlchemy's own chain (the type decorator, then the inner type) gives, and refuse the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from trimtab.adapters.ledger import schema
from trimtab.adapters.ledger.schema import DecimalText, UtcDateTime, hot_bind_processor, sqlite_time_text

DIALECTS = [sqlite.dialect(), postgresql.dialect()]  # type: ignore[no-untyped-call]


def _chain(column_type: Any, dialect: Any) -> Any:
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return processor


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@given(
    value=st.one_of(
        st.none(),
        st.decimals(allow_nan=False, allow_infinity=False),
        st.integers(min_value=-(10**30), max_value=10**30),
    )
)
def test_decimal_text_matches_sqlalchemy(dialect: Any, value: Decimal | int | None) -> None:
    fused = hot_bind_processor(DecimalText(), dialect)
    assert fused is not None
    assert fused(value) == _chain(DecimalText(), dialect)(value)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - bounds of a strategy of aware datetimes
        max_value=datetime(2200, 1, 1),  # noqa: DTZ001
        timezones=st.sampled_from([UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata"),
                                   timezone(timedelta(hours=-3, minutes=-30))]),
    )
)
def test_times_match_sqlalchemy(dialect: Any, moment: datetime) -> None:
    fused = hot_bind_processor(UtcDateTime(), dialect)
    assert fused is not None
    assert fused(moment) == _chain(UtcDateTime(), dialect)(moment)
    assert fused(moment) == fused(moment.astimezone(UTC))  # one instant, one stored value


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("column_type", "value", "error", "match"),
    [
        (DecimalText(), 600.5, TypeError, "Decimal"),
        (DecimalText(), True, TypeError, "Decimal"),
        (DecimalText(), Decimal("NaN"), ValueError, "finite"),
        (DecimalText(), Decimal("-Infinity"), ValueError, "finite"),
        (UtcDateTime(), datetime(2026, 11, 24, 14, 30), ValueError, "timezone-aware"),  # noqa: DTZ001
        (UtcDateTime(), "2026-11-24 14:30:00", TypeError, "datetime"),
    ],
)
def test_both_paths_refuse_the_same(dialect: Any, column_type: Any, value: Any, error: type[Exception],
                                    match: str) -> None:
    fused = hot_bind_processor(column_type, dialect)
    assert fused is not None
    with pytest.raises(error, match=match):
        fused(value)
    with pytest.raises(error, match=match):
        _chain(column_type, dialect)(value)


def test_other_types_keep_sqlalchemys_processor() -> None:
    dialect = sqlite.dialect()
    for column in schema.events.columns:
        if isinstance(column.type, DecimalText | UtcDateTime):
            continue
        expected = column.type.dialect_impl(dialect).bind_processor(dialect)
        assert (hot_bind_processor(column.type, dialect) is None) == (expected is None), column.name


def test_the_time_texts_kept_stay_bounded_and_right() -> None:
    start = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
    new_york = ZoneInfo("America/New_York")
    for i in range(3 * schema._TIME_TEXTS_MAX):
        moment = start + timedelta(microseconds=i)
        text = sqlite_time_text(moment.astimezone(new_york) if i % 2 else moment)
        assert text == f"2026-11-24 14:30:00.{i:06d}"
        assert len(schema._TIME_TEXTS) <= schema._TIME_TEXTS_MAX
    assert sqlite_time_text(start.astimezone(new_york)) == "2026-11-24 14:30:00.000000"
    assert sqlite_time_text(None) is None

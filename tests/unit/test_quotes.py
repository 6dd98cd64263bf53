from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trimtab.domain.quotes import Quote

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def quote(bid: str, ask: str, age: float = 0.0) -> Quote:
    return Quote("IBM", Decimal(bid), Decimal(ask), Decimal(200), Decimal(300), NOW - timedelta(seconds=age))


def test_good_quote_is_usable() -> None:
    q = quote("182.50", "182.53")
    assert q.problem(NOW, 5, Decimal(50)) is None
    assert q.mid == Decimal("182.515")
    assert q.near_touch(True) == Decimal("182.50")
    assert q.far_touch(True) == Decimal("182.53")


def test_bad_quotes_name_their_problem() -> None:
    assert "zero-sided" in (quote("0", "10").problem(NOW, 5, Decimal(50)) or "")
    assert "crossed" in (quote("10.02", "10.01").problem(NOW, 5, Decimal(50)) or "")
    assert "crossed or locked" in (quote("10.01", "10.01").problem(NOW, 5, Decimal(50)) or "")
    assert "stale" in (quote("10.00", "10.01", age=6).problem(NOW, 5, Decimal(50)) or "")
    assert "spread too wide" in (quote("10.00", "10.50").problem(NOW, 5, Decimal(50)) or "")

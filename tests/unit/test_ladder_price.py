from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from trimtab.domain.orders import Side
from trimtab.domain.quotes import Quote
from trimtab.engine.algos import ladder_price, moved_away
from trimtab.engine.config import Anchor

T0 = datetime(2026, 11, 24, 15, tzinfo=UTC)


def q(bid: str, ask: str) -> Quote:
    return Quote("IBM", Decimal(bid), Decimal(ask), Decimal(200), Decimal(200), T0)


def test_anchors_on_a_three_cent_spread() -> None:
    quote = q("182.50", "182.53")
    assert ladder_price(quote, Side.BUY, Decimal(0), Anchor.PASSIVE) == Decimal("182.50")
    assert ladder_price(quote, Side.BUY, Decimal(0), Anchor.IMPROVE) == Decimal("182.51")
    assert ladder_price(quote, Side.BUY, Decimal(0), Anchor.MID) == Decimal("182.51")
    assert ladder_price(quote, Side.SELL, Decimal(0), Anchor.PASSIVE) == Decimal("182.53")
    assert ladder_price(quote, Side.SELL, Decimal(0), Anchor.IMPROVE) == Decimal("182.52")
    assert ladder_price(quote, Side.SELL, Decimal(0), Anchor.MID) == Decimal("182.52")


def test_ladder_fractions_walk_toward_the_far_touch() -> None:
    quote = q("100.00", "100.10")
    buys = [ladder_price(quote, Side.BUY, Decimal(f), None) for f in ("0", "0.5", "0.75", "0.95", "1")]
    assert buys == [
        Decimal("100.00"),
        Decimal("100.05"),
        Decimal("100.07"),
        Decimal("100.09"),
        Decimal("100.10"),
    ]
    sells = [ladder_price(quote, Side.SELL, Decimal(f), None) for f in ("0", "0.5", "0.75", "0.95", "1")]
    assert sells == [
        Decimal("100.10"),
        Decimal("100.05"),
        Decimal("100.03"),
        Decimal("100.01"),
        Decimal("100.00"),
    ]


def test_one_tick_spread_cannot_be_improved() -> None:
    quote = q("168.09", "168.10")
    assert ladder_price(quote, Side.BUY, Decimal(0), Anchor.IMPROVE) == Decimal("168.09")


@given(
    bid_cents=st.integers(min_value=100, max_value=10_000_000),
    spread_ticks=st.integers(min_value=1, max_value=50),
    fraction=st.decimals(min_value=0, max_value=1, places=3),
    anchor=st.sampled_from([None, *Anchor]),
    side=st.sampled_from(list(Side)),
)
def test_price_stays_between_the_touches(
    bid_cents: int, spread_ticks: int, fraction: Decimal, anchor: Anchor | None, side: Side
) -> None:
    bid = Decimal(bid_cents) / 100
    quote = Quote("X", bid, bid + Decimal(spread_ticks) / 100, Decimal(1), Decimal(1), T0)
    price = ladder_price(quote, side, fraction, anchor)
    assert quote.bid <= price <= quote.ask
    assert price == price.quantize(Decimal("0.01"))


def test_moved_away_uses_the_threshold() -> None:
    assert moved_away(q("100.10", "100.12"), Side.BUY, Decimal("100.00"), Decimal("5"))
    assert not moved_away(q("100.04", "100.06"), Side.BUY, Decimal("100.00"), Decimal("5"))
    assert moved_away(q("99.80", "99.90"), Side.SELL, Decimal("100.00"), Decimal("5"))
    assert not moved_away(q("100.00", "100.02"), Side.SELL, Decimal("100.00"), Decimal("5"))

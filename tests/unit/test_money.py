from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trimtab.domain.money import (
    floor_qty,
    is_valid_qty,
    price_tick,
    round_buy_limit,
    round_price,
    round_sell_limit,
    to_decimal,
)

quantities = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("1000000"), places=12)
prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("100000"), places=6)


@given(position=quantities, fractionable=st.booleans())
def test_rounded_sell_quantity_never_exceeds_position(position: Decimal, fractionable: bool) -> None:
    qty = floor_qty(position, fractionable)
    assert qty <= position
    assert qty >= 0
    if qty > 0:
        assert is_valid_qty(qty, fractionable)


@given(position=quantities)
def test_whole_share_rounding_drops_the_fraction(position: Decimal) -> None:
    qty = floor_qty(position, fractionable=False)
    assert qty == qty.to_integral_value()
    assert position - qty < 1


@given(price=prices)
def test_buy_limit_rounds_down_and_sell_limit_rounds_up(price: Decimal) -> None:
    buy = round_buy_limit(price)
    sell = round_sell_limit(price)
    assert buy <= price <= sell
    assert buy % price_tick(buy) == 0
    assert sell % price_tick(sell) == 0


def test_ticks_follow_the_one_dollar_boundary() -> None:
    assert price_tick(Decimal("1")) == Decimal("0.01")
    assert price_tick(Decimal("0.9999")) == Decimal("0.0001")
    assert round_price(Decimal("12.345")) == Decimal("12.34")
    assert round_price(Decimal("0.12345"), mode="up") == Decimal("0.1235")
    assert round_sell_limit(Decimal("0.99995")) == Decimal("1.00")


def test_exact_fractional_position_is_kept() -> None:
    assert floor_qty(Decimal("7.2273576"), fractionable=True) == Decimal("7.227357600")
    assert floor_qty(Decimal("7.2273576"), fractionable=False) == Decimal("7")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-inf", "abc", "", True, None, [1]])
def test_to_decimal_refuses_garbage(bad: object) -> None:
    with pytest.raises(ValueError, match="amount"):
        to_decimal(bad, field="amount")


def test_to_decimal_keeps_float_text_exact() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal("  12.50 ") == Decimal("12.50")

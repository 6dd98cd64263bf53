"""Decimal money and quantities, rounded through the instrument's increments.

Prices tick at 0.01 at or above one dollar and at 0.0001 below it. Quantities are
whole shares for assets that are not fractionable and 9 decimals for those that are.
Every price and quantity inside trimtab is created through these helpers.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")
SUB_PENNY_TICK = Decimal("0.0001")
WHOLE_SHARE = Decimal("1")
FRACTIONAL_SHARE = Decimal("0.000000001")
ZERO = Decimal("0")
ONE = Decimal("1")
BPS = Decimal("10000")
MAX_AMOUNT = Decimal("1000000000000")  # one trillion dollars: anything above is absurd


def to_decimal(value: object, *, field: str = "value") -> Decimal:
    """Convert a string, int or Decimal to a finite Decimal; refuse floats and garbage."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a number, got a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{field} is not a number: {value!r}") from None
    elif isinstance(value, float):
        # Floats reach here only from loosely typed sources; go through repr so 0.1 stays 0.1.
        result = Decimal(repr(value))
    else:
        raise ValueError(f"{field} must be a decimal string or number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{field} must be finite, got {value!r}")
    return result


def price_tick(price: Decimal) -> Decimal:
    """The minimum price increment at this price level."""
    return CENT if price >= ONE else SUB_PENNY_TICK


def round_price(price: Decimal, *, mode: str = "nearest") -> Decimal:
    """Round a price to its tick. mode: nearest, down (toward zero) or up."""
    tick = price_tick(price)
    rounding = {"nearest": ROUND_HALF_EVEN, "down": ROUND_FLOOR, "up": ROUND_CEILING}[mode]
    rounded = (price / tick).to_integral_value(rounding=rounding) * tick
    # Rounding up across the one-dollar boundary changes the tick; re-quantize once.
    return rounded.quantize(price_tick(rounded), rounding=rounding)


def round_buy_limit(price: Decimal) -> Decimal:
    """A buy limit rounds down: never pay more than the computed price."""
    return round_price(price, mode="down")


def round_sell_limit(price: Decimal) -> Decimal:
    """A sell limit rounds up: never accept less than the computed price."""
    return round_price(price, mode="up")


def qty_increment(fractionable: bool) -> Decimal:
    """The quantity increment of an asset."""
    return FRACTIONAL_SHARE if fractionable else WHOLE_SHARE


def floor_qty(qty: Decimal, fractionable: bool) -> Decimal:
    """Round a quantity down to the asset's increment (never more than asked)."""
    increment = qty_increment(fractionable)
    if qty <= ZERO:
        return ZERO.quantize(increment)
    return qty.quantize(increment, rounding=ROUND_DOWN)


def is_valid_qty(qty: Decimal, fractionable: bool) -> bool:
    """True when qty is positive and a multiple of the asset's increment."""
    return qty > ZERO and qty == qty.quantize(qty_increment(fractionable), rounding=ROUND_DOWN)


def bps(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator in basis points, rounded to 0.01 bp."""
    if denominator == ZERO:
        return ZERO
    return (numerator / denominator * BPS).quantize(CENT, rounding=ROUND_HALF_EVEN)


def money(value: Decimal) -> Decimal:
    """Round a dollar amount to cents for display and totals."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)

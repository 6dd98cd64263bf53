"""Turning plan items into share quantities: sells from positions, buys from buying power."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from trimtab.domain.account import Asset, Position
from trimtab.domain.money import BPS, ONE, ZERO, floor_qty, money
from trimtab.domain.orders import Side
from trimtab.domain.plan import RebalancePlanItem
from trimtab.domain.quotes import Quote
from trimtab.engine.config import ExecutionConfig

SCALE_QUANTUM = Decimal("0.000001")


@dataclass(slots=True)
class SizedItem:
    """A plan item with its side, quantity and the facts used to size it."""

    item: RebalancePlanItem
    side: Side
    qty: Decimal = ZERO
    fractionable: bool = True
    arrival: Quote | None = None
    scale_factor: Decimal | None = None
    skip_reason: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return self.item.symbol


def _asset_problem(symbol: str, asset: Asset | None) -> str | None:
    if asset is None:
        return f"{symbol} is not an asset the broker knows"
    if not asset.tradable:
        return f"{symbol} is not tradable at the broker"
    return None


def size_sell(
    item: RebalancePlanItem,
    position: Position | None,
    asset: Asset | None,
    quote: Quote | None,
    quote_problem: str | None,
    config: ExecutionConfig,
    shortfall_tolerance: Decimal = ONE,
) -> SizedItem:
    """Size a sell. A close uses the exact quantity the broker reports as available.

    A sell larger than the available position is trimmed to it when the shortfall is at
    most shortfall_tolerance (a fraction of the sell); beyond that the item fails.
    """
    sized = SizedItem(item=item, side=Side.SELL, arrival=quote)
    problem = _asset_problem(item.symbol, asset)
    if problem is not None:
        sized.skip_reason = problem
        return sized
    assert asset is not None
    sized.fractionable = asset.fractionable
    if position is None or position.qty <= ZERO:
        sized.skip_reason = f"no position in {item.symbol} to sell"
        return sized
    available = position.qty_available
    if available <= ZERO:
        sized.skip_reason = f"no shares of {item.symbol} available (all held by open orders)"
        return sized
    if item.is_liquidation:
        sized.qty = available
        if available < position.qty:
            sized.notes.append(
                f"closing {available} of {position.qty} shares: the rest is held by open orders"
            )
        return sized
    if quote is None:
        sized.skip_reason = f"no usable quote to size the sell: {quote_problem}"
        return sized
    assert item.trade_amount is not None
    wanted = floor_qty(abs(item.trade_amount) / quote.mid, asset.fractionable)
    if wanted > available:
        shortfall = (wanted - available) / wanted
        if shortfall > shortfall_tolerance:
            sized.error = (
                f"the sell needs {wanted} shares but only {available} are available "
                f"({shortfall:.1%} short, beyond the tolerance of {shortfall_tolerance:.1%})"
            )
            return sized
        trimmed = floor_qty(available, asset.fractionable)
        sized.notes.append(f"sell trimmed from {wanted} to the {trimmed} shares available")
        wanted = trimmed
    if wanted <= ZERO:
        sized.skip_reason = (
            f"{money(abs(item.trade_amount))} dollars is less than one share at {quote.mid}"
            if not asset.fractionable
            else "the amount rounds to zero shares"
        )
        return sized
    if (
        asset.fractionable
        and wanted != wanted.to_integral_value()
        and wanted * quote.mid < config.min_notional
    ):
        sized.skip_reason = f"order notional is below the minimum of {config.min_notional} dollars"
        return sized
    sized.qty = wanted
    return sized


def buy_budget(buying_power: Decimal, config: ExecutionConfig) -> Decimal:
    """What the buys may spend: buying power minus the configured cash reserve."""
    return max(buying_power - config.cash_reserve, ZERO)


def size_buys(
    items: Sequence[RebalancePlanItem],
    assets: Mapping[str, Asset | None],
    quotes: Mapping[str, tuple[Quote | None, str | None]],
    budget: Decimal,
    config: ExecutionConfig,
) -> tuple[list[SizedItem], Decimal]:
    """Size the buys, scaled down together when the budget is below the plan's total.

    Quantities are computed at the ask plus buy_price_buffer_bps, so that the orders fit in
    the buying power even when the price ticks up. Returns the sized items and the scale.
    """
    sized_items: list[SizedItem] = []
    sizeable: list[SizedItem] = []
    for item in items:
        sized = SizedItem(item=item, side=Side.BUY)
        sized_items.append(sized)
        asset = assets.get(item.symbol)
        problem = _asset_problem(item.symbol, asset)
        if problem is not None:
            sized.skip_reason = problem
            continue
        assert asset is not None
        sized.fractionable = asset.fractionable
        quote, quote_problem = quotes.get(item.symbol, (None, "no quote"))
        if quote is None:
            sized.skip_reason = f"no usable quote to size the buy: {quote_problem}"
            continue
        sized.arrival = quote
        sizeable.append(sized)
    planned = sum((s.item.trade_amount or ZERO for s in sizeable), ZERO)
    scale = ONE
    if planned > budget:
        scale = (budget / planned).quantize(SCALE_QUANTUM, rounding=ROUND_DOWN) if planned > ZERO else ZERO
    buffer = ONE + config.buy_price_buffer_bps / BPS
    for sized in sizeable:
        assert sized.item.trade_amount is not None
        assert sized.arrival is not None
        amount = sized.item.trade_amount * scale
        sized.scale_factor = scale
        if scale < ONE:
            sized.notes.append(
                f"scaled to {scale} of the planned amount: {money(amount)} of "
                f"{money(sized.item.trade_amount)} dollars fit in the buying power"
            )
        price = sized.arrival.ask * buffer
        qty = floor_qty(amount / price, sized.fractionable)
        if qty <= ZERO:
            sized.skip_reason = (
                "no buying power left for this buy"
                if amount <= ZERO
                else f"{money(amount)} dollars is less than one share at {sized.arrival.ask}"
                if not sized.fractionable
                else "the amount rounds to zero shares"
            )
            continue
        if (
            sized.fractionable
            and qty != qty.to_integral_value()
            and qty * sized.arrival.ask < config.min_notional
        ):
            sized.skip_reason = f"order notional is below the minimum of {config.min_notional} dollars"
            continue
        sized.qty = qty
    return sized_items, scale

"""Planner properties over random accounts, targets and prices (no execution).

Applying the proposed trades at the planning prices leaves every weight within its band
of the target, or explains the remainder (whole shares, minimum notional, cash); leaves
cash at least the reserve (or says why not); and trades nothing when every weight is
already inside its band and cash covers the reserve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trimtab.domain.account import Position
from trimtab.domain.plan import Action
from trimtab.domain.quotes import Quote
from trimtab.domain.targets import TargetWeights
from trimtab.engine.planner import (
    Adjustment,
    HoldReason,
    PlannerConfig,
    PlanProposal,
    compute_plan,
)

D = Decimal
SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF")
CENT = D("0.01")
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

prices_st = st.decimals(min_value=D("0.50"), max_value=D("2500"), places=3)  # mids: sub-cent
fractional_qty_st = st.decimals(min_value=D("0.0001"), max_value=D("400"), places=4)
whole_qty_st = st.integers(min_value=1, max_value=400).map(D)


@dataclass(frozen=True)
class Scenario:
    targets: TargetWeights
    positions: dict[str, Position]
    prices: dict[str, Decimal]
    cash: Decimal
    config: PlannerConfig
    quotes: dict[str, Quote]

    @property
    def portfolio_value(self) -> Decimal:
        return self.cash + sum(
            (p.qty * self.prices[s] for s, p in self.positions.items()), D(0)
        )


@st.composite
def targets_st(draw: st.DrawFn) -> TargetWeights:
    chosen = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=len(SYMBOLS),
                           unique=True))
    raw = [draw(st.integers(min_value=0, max_value=100)) for _ in chosen]
    cash_part = draw(st.integers(min_value=0, max_value=60))
    total = sum(raw) + cash_part or 1
    weights = {s: (D(n) / D(total)).quantize(D("0.0001"), rounding="ROUND_DOWN")
               for s, n in zip(chosen, raw, strict=True)}
    return TargetWeights.from_mapping(weights)


@st.composite
def config_st(draw: st.DrawFn) -> PlannerConfig:
    return PlannerConfig(
        cash_reserve=draw(st.sampled_from([D(0), D("0.01"), D("0.05"), D("0.2")])),
        drift_band_absolute=draw(st.none() | st.decimals(min_value=0, max_value=D("0.1"), places=3)),
        drift_band_relative=draw(st.none() | st.decimals(min_value=0, max_value=D("0.5"), places=2)),
        min_trade_notional=draw(st.sampled_from([D(0), D(1), D(25), D(250)])),
        whole_shares=draw(st.booleans()),
    )


def quote(symbol: str, mid: Decimal, half_spread_bps: int) -> Quote:
    half = mid * half_spread_bps / D(10000)
    return Quote(symbol, mid - half, mid + half, D(100), D(100), NOW)


@st.composite
def scenario_st(draw: st.DrawFn) -> Scenario:
    targets = draw(targets_st())
    config = draw(config_st())
    prices = {s: draw(prices_st) for s in SYMBOLS}
    positions = {}
    if draw(st.booleans()):
        # Anywhere: random holdings and cash.
        held_symbols = draw(st.lists(st.sampled_from(SYMBOLS), max_size=len(SYMBOLS), unique=True))
        for symbol in held_symbols:
            qty = draw(whole_qty_st | fractional_qty_st)
            positions[symbol] = Position(symbol, qty, qty, prices[symbol])
        cash = draw(st.decimals(min_value=0, max_value=D("200000"), places=2))
    else:
        # Near the targets: each weight off by up to half of it, little cash left.
        value = draw(st.decimals(min_value=D("1000"), max_value=D("1000000"), places=2))
        invested = D(0)
        for symbol, weight in targets.weights.items():
            noise = D(draw(st.integers(min_value=-50, max_value=50))) / D(100)
            qty = (weight * (1 + noise) * value / prices[symbol]).quantize(D("0.0001"))
            if qty > 0:
                positions[symbol] = Position(symbol, qty, qty, prices[symbol])
                invested += qty * prices[symbol]
        cash = max(value - invested, D(0)).quantize(CENT)
    with_quotes = draw(st.booleans())
    quotes = {}
    if with_quotes:
        quotes = {s: quote(s, prices[s], draw(st.integers(min_value=0, max_value=40)))
                  for s in SYMBOLS}
    return Scenario(targets, positions, prices, cash, config, quotes)


def propose(scenario: Scenario) -> PlanProposal:
    return compute_plan(
        scenario.targets, scenario.positions, scenario.prices, scenario.portfolio_value,
        scenario.config, "prop", quotes=scenario.quotes,
    )


def apply(scenario: Scenario, proposal: PlanProposal) -> tuple[dict[str, Decimal], Decimal]:
    """The values per symbol and the cash after every trade fills at the planning price."""
    values = {s: p.qty * scenario.prices[s] for s, p in scenario.positions.items()}
    cash = scenario.cash
    for item in proposal.items:
        if item.action is Action.HOLD:
            continue
        if item.liquidation:
            cash += values.pop(item.symbol)
            continue
        values[item.symbol] = values.get(item.symbol, D(0)) + item.trade_amount
        cash -= item.trade_amount
    return values, cash


@settings(max_examples=300, deadline=None)
@given(scenario_st())
def test_trades_reach_the_bands_or_explain_the_remainder(scenario: Scenario) -> None:
    value = scenario.portfolio_value
    assume(value > 0)
    proposal = propose(scenario)
    config = scenario.config
    values, cash_after = apply(scenario, proposal)

    # Value is conserved at the planning prices.
    assert abs(sum(values.values(), D(0)) + cash_after - value) < D("1e-12")

    # Cash: at least the reserve (and the estimated cost), or a warning explains why.
    cost = proposal.estimated_cost
    if proposal.warnings and any("below the reserve" in w for w in proposal.warnings):
        for item in proposal.items:
            if item.action is Action.HOLD and item.current_value > item.target_value:
                excess = item.current_value - item.target_value
                allowance = config.min_trade_notional + (item.price or 0) + CENT
                assert excess <= allowance, (item, proposal.warnings)
    else:
        assert cash_after - cost >= proposal.reserve_amount - D("1e-12")

    limited = [i for i in proposal.items
               if i.hold_reason is HoldReason.NO_CASH or Adjustment.CASH_LIMITED in i.adjustments]
    if limited:
        # Cash is what bound these buys: what is left above the reserve is rounding dust.
        # (plus a cent per trade: amounts are whole cents, liquidations rounded down)
        slack = sum((config.min_trade_notional + (i.price or 0 if config.whole_shares else 0)
                     + CENT for i in limited), D(0)) + CENT * len(proposal.trading_items)
        assert cash_after - cost - proposal.reserve_amount <= slack

    for item in proposal.items:
        new_value = values.get(item.symbol, D(0))
        target = item.target_value
        gap = abs(new_value - target)
        band = config.band(item.target_portfolio_weight)
        inside = abs(new_value / value - item.target_portfolio_weight) <= band + CENT / value
        price = item.price or D(0)
        if item.liquidation:
            assert new_value == 0
        elif item.hold_reason is HoldReason.INSIDE_BAND:
            assert abs(item.current_weight - item.target_portfolio_weight) <= band
        elif item.hold_reason is HoldReason.NOTHING_HELD:
            assert item.current_qty == 0
            assert item.target_weight == 0
        elif item.hold_reason is HoldReason.BELOW_MINIMUM:
            assert gap < config.min_trade_notional + (price if config.whole_shares else 0) + CENT
        elif item.hold_reason is HoldReason.LESS_THAN_ONE_SHARE:
            assert config.whole_shares
            assert gap <= price + CENT  # half a share, or the fraction a sell cannot reach
        elif item.hold_reason is HoldReason.NO_CASH or Adjustment.CASH_LIMITED in item.adjustments:
            assert item.action in (Action.BUY, Action.HOLD)
            assert new_value <= target + CENT  # never bought past the target
        elif Adjustment.WHOLE_SHARES in item.adjustments:
            assert gap <= price + CENT
            assert item.trade_qty == item.trade_qty.to_integral_value()
        else:
            assert inside, item
        # Never sell more than held.
        assert item.current_qty + item.trade_qty >= 0


@settings(max_examples=200, deadline=None)
@given(scenario_st())
def test_plan_matches_proposal(scenario: Scenario) -> None:
    assume(scenario.portfolio_value > 0)
    proposal = propose(scenario)
    assert [i.symbol for i in proposal.plan.items] == [i.symbol for i in proposal.items]
    for plan_item, item in zip(proposal.plan.items, proposal.items, strict=True):
        assert plan_item.action is item.action
        if item.liquidation:
            assert plan_item.is_liquidation
        elif item.action is not Action.HOLD:
            assert plan_item.trade_amount == item.trade_amount
            assert abs(item.trade_amount) >= scenario.config.min_trade_notional
            assert item.trade_amount.as_tuple().exponent == -2
    held_unlisted = set(scenario.positions) - set(scenario.targets.weights)
    for item in proposal.items:
        if item.symbol in held_unlisted:
            assert item.liquidation
            assert item.target_weight == 0


@st.composite
def balanced_st(draw: st.DrawFn) -> Scenario:
    """Every target held inside its band, nothing else held, cash above the reserve."""
    targets = draw(targets_st())
    config = draw(config_st())
    assume(config.drift_band_absolute is not None or config.drift_band_relative is not None)
    value = draw(st.decimals(min_value=D("1000"), max_value=D("1000000"), places=2))
    prices = {s: draw(prices_st) for s in SYMBOLS}
    positions = {}
    invested = D(0)
    for symbol, weight in targets.weights.items():
        portfolio_weight = weight * (1 - config.cash_reserve)
        band = config.band(portfolio_weight)
        # A drift strictly inside the band (a fraction of it, either side).
        fraction = D(draw(st.integers(min_value=-90, max_value=90))) / D(100)
        weight_now = portfolio_weight + band * fraction
        if weight_now <= 0:
            continue
        qty = (weight_now * value / prices[symbol]).quantize(D("0.000000001"))
        positions[symbol] = Position(symbol, qty, qty, prices[symbol])
        invested += qty * prices[symbol]
    cash = value - invested
    assume(cash >= value * config.cash_reserve)
    quotes = {s: quote(s, prices[s], 5) for s in SYMBOLS}
    return Scenario(targets, positions, prices, cash, config, quotes)


@settings(max_examples=200, deadline=None)
@given(balanced_st())
def test_nothing_trades_when_every_weight_is_inside_its_band(scenario: Scenario) -> None:
    proposal = propose(scenario)
    value = scenario.portfolio_value
    for item in proposal.items:
        band = scenario.config.band(item.target_portfolio_weight)
        if item.current_qty > 0:
            assume(abs(item.current_value / value - item.target_portfolio_weight) <= band)
        else:
            assume(item.target_weight == 0 or band >= item.target_portfolio_weight)
    assert proposal.trading_items == ()
    assert proposal.total_buys == proposal.total_sells == 0

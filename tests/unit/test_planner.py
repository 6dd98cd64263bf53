"""The planner: from targets, positions and prices to a plan (examples)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from trimtab.domain.account import Position
from trimtab.domain.errors import ConfigurationError, PlanValidationError
from trimtab.domain.plan import Action
from trimtab.domain.quotes import Quote
from trimtab.domain.targets import TargetWeights
from trimtab.engine.planner import (
    Adjustment,
    HoldReason,
    PlannerConfig,
    PlanProposal,
    ProposalItem,
    compute_plan,
)

D = Decimal


def pos(symbol: str, qty: str) -> Position:
    return Position(symbol=symbol, qty=D(qty), qty_available=D(qty), avg_entry_price=D("1"))


def positions(**qty: str) -> dict[str, Position]:
    return {symbol: pos(symbol, q) for symbol, q in qty.items()}


def plan(
    targets: Mapping[str, str],
    held: Mapping[str, Position],
    prices: Mapping[str, str],
    value: str,
    config: PlannerConfig | None = None,
    quotes: Mapping[str, Quote] | None = None,
) -> PlanProposal:
    return compute_plan(
        TargetWeights.from_mapping(targets),
        held,
        {symbol: D(price) for symbol, price in prices.items()},
        D(value),
        config or PlannerConfig(min_trade_notional=D(0)),
        "plan-1",
        quotes=quotes,
    )


def item(proposal: PlanProposal, symbol: str) -> ProposalItem:
    return next(i for i in proposal.items if i.symbol == symbol)


def test_from_cash_buys_each_target() -> None:
    proposal = plan({"SPY": "0.6", "BND": "0.4"}, {}, {"SPY": "500", "BND": "80"}, "10000")
    assert item(proposal, "SPY").trade_amount == D("6000.00")
    assert item(proposal, "BND").trade_amount == D("4000.00")
    assert item(proposal, "SPY").trade_qty == D("12")
    assert proposal.total_buys == D("10000.00")
    assert proposal.total_sells == 0
    assert proposal.projected_cash == 0
    assert [(i.symbol, i.action, i.trade_amount) for i in proposal.plan.items] == [
        ("SPY", Action.BUY, D("6000.00")),
        ("BND", Action.BUY, D("4000.00")),
    ]


def test_rebalances_between_positions_and_reports_weights() -> None:
    # SPY 70 %, BND 30 % of 10 000; targets 50/50.
    proposal = plan({"SPY": "0.5", "BND": "0.5"}, positions(SPY="14", BND="30"),
                    {"SPY": "500", "BND": "100"}, "10000")
    spy, bnd = item(proposal, "SPY"), item(proposal, "BND")
    assert spy.current_value == D("7000")
    assert spy.current_weight == D("0.7")
    assert spy.target_value == D("5000")
    assert spy.target_weight == D("0.5")
    assert spy.action is Action.SELL
    assert spy.trade_amount == D("-2000.00")
    assert bnd.action is Action.BUY
    assert bnd.trade_amount == D("2000.00")
    assert proposal.turnover == D("4000.00")
    assert proposal.turnover_fraction == D("0.4")
    assert proposal.cash == 0


def test_unlisted_held_symbol_is_liquidated() -> None:
    proposal = plan({"SPY": "0.5"}, positions(SPY="10", OLD="7.2273576"),
                    {"SPY": "500", "OLD": "100"}, "10000")
    old = item(proposal, "OLD")
    assert old.action is Action.SELL
    assert old.liquidation
    assert not old.in_targets
    assert old.target_weight == 0
    assert old.trade_qty == D("-7.2273576")  # the exact position, never a rounded one
    assert old.reason == "not in targets"
    plan_item = next(i for i in proposal.plan.items if i.symbol == "OLD")
    assert plan_item.is_liquidation
    assert plan_item.trade_amount is None


def test_target_zero_for_a_held_symbol_is_a_liquidation_even_if_tiny() -> None:
    config = PlannerConfig(min_trade_notional=D("100"), drift_band_absolute=D("0.05"))
    proposal = plan({"SPY": "0.5", "BND": "0"}, positions(SPY="10", BND="0.01"),
                    {"SPY": "500", "BND": "100"}, "10000", config)
    bnd = item(proposal, "BND")
    assert bnd.action is Action.SELL
    assert bnd.liquidation
    assert bnd.in_targets
    assert bnd.trade_amount == D("-1.00")
    assert bnd.reason == "target 0"


def test_target_zero_not_held_is_a_hold_without_a_price() -> None:
    proposal = plan({"SPY": "0.5", "BND": "0"}, {}, {"SPY": "500"}, "10000")
    bnd = item(proposal, "BND")
    assert bnd.action is Action.HOLD
    assert bnd.hold_reason is HoldReason.NOTHING_HELD


def test_inside_absolute_band_holds() -> None:
    config = PlannerConfig(drift_band_absolute=D("0.05"), min_trade_notional=D(0))
    # SPY at 0.54 vs 0.5 target: inside; BND at 0.40 vs 0.5: outside.
    proposal = plan({"SPY": "0.5", "BND": "0.5"}, positions(SPY="54", BND="40"),
                    {"SPY": "100", "BND": "100"}, "10000", config)
    assert item(proposal, "SPY").hold_reason is HoldReason.INSIDE_BAND
    assert item(proposal, "SPY").trade_amount == 0
    assert item(proposal, "BND").trade_amount == D("600.00")  # limited by cash: 600 is all there is
    assert Adjustment.CASH_LIMITED in item(proposal, "BND").adjustments


def test_relative_band_scales_with_the_target() -> None:
    config = PlannerConfig(drift_band_relative=D("0.25"), min_trade_notional=D(0))
    # A at 0.12 vs 0.10 (band 0.025): inside. B at 0.53 vs 0.60 (band 0.15): inside.
    # C at 0.06 vs 0.10 (band 0.025): outside.
    proposal = plan({"A": "0.1", "B": "0.6", "C": "0.1"}, positions(A="12", B="53", C="6"),
                    {"A": "100", "B": "100", "C": "100"}, "10000", config)
    assert item(proposal, "A").hold_reason is HoldReason.INSIDE_BAND
    assert item(proposal, "B").hold_reason is HoldReason.INSIDE_BAND
    assert item(proposal, "C").action is Action.BUY
    assert item(proposal, "C").trade_amount == D("400.00")


def test_both_bands_hold_only_inside_both() -> None:
    config = PlannerConfig(drift_band_absolute=D("0.05"), drift_band_relative=D("0.25"))
    assert config.band(D("0.6")) == D("0.05")
    assert config.band(D("0.1")) == D("0.025")
    assert config.band(D("0")) == 0
    assert PlannerConfig().band(D("0.5")) == 0


def test_band_applies_to_the_reserve_scaled_target() -> None:
    config = PlannerConfig(cash_reserve=D("0.1"), drift_band_absolute=D("0.01"),
                           min_trade_notional=D(0))
    # Target 1.0 of the investable 90 %: a 90 % holding is on target.
    proposal = plan({"SPY": "1"}, positions(SPY="90"), {"SPY": "100"}, "10000", config)
    spy = item(proposal, "SPY")
    assert spy.target_portfolio_weight == D("0.9")
    assert spy.target_value == D("9000.0")
    assert spy.hold_reason is HoldReason.INSIDE_BAND


def test_min_trade_notional_turns_small_trades_into_holds() -> None:
    config = PlannerConfig(min_trade_notional=D("50"))
    proposal = plan({"SPY": "0.5", "BND": "0.5"}, positions(SPY="49.6", BND="50"),
                    {"SPY": "100", "BND": "100"}, "10000", config)
    spy = item(proposal, "SPY")
    assert spy.action is Action.HOLD
    assert spy.hold_reason is HoldReason.BELOW_MINIMUM
    assert spy.reason == "below minimum trade"


def test_whole_shares_rounds_each_trade_to_shares_at_the_price() -> None:
    config = PlannerConfig(whole_shares=True, min_trade_notional=D(0))
    proposal = plan({"SPY": "0.5", "BND": "0.45"}, {}, {"SPY": "333", "BND": "70.10"}, "10000", config)
    spy, bnd = item(proposal, "SPY"), item(proposal, "BND")
    assert spy.trade_qty == D("15")
    assert spy.trade_amount == D("4995.00")
    assert bnd.trade_qty == D("64")
    assert bnd.trade_amount == D("4486.40")
    assert Adjustment.WHOLE_SHARES in spy.adjustments
    assert proposal.projected_cash >= 0


def test_whole_shares_less_than_one_share_holds() -> None:
    config = PlannerConfig(whole_shares=True, min_trade_notional=D(0))
    proposal = plan({"BRK.A": "0.5"}, {}, {"BRK.A": "700000"}, "10000", config)
    assert item(proposal, "BRK.A").hold_reason is HoldReason.LESS_THAN_ONE_SHARE


def test_whole_shares_never_sells_more_than_held() -> None:
    config = PlannerConfig(whole_shares=True, min_trade_notional=D(0))
    proposal = plan({"SPY": "0.0001", "BND": "0.5"}, positions(SPY="10.6"),
                    {"SPY": "500", "BND": "100"}, "10000", config)
    spy = item(proposal, "SPY")
    assert spy.action is Action.SELL
    assert spy.trade_qty == D("-10")


def test_cash_reserve_is_kept() -> None:
    config = PlannerConfig(cash_reserve=D("0.05"), min_trade_notional=D(0))
    proposal = plan({"SPY": "0.6", "BND": "0.4"}, {}, {"SPY": "500", "BND": "80"}, "10000", config)
    assert proposal.reserve_amount == D("500.00")
    assert proposal.investable_value == D("9500.00")
    assert item(proposal, "SPY").trade_amount == D("5700.00")
    assert proposal.projected_cash == D("500.00")


def test_reserve_is_restored_by_selling_inside_the_band() -> None:
    config = PlannerConfig(cash_reserve=D("0.05"), drift_band_absolute=D("0.06"),
                           min_trade_notional=D(0))
    # Fully invested, every holding inside its band, but cash 0 < reserve 500.
    proposal = plan({"SPY": "0.6", "BND": "0.4"}, positions(SPY="60", BND="40"),
                    {"SPY": "100", "BND": "100"}, "10000", config)
    assert proposal.projected_cash >= proposal.reserve_amount
    restored = [i for i in proposal.items if Adjustment.RESERVE_RESTORE in i.adjustments]
    assert restored
    assert all(i.action is Action.SELL for i in restored)
    assert not proposal.warnings


def test_buys_are_scaled_when_holds_leave_too_little_cash() -> None:
    config = PlannerConfig(drift_band_absolute=D("0.05"), min_trade_notional=D(0))
    # SPY overweight inside its band keeps 400 that the BND buy would need.
    proposal = plan({"SPY": "0.5", "BND": "0.5"}, positions(SPY="54"),
                    {"SPY": "100", "BND": "100"}, "10000", config)
    bnd = item(proposal, "BND")
    assert bnd.trade_amount == D("4600.00")
    assert bnd.adjustments == (Adjustment.CASH_LIMITED,)
    assert proposal.projected_cash == 0


def test_costs_are_estimated_and_kept_out_of_the_reserve() -> None:
    now = datetime(2026, 1, 5, 15, tzinfo=UTC)
    quotes = {
        "SPY": Quote("SPY", D("99.95"), D("100.05"), D("100"), D("100"), now),  # 5 bps half-spread
        "BND": Quote("BND", D("99.90"), D("100.10"), D("100"), D("100"), now),  # 10 bps
    }
    proposal = plan({"SPY": "0.5", "BND": "0.5"}, positions(SPY="100"),
                    {"SPY": "100", "BND": "100"}, "10000", quotes=quotes)
    spy, bnd = item(proposal, "SPY"), item(proposal, "BND")
    assert spy.trade_amount == D("-5000.00")
    assert spy.estimated_cost == D("2.5")
    # The buy leaves room for both trades' costs: 5000 - 2.5 = b x 1.001.
    assert bnd.trade_amount == D("4992.50")
    assert proposal.projected_cash - proposal.estimated_cost >= 0
    assert proposal.estimated_cost_bps == pytest.approx(D("7.5"), abs=D("0.01"))


def test_missing_price_of_a_held_symbol_refuses() -> None:
    with pytest.raises(PlanValidationError, match="no usable price for OLD"):
        plan({"SPY": "0.5"}, positions(SPY="1", OLD="1"), {"SPY": "100"}, "10000")


def test_missing_price_of_a_target_to_buy_refuses_and_names_the_problem() -> None:
    with pytest.raises(PlanValidationError, match=r"GLD \(stale quote\)"):
        compute_plan(
            TargetWeights.from_mapping({"GLD": "0.5"}), {}, {}, D("10000"), PlannerConfig(),
            "p", price_problems={"GLD": "stale quote"},
        )


@pytest.mark.parametrize("bad", ["0", "-1", "NaN"])
def test_unusable_prices_refuse(bad: str) -> None:
    with pytest.raises(PlanValidationError, match="SPY"):
        plan({"SPY": "0.5"}, {}, {"SPY": bad}, "10000")


def test_non_positive_portfolio_value_refuses() -> None:
    with pytest.raises(PlanValidationError, match="portfolio value"):
        plan({"SPY": "0.5"}, {}, {"SPY": "1"}, "0")


def test_short_position_refuses() -> None:
    with pytest.raises(PlanValidationError, match="short position"):
        plan({"SPY": "0.5"}, positions(SPY="-3"), {"SPY": "1"}, "10000")


def test_all_holds_still_make_a_valid_plan() -> None:
    config = PlannerConfig(drift_band_absolute=D("0.1"))
    proposal = plan({"SPY": "1"}, positions(SPY="100"), {"SPY": "100"}, "10000", config)
    assert proposal.trading_items == ()
    assert [i.action for i in proposal.plan.items] == [Action.HOLD]


def test_plan_id_and_digest() -> None:
    proposal = plan({"SPY": "0.5"}, {}, {"SPY": "100"}, "10000")
    assert proposal.plan_id == "plan-1"
    renamed = proposal.with_plan_id("daily-1", correlation_id="c-7")
    assert renamed.plan.plan_id == "daily-1"
    assert renamed.plan.correlation_id == "c-7"
    assert renamed.content_digest() == proposal.content_digest()
    other = plan({"SPY": "0.4"}, {}, {"SPY": "100"}, "10000")
    assert other.content_digest() != proposal.content_digest()
    with pytest.raises(PlanValidationError, match="plan_id"):
        proposal.with_plan_id("  ")


def test_targets_may_be_a_plain_mapping() -> None:
    proposal = compute_plan({"spy": "0.5"}, {}, {"SPY": D("100")}, D("1000"), PlannerConfig(), "p")
    assert item(proposal, "SPY").trade_amount == D("500.00")


def test_amounts_are_decimal_cents() -> None:
    proposal = plan({"SPY": "0.333333"}, {}, {"SPY": "3.17"}, "12345.67")
    spy = item(proposal, "SPY")
    assert spy.trade_amount == D("4115.22")
    assert spy.trade_amount.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cash_reserve", "1", "below 1"),
        ("cash_reserve", "-0.1", "negative"),
        ("drift_band_absolute", "1.5", "at most 1"),
        ("drift_band_relative", "NaN", "finite"),
        ("min_trade_notional", "abc", "not a number"),
        ("max_spread_bps", "0", "positive"),
        ("quote_max_age", 0, "greater than 0"),
        ("unknown_field", "1", "unknown field"),
    ],
)
def test_config_is_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        PlannerConfig.from_mapping({field: value})
    assert field in str(info.value)


def test_config_reads_floats_through_their_text_and_is_frozen() -> None:
    config = PlannerConfig.from_mapping({"cash_reserve": 0.02, "drift_band_absolute": "0.05"})
    assert config.cash_reserve == D("0.02")
    with pytest.raises(ValueError, match="frozen"):
        config.cash_reserve = D("0.5")  # type: ignore[misc]


def test_a_buy_scaled_below_the_minimum_holds_for_lack_of_cash() -> None:
    config = PlannerConfig(drift_band_absolute=D("0.495"), min_trade_notional=D("200"))
    # SPY at 0.99 is inside its band; BND is outside but only 100 of cash is left.
    proposal = plan({"SPY": "0.5", "BND": "0.5"}, positions(SPY="99"),
                    {"SPY": "100", "BND": "100"}, "10000", config)
    bnd = item(proposal, "BND")
    assert bnd.action is Action.HOLD
    assert bnd.hold_reason is HoldReason.NO_CASH
    assert proposal.warnings == ("no cash left above the reserve to buy BND",)

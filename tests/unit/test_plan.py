from __future__ import annotations

from decimal import Decimal

import pytest

from tests.plan_corpus import BAD_PLANS, BadPlan
from trimtab.domain.errors import PlanValidationError
from trimtab.domain.plan import Action, RebalancePlan, Urgency
from trimtab.domain.planfile import format_of, parse_plan_text


@pytest.mark.parametrize("bad", BAD_PLANS, ids=[b.name for b in BAD_PLANS])
def test_invalid_plans_are_rejected_with_one_clear_line(bad: BadPlan) -> None:
    with pytest.raises(PlanValidationError) as caught:
        parse_plan_text(bad.text, bad.fmt)
    message = str(caught.value)
    assert "\n" not in message
    for word in bad.expect:
        assert word in message, f"{word!r} missing from {message!r}"


def test_json_plan_parses_amounts_as_decimals() -> None:
    plan = parse_plan_text(
        '{"plan_id": "p", "items": [{"symbol": "spy", "action": "sell", "trade_amount": -5000.10},'
        '{"symbol": "BND", "action": "SELL", "target_weight": 0},'
        '{"symbol": "TQQQ", "action": "BUY", "trade_amount": "2500", "urgency": "high"}]}',
        "json",
    )
    assert plan.items[0].symbol == "SPY"
    assert plan.items[0].action is Action.SELL
    assert plan.items[0].trade_amount == Decimal("-5000.10")
    assert plan.items[1].is_liquidation
    assert plan.urgency_of(plan.items[2]) is Urgency.HIGH


def test_csv_and_yaml_give_the_same_plan() -> None:
    csv_plan = parse_plan_text(
        "plan_id,symbol,action,trade_amount,target_weight\np,SPY,SELL,-100,\np,BND,SELL,,0\n", "csv"
    )
    yaml_plan = parse_plan_text(
        "plan_id: p\nitems:\n  - {symbol: SPY, action: SELL, trade_amount: '-100'}\n"
        "  - {symbol: BND, action: SELL, target_weight: 0}\n",
        "yaml",
    )
    assert csv_plan == yaml_plan
    assert csv_plan.content_hash() == yaml_plan.content_hash()


def test_content_hash_changes_with_content() -> None:
    a = RebalancePlan.model_validate({"plan_id": "p", "items": [{"symbol": "SPY", "action": "HOLD"}]})
    b = RebalancePlan.model_validate({"plan_id": "p", "items": [{"symbol": "IBM", "action": "HOLD"}]})
    assert a.content_hash() != b.content_hash()


def test_format_from_extension() -> None:
    assert format_of("x.JSON") == "json"
    assert format_of("x.yml") == "yaml"
    with pytest.raises(PlanValidationError, match="format"):
        format_of("plan.txt")

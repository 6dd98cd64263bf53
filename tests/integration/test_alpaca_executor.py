"""The Executor driving AlpacaBroker against the sandbox: a small plan end to end."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.contract.venues import alpaca_config, sandbox_for
from trimtab.adapters.alpaca import AlpacaBroker
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

ACCOUNT = {"cash": "5000", "positions": {"SPY": "80", "IBM": "12.5"}}
PLAN = RebalancePlan.model_validate(
    {
        "plan_id": "e2e-alpaca",
        "correlation_id": "sandbox",
        "items": [
            {"symbol": "SPY", "action": "SELL", "trade_amount": "-2000"},
            {"symbol": "IBM", "action": "SELL", "target_weight": "0"},
            {"symbol": "AAPL", "action": "BUY", "trade_amount": "3000"},
            {"symbol": "QQQ", "action": "BUY", "trade_amount": "2500"},
            {"symbol": "GLD", "action": "HOLD"},
        ],
    }
)


def config(algo: str) -> ExecutionConfig:
    return ExecutionConfig.model_validate(
        {
            "algo": algo,
            "ladders": {"NORMAL": {"fill_wait": 1.0, "steps": ["0", "0.5", "1"]}},
            "settlement_timeout": 10,
            "sell_phase_timeout": 60,
            "buy_phase_timeout": 60,
            "plan_timeout": 120,
        }
    )


@pytest.mark.parametrize("algo", ["smart", "market"])
def test_executor_runs_a_plan_through_alpaca(algo: str) -> None:
    with sandbox_for(ACCOUNT) as handle:

        async def main() -> tuple[ExecutionResult, ExecutionResult, dict[str, Decimal], AlpacaBroker]:
            broker = AlpacaBroker(alpaca_config(handle))
            async with asyncio.timeout(90), Executor(broker, config(algo)) as executor:
                result = await executor.execute_rebalance_plan(PLAN)
                again = await executor.execute_rebalance_plan(PLAN)
                positions = {s: p.qty for s, p in (await broker.get_positions()).items()}
            return result, again, positions, broker

        result, again, positions, broker = asyncio.run(main())
    assert result.status is ExecutionStatus.SUCCESS, result.model_dump_json(indent=1)
    assert result.orders_placed == 4
    assert result.orders_succeeded == 4
    by_symbol = {o.symbol: o for o in result.orders}
    assert by_symbol["IBM"].filled_shares == Decimal("12.5")
    assert "IBM" not in positions
    assert positions["SPY"] == Decimal(80) - by_symbol["SPY"].filled_shares
    assert positions["AAPL"] == by_symbol["AAPL"].filled_shares
    assert positions["QQQ"] == by_symbol["QQQ"].filled_shares
    for symbol in ("AAPL", "QQQ"):
        order = by_symbol[symbol]
        assert order.avg_fill_price is not None
        assert order.arrival_mid is not None
        assert abs(order.filled_shares * order.avg_fill_price - order.trade_amount) < Decimal(20)  # type: ignore[operator]
    assert again.already_executed
    assert not broker.degraded
    assert broker.polls == 0
    assert broker.requests_made <= 40
    assert broker.peak_requests_per_minute <= 200

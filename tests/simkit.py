"""Helpers for tests that run the Executor on the simulated exchange in virtual time."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.orders import OrderEvent
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

D = Decimal
START = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 10:00 in New York


class FixedClock:
    """A clock that stands still at one instant (for code that only stamps times)."""

    def __init__(self, at: datetime = START) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return 0.0


def plan(plan_id: str, *items: dict[str, Any], **extra: Any) -> RebalancePlan:
    return RebalancePlan.model_validate({"plan_id": plan_id, "items": list(items), **extra})


def sell(symbol: str, amount: str | None = None, **extra: Any) -> dict[str, Any]:
    if amount is None:
        return {"symbol": symbol, "action": "SELL", "target_weight": "0", **extra}
    return {"symbol": symbol, "action": "SELL", "trade_amount": amount, **extra}


def buy(symbol: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": symbol, "action": "BUY", "trade_amount": amount, **extra}


def broker(cash: str = "100000", positions: Mapping[str, str] | None = None, **options: Any) -> SimBroker:
    return SimBroker(
        seed=options.pop("seed", 11),
        cash=D(cash),
        positions={k: D(v) for k, v in (positions or {}).items()},
        start=START,
        **options,
    )


class EventLog:
    """Every order event the broker delivers, in order."""

    def __init__(self, sim: SimBroker) -> None:
        self.events: list[OrderEvent] = []
        sim.add_order_listener(self.events.append)

    def of(self, symbol: str) -> list[OrderEvent]:
        return [e for e in self.events if e.order.symbol == symbol]


def execute(
    sim: SimBroker,
    the_plan: RebalancePlan,
    config: ExecutionConfig | None = None,
    before: Callable[[SimBroker], Coroutine[Any, Any, None]] | None = None,
    **executor_options: Any,
) -> ExecutionResult:
    """Run the plan on sim in virtual time and return the result."""

    async def main() -> ExecutionResult:
        async with Executor(sim, config, **executor_options) as executor:
            if before is not None:
                await before(sim)
            return await executor.execute_rebalance_plan(the_plan)

    return run_virtual(main())

"""AlpacaBroker under the sandbox's faults: unknown outcomes, 429 bursts, silent and dropped streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from tests.contract.venues import KEY_ID, alpaca_config, sandbox_for
from trimtab.adapters.alpaca import AlpacaBroker
from trimtab.adapters.sandbox import SandboxHandle
from trimtab.domain.errors import UnknownOrderOutcomeError
from trimtab.domain.orders import ClientOrderId, OrderEvent, OrderRequest, OrderStatus, OrderType, Side
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

T = TypeVar("T")
ACCOUNT = {"cash": "20000", "positions": {"SPY": "60", "IBM": "15"}}
FAST = ExecutionConfig.model_validate(
    {
        "ladders": {"NORMAL": {"fill_wait": 1.0, "steps": ["0", "0.5", "1"]}},
        "settlement_timeout": 10,
        "order_ack_timeout": 5,
        "market_order_timeout": 10,
        "sell_phase_timeout": 60,
        "buy_phase_timeout": 60,
        "plan_timeout": 120,
    }
)
WATCHFUL = {
    "stream_ack_timeout": 1.0,
    "poll_interval": 0.3,
    "watchdog_interval": 0.1,
    "market_order_expect": 2.0,
}


def plan(plan_id: str) -> RebalancePlan:
    return RebalancePlan.model_validate(
        {
            "plan_id": plan_id,
            "items": [
                {"symbol": "SPY", "action": "SELL", "trade_amount": "-1500"},
                {"symbol": "IBM", "action": "SELL", "target_weight": "0"},
                {"symbol": "AAPL", "action": "BUY", "trade_amount": "2000"},
                {"symbol": "QQQ", "action": "BUY", "trade_amount": "1500"},
            ],
        }
    )


def with_broker(handle: SandboxHandle, body: Callable[[AlpacaBroker], Awaitable[T]], **overrides: Any) -> T:
    async def main() -> T:
        broker = AlpacaBroker(alpaca_config(handle, **overrides))
        await broker.start()
        try:
            async with asyncio.timeout(90):
                return await body(broker)
        finally:
            await broker.close()

    return asyncio.run(main())


async def execute(
    broker: AlpacaBroker, the_plan: RebalancePlan, config: ExecutionConfig = FAST
) -> ExecutionResult:
    async with Executor(broker, config) as executor:
        return await executor.execute_rebalance_plan(the_plan)


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait until condition() holds, checking every 50 ms; fail after timeout seconds."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def orders_at_sandbox(handle: SandboxHandle, symbol: str) -> int:
    account = handle.account(KEY_ID)
    return handle.call(lambda: sum(1 for r in account.records.values() if r.snapshot.symbol == symbol))


def request(symbol: str, qty: str, side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest(
        ClientOrderId(f"ft-{uuid.uuid4().hex[:10]}"), symbol, side, Decimal(qty), OrderType.MARKET
    )


@pytest.mark.parametrize("status", [504, 500])
def test_unknown_outcome_is_resolved_by_client_order_id(status: int) -> None:
    with sandbox_for(ACCOUNT) as handle:
        handle.set_faults(submit_error_status=status, submit_errors=1)

        async def body(broker: AlpacaBroker) -> None:
            order = request("AAPL", "3")
            with pytest.raises(UnknownOrderOutcomeError):
                await broker.submit_order(order)
            found = await broker.get_order_by_client_id(order.client_order_id)
            assert found is not None
            assert found.qty == Decimal(3)

        with_broker(handle, body)
        assert orders_at_sandbox(handle, "AAPL") == 1


def test_504_after_acceptance_is_adopted_not_duplicated() -> None:
    with sandbox_for(ACCOUNT) as handle:

        async def body(broker: AlpacaBroker) -> ExecutionResult:
            handle.set_faults(submit_error_status=504, submit_errors=2)
            return await execute(broker, plan("fault-504"))

        result = with_broker(handle, body)
        assert handle.set_faults().submit_errors == 0  # both faults fired
        assert result.status is ExecutionStatus.SUCCESS, result.model_dump_json(indent=1)
        for order in result.orders:
            assert order.filled_shares == order.shares
        # Two orders were answered 504 after the exchange took them; each exists once.
        total = sum(orders_at_sandbox(handle, o.symbol) for o in result.orders)
        assert total == sum(len(o.attempts) for o in result.orders)


def test_429_bursts_slow_the_plan_down_without_failing_it() -> None:
    with sandbox_for(ACCOUNT) as handle:

        async def body(broker: AlpacaBroker) -> tuple[ExecutionResult, int]:
            handle.set_faults(rate_limit_burst=4)
            result = await execute(broker, plan("fault-429"))
            return result, broker.rate_limited

        result, limited = with_broker(handle, body)
        assert result.status is ExecutionStatus.SUCCESS, result.model_dump_json(indent=1)
        assert limited == 4
        stats = handle.stats()[0]
        assert stats["refused"] + stats["data_refused"] == 4


def test_silent_stream_is_detected_and_the_plan_completes() -> None:
    with sandbox_for(ACCOUNT) as handle:

        async def body(broker: AlpacaBroker) -> tuple[ExecutionResult, AlpacaBroker]:
            handle.set_faults(stream_silent=True)
            result = await execute(broker, plan("fault-silent"))
            return result, broker

        result, broker = with_broker(handle, body, **WATCHFUL)
        assert result.status is ExecutionStatus.SUCCESS, result.model_dump_json(indent=1)
        assert broker.silences_detected >= 1
        assert broker.polls >= 1
        assert broker.rest_events > 0
        assert broker.stream_events == 0
        assert handle.stats()[0]["events_dropped"] > 0


def test_stream_recovers_after_a_silence() -> None:
    with sandbox_for(ACCOUNT) as handle:

        async def body(broker: AlpacaBroker) -> AlpacaBroker:
            events: list[OrderEvent] = []
            broker.add_order_listener(events.append)
            handle.set_faults(stream_silent=True)
            first = await broker.submit_order(request("AAPL", "1"))
            await eventually(lambda: broker.degraded)
            handle.set_faults(stream_silent=False)
            stream = broker._order_stream
            assert stream is not None
            await eventually(lambda: stream.connections >= 2 and stream.connected)
            second = await broker.submit_order(request("AAPL", "1"))
            await eventually(lambda: not broker.degraded)
            for snap in (first, second):

                def filled(order_id: str = snap.broker_order_id) -> bool:
                    statuses = [e.order.status for e in events if e.order.broker_order_id == order_id]
                    return OrderStatus.FILLED in statuses

                await eventually(filled)
            return broker

        broker = with_broker(handle, body, **WATCHFUL)
        assert broker.forced_reconnects >= 1
        assert broker.stream_events > 0


def test_disconnects_are_survived() -> None:
    with sandbox_for(ACCOUNT) as handle:

        async def body(broker: AlpacaBroker) -> tuple[ExecutionResult, int]:
            assert handle.disconnect_streams() == 1
            handle.set_faults(stream_disconnect_every=0.7)
            result = await execute(broker, plan("fault-disconnect"))
            handle.set_faults(stream_disconnect_every=0.0)
            stream = broker._order_stream
            assert stream is not None
            return result, stream.connections

        result, connections = with_broker(handle, body, **WATCHFUL)
        assert result.status is ExecutionStatus.SUCCESS, result.model_dump_json(indent=1)
        assert connections >= 2


@pytest.mark.parametrize(
    ("faults", "reason"),
    [({"stale_quotes_seconds": 120.0}, "stale quote"), ({"zero_quotes": True}, "zero-sided")],
)
def test_bad_quotes_are_not_traded_on(faults: dict[str, Any], reason: str) -> None:
    config = FAST.model_copy(update={"quote_refresh_attempts": 1, "quote_refresh_interval": 0.1})
    with sandbox_for(ACCOUNT) as handle:

        async def body(broker: AlpacaBroker) -> ExecutionResult:
            handle.set_faults(**faults)
            one = RebalancePlan.model_validate(
                {
                    "plan_id": f"bad-quotes-{reason}",
                    "items": [{"symbol": "AAPL", "action": "BUY", "trade_amount": "500"}],
                }
            )
            return await execute(broker, one, config)

        result = with_broker(handle, body)
        order = result.orders[0]
        assert order.skipped, result.model_dump_json(indent=1)
        assert order.skip_reason is not None
        assert reason in order.skip_reason
        assert orders_at_sandbox(handle, "AAPL") == 0

"""The Executor on the simulated exchange: phases, gating, sizing, timeouts, idempotency."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from tests.simkit import D, EventLog, broker, buy, execute, plan, sell
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.orders import OrderEventKind, OrderStatus, Side
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

MARKET = ExecutionConfig(algo="market")
SMART = ExecutionConfig(algo="smart")


@pytest.mark.parametrize("config", [MARKET, SMART], ids=["market", "smart"])
def test_no_buy_is_submitted_before_every_sell_is_final(config: ExecutionConfig) -> None:
    sim = broker(cash="1000", positions={"AAA": "300", "BBB": "120.5"})
    log = EventLog(sim)
    result = execute(
        sim, plan("gate", sell("AAA", "-6000"), sell("BBB"), buy("CCC", "5000"), buy("DDD", "2500")), config
    )
    assert result.status is ExecutionStatus.SUCCESS, result.model_dump_json(indent=1)
    sells_final = [
        e.timestamp for e in log.events if e.order.side is Side.SELL and e.order.status.is_terminal
    ]
    buys_created = [e.order.created_at for e in log.events if e.order.side is Side.BUY]
    assert sells_final
    assert buys_created
    assert max(sells_final) <= min(buys_created)


def test_buys_scale_down_to_what_the_sells_raised_and_none_is_rejected() -> None:
    sim = broker(cash="500", positions={"AAA": "20"})
    log = EventLog(sim)
    result = execute(sim, plan("scale", sell("AAA"), buy("CCC", "50000"), buy("DDD", "30000")), MARKET)
    by = {o.symbol: o for o in result.orders}
    raised = by["AAA"].filled_notional
    assert raised > 0
    scale = result.stats.buy_scale_factor
    assert scale is not None
    assert scale < 1
    assert by["CCC"].scale_factor == scale
    assert by["DDD"].scale_factor == scale
    assert any("scaled to" in note for note in by["CCC"].notes)
    assert not [e for e in log.events if e.kind is OrderEventKind.REJECTED]
    spent = by["CCC"].filled_notional + by["DDD"].filled_notional
    assert spent <= D(500) + raised
    assert by["CCC"].success
    assert by["DDD"].success


def test_zero_proceeds_is_a_normal_outcome() -> None:
    sim = broker(cash="0", positions={})
    result = execute(sim, plan("zero", sell("AAA"), buy("CCC", "1000")), MARKET)
    by = {o.symbol: o for o in result.orders}
    assert by["AAA"].skipped
    assert "no position" in (by["AAA"].skip_reason or "")
    assert by["CCC"].skipped
    assert result.status is ExecutionStatus.SUCCESS_WITH_SKIPS
    assert sim.requests_made < 20


def test_liquidation_sells_the_exact_fractional_position() -> None:
    sim = broker(positions={"BND": "7.2273576"})
    result = execute(sim, plan("close", sell("BND")), SMART)
    order = result.orders[0]
    assert order.shares == D("7.2273576")
    assert order.filled_shares == D("7.2273576")
    assert order.success

    async def positions() -> dict[str, Decimal]:
        return {s: p.qty for s, p in (await sim.get_positions()).items()}

    assert "BND" not in run_virtual(positions())


def test_partial_fill_counts_and_phase_timeout_cancels_open_orders() -> None:
    sim = broker(positions={"AAA": "500"})
    config = ExecutionConfig(algo="smart", sell_phase_timeout=60, buy_phase_timeout=60, plan_timeout=120)

    async def freeze(s: SimBroker) -> None:
        s.force_quote("AAA", D("50.00"), D("50.10"), D(300), D(300))

        async def trade_later() -> None:
            await asyncio.sleep(5)
            s.inject_trade("AAA", 120, at="ask")

        asyncio.get_running_loop().create_task(trade_later())

    # The market is frozen with no trades but one: the order rests, fills 120 of 500, times out.
    low = ExecutionConfig.from_mapping(
        {
            **config.model_dump(),
            "ladders": {"NORMAL": {"anchor": "improve", "fill_wait": 600, "steps": ["0"]}},
        }
    )
    result = execute(sim, plan("partial", sell("AAA", "-25025")), low, before=freeze)
    order = result.orders[0]
    assert order.filled_shares == D(120)
    assert not order.success
    assert "filled 120 of 500" in (order.error_message or "")
    assert result.status is ExecutionStatus.FAILURE
    assert result.stats.sell.timed_out
    assert "sell phase timed out" in (result.message or "")
    assert run_virtual(sim.list_open_orders()) == []


def test_no_price_means_skip_with_reason_never_a_guess() -> None:
    sim = broker(cash="10000", positions={})

    async def crossed(s: SimBroker) -> None:
        s.force_quote("CCC", D("20.05"), D("20.00"))

    result = execute(sim, plan("noprice", buy("CCC", "1000")), SMART, before=crossed)
    order = result.orders[0]
    assert order.skipped
    assert "crossed" in (order.skip_reason or "")
    assert order.attempts == ()
    assert run_virtual(sim.get_order_by_client_id(order.client_order_id or "none")) is None  # type: ignore[arg-type]


def test_same_plan_id_twice_sends_nothing_the_second_time() -> None:
    sim = broker(positions={"AAA": "10"})
    the_plan = plan("twice", sell("AAA"))

    async def main() -> tuple[ExecutionResult, ExecutionResult, int, int]:
        async with Executor(sim, MARKET) as executor:
            first = await executor.execute_rebalance_plan(the_plan)
            requests = sim.requests_made
            second = await executor.execute_rebalance_plan(the_plan)
            return first, second, requests, sim.requests_made

    first, second, before, after = run_virtual(main())
    assert before == after
    assert second.already_executed
    assert not first.already_executed
    assert second.orders == first.orders


def test_none_broker_and_none_plan_raise_value_error() -> None:
    with pytest.raises(ValueError, match="broker"):
        Executor(None)  # type: ignore[arg-type]

    async def main() -> None:
        async with Executor(broker(), MARKET) as executor:
            await executor.execute_rebalance_plan(None)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="plan"):
        run_virtual(main())


def test_shutdown_leaves_no_task_running_and_can_be_called_twice() -> None:
    sim = broker(positions={"AAA": "50"})

    async def main() -> set[asyncio.Task[object]]:
        before = asyncio.all_tasks()
        executor = Executor(sim, SMART)
        async with executor:
            await executor.execute_rebalance_plan(plan("life", sell("AAA"), buy("CCC", "1000")))
        await executor.shutdown()
        await asyncio.sleep(0)
        return asyncio.all_tasks() - before

    assert run_virtual(main()) == set()


def test_shutdown_during_a_run_cancels_it_and_its_orders() -> None:
    sim = broker(positions={"AAA": "500"})

    async def main() -> list[object]:
        executor = Executor(sim, SMART)
        await executor.start()
        sim.force_quote("AAA", D("50.00"), D("50.10"))
        run = asyncio.create_task(executor.execute_rebalance_plan(plan("stop", sell("AAA"))))
        await asyncio.sleep(3)
        await executor.shutdown()
        await executor.shutdown()
        with pytest.raises(asyncio.CancelledError):
            await run
        return list(await sim.list_open_orders())

    assert run_virtual(main()) == []


def test_every_log_record_of_a_run_carries_plan_and_correlation_ids(caplog: pytest.LogCaptureFixture) -> None:
    sim = broker(cash="1000", positions={"AAA": "30"})
    with caplog.at_level(logging.DEBUG, logger="trimtab"):
        result = execute(
            sim,
            plan("logs", sell("AAA"), buy("CCC", "800"), buy("ZZZ", "100"), correlation_id="corr-7"),
            SMART,
            before=_make_stale("ZZZ"),
        )
    records = [r for r in caplog.records if r.name.startswith("trimtab")]
    assert len(records) > 5
    for record in records:
        assert getattr(record, "plan_id", None) == "logs", record.getMessage()
        assert getattr(record, "correlation_id", None) == "corr-7", record.getMessage()
        assert record.getMessage().isascii()
    skipped = [o for o in result.orders if o.skipped]
    assert skipped
    warnings = [r for r in records if r.levelno >= logging.WARNING and "ZZZ" in r.getMessage()]
    assert warnings
    assert any("stale" in r.getMessage() for r in warnings)


def _make_stale(symbol: str):  # type: ignore[no-untyped-def]
    async def stale(s: SimBroker) -> None:
        await s.get_quote(symbol)
        s.set_quote_stale(symbol)
        await asyncio.sleep(120)

    return stale


def test_a_sell_never_exceeds_the_available_position() -> None:
    sim = broker(positions={"AAA": "10", "BBB": "10"})

    async def prices(s: SimBroker) -> None:
        s.force_quote("AAA", D("100.00"), D("100.02"), D(5000), D(5000))
        s.force_quote("BBB", D("100.00"), D("100.02"), D(5000), D(5000))

    # AAA: 1040 dollars is 10.4 shares, 3.8% more than held: trimmed to the position.
    # BBB: a million dollars is far beyond the position: the item fails, nothing is sent.
    result = execute(sim, plan("cap", sell("AAA", "-1040"), sell("BBB", "-1000000")), MARKET, before=prices)
    by = {o.symbol: o for o in result.orders}
    assert by["AAA"].shares == D(10)
    assert any("trimmed" in n for n in by["AAA"].notes)
    assert by["AAA"].success
    assert not by["BBB"].success
    assert by["BBB"].attempts == ()
    assert "only 10 are available" in (by["BBB"].error_message or "")
    assert result.status is ExecutionStatus.PARTIAL_SUCCESS


def test_a_non_fractionable_buy_is_whole_shares() -> None:
    from trimtab.domain.account import Asset

    sim = broker(cash="100000", assets={"BRK": Asset("BRK", fractionable=False)})
    result = execute(sim, plan("whole", buy("BRK", "1000")), MARKET)
    order = result.orders[0]
    assert order.shares == order.shares.to_integral_value()
    assert order.filled_shares == order.shares
    statuses = {a.status for a in order.attempts}
    assert statuses == {OrderStatus.FILLED.value}

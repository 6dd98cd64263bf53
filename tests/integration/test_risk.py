"""Preflight and risk controls: each rule refuses, says why, and sends nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.simkit import START, D, EventLog, broker, buy, execute, plan, sell
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.account import Asset, Position
from trimtab.domain.errors import ConfigurationError, SafetyRefusalError
from trimtab.domain.orders import ClientOrderId, OrderRequest, OrderType, Side
from trimtab.domain.plan import RebalancePlanItem
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor
from trimtab.engine.risk import HALT_FLAG, RiskConfig
from trimtab.engine.sizing import size_sell

MARKET = ExecutionConfig(algo="market")


def frozen(**quotes: tuple[str, str]):  # type: ignore[no-untyped-def]
    async def setup(s: SimBroker) -> None:
        for symbol, (bid, ask) in quotes.items():
            s.force_quote(symbol, D(bid), D(ask), D(5000), D(5000))

    return setup


def sent_symbols(log: EventLog) -> set[str]:
    return {e.order.symbol for e in log.events}


def test_max_order_notional_skips_the_item_and_sends_nothing_for_it() -> None:
    sim = broker(cash="100000")
    log = EventLog(sim)
    risk = RiskConfig(max_order_notional=Decimal("5000"))
    result = execute(
        sim,
        plan("notional", buy("AAA", "8000"), buy("BBB", "3000")),
        MARKET,
        before=frozen(AAA=("50.00", "50.02"), BBB=("50.00", "50.02")),
        risk=risk,
    )
    by = {o.symbol: o for o in result.orders}
    assert by["AAA"].skipped
    assert "max_order_notional" in (by["AAA"].skip_reason or "")
    assert by["BBB"].success
    assert sent_symbols(log) == {"BBB"}


def test_max_order_fraction_of_the_portfolio() -> None:
    sim = broker(cash="10000")
    log = EventLog(sim)
    risk = RiskConfig(max_order_fraction=Decimal("0.25"))
    result = execute(
        sim, plan("fraction", buy("AAA", "3000")), MARKET, before=frozen(AAA=("50.00", "50.02")), risk=risk
    )
    assert result.orders[0].skipped
    assert "max_order_fraction" in (result.orders[0].skip_reason or "")
    assert sent_symbols(log) == set()


def test_max_plan_turnover_refuses_the_whole_plan() -> None:
    sim = broker(cash="10000", positions={"AAA": "100"})
    log = EventLog(sim)
    risk = RiskConfig(max_plan_turnover=Decimal("0.5"))
    with pytest.raises(SafetyRefusalError, match="max_plan_turnover"):
        execute(
            sim,
            plan("turnover", sell("AAA"), buy("BBB", "9000")),
            MARKET,
            before=frozen(AAA=("50.00", "50.02"), BBB=("50.00", "50.02")),
            risk=risk,
        )
    assert log.events == []


def test_price_collar_refuses_a_rung_beyond_it_and_collars_market_orders() -> None:
    sim = broker(positions={"AAA": "100"})
    log = EventLog(sim)
    risk = RiskConfig(price_collar_bps=Decimal("30"))

    async def setup(s: SimBroker) -> None:
        s.force_quote("AAA", D("100.00"), D("100.10"), D(5000), D(5000))

        async def crash() -> None:
            await asyncio.sleep(10)
            s.force_quote("AAA", D("99.00"), D("99.10"), D(5000), D(5000))  # 100 bp lower

        asyncio.get_running_loop().create_task(crash())

    result = execute(sim, plan("collar", sell("AAA")), ExecutionConfig(), before=setup, risk=risk)
    order = result.orders[0]
    assert not order.success
    assert "price collar" in (order.error_message or "")
    assert len(order.attempts) == 1  # the first rung, then the collar stopped the ladder
    assert len({e.order.client_order_id for e in log.events}) == 1

    sim2 = broker(positions={"AAA": "100"})
    collared = execute(
        sim2, plan("collar-mkt", sell("AAA")), MARKET, before=frozen(AAA=("100.00", "100.10")), risk=risk
    )
    attempt = collared.orders[0].attempts[0]
    assert attempt.order_type == "limit"
    assert attempt.limit_price == D("99.75")  # the mid 100.05 less 30 bp, rounded up
    assert collared.orders[0].success


def test_buy_phase_guard_stops_the_buys_when_sells_failed() -> None:
    sim = broker(cash="1000", positions={"AAA": "1000"})
    log = EventLog(sim)
    risk = RiskConfig(max_failed_sell_notional=Decimal("1000"))
    config = ExecutionConfig.from_mapping(
        {
            "sell_phase_timeout": 30,
            "buy_phase_timeout": 30,
            "plan_timeout": 100,
            "ladders": {"NORMAL": {"anchor": "passive", "fill_wait": 600, "steps": ["0"]}},
        }
    )
    result = execute(
        sim,
        plan("guard", sell("AAA"), buy("BBB", "500")),
        config,
        before=frozen(AAA=("50.00", "50.10"), BBB=("20.00", "20.02")),
        risk=risk,
    )
    by = {o.symbol: o for o in result.orders}
    assert not by["AAA"].success
    assert by["BBB"].skipped
    assert "buys not started" in (by["BBB"].skip_reason or "")
    assert "buys not started" in (result.message or "")
    assert "BBB" not in sent_symbols(log)


def test_an_open_order_of_the_other_side_keeps_the_symbol_out() -> None:
    sim = broker(cash="100000", positions={"AAA": "100"})

    async def resting(s: SimBroker) -> None:
        s.force_quote("AAA", D("50.00"), D("50.02"), D(5000), D(5000))
        await s.submit_order(
            OrderRequest(ClientOrderId("mine-1"), "AAA", Side.BUY, D(10), OrderType.LIMIT, D("40"))
        )

    log = EventLog(sim)
    result = execute(sim, plan("wash", sell("AAA")), MARKET, before=resting)
    order = result.orders[0]
    assert order.skipped
    assert "wash trade" in (order.skip_reason or "")
    assert {e.order.client_order_id for e in log.events} == {"mine-1"}
    # The account's own order is not the executor's to cancel.
    still_open = run_virtual(sim.list_open_orders())
    assert [o.client_order_id for o in still_open] == ["mine-1"]


def test_non_fractionable_buy_floors_and_a_zero_result_is_a_skip() -> None:
    sim = broker(cash="100000", assets={"BRK": Asset("BRK", fractionable=False)})
    log = EventLog(sim)
    result = execute(sim, plan("whole", buy("BRK", "50")), MARKET, before=frozen(BRK=("100.00", "100.02")))
    assert result.orders[0].skipped
    assert "less than one share" in (result.orders[0].skip_reason or "")
    assert log.events == []


def test_fractional_orders_under_one_dollar_are_skipped() -> None:
    sim = broker(cash="100000")
    log = EventLog(sim)
    result = execute(sim, plan("dust", buy("AAA", "0.50")), MARKET, before=frozen(AAA=("100.00", "100.02")))
    assert result.orders[0].skipped
    assert "minimum" in (result.orders[0].skip_reason or "")
    assert log.events == []


def test_untradable_and_unknown_assets_are_skipped() -> None:
    sim = broker(cash="100000", assets={"OLD": Asset("OLD", tradable=False)}, unknown_symbols=["NOPE"])
    log = EventLog(sim)
    result = execute(sim, plan("assets", buy("OLD", "500"), buy("NOPE", "500")), MARKET)
    by = {o.symbol: o for o in result.orders}
    assert "not tradable" in (by["OLD"].skip_reason or "")
    assert "not an asset" in (by["NOPE"].skip_reason or "")
    assert log.events == []


def test_daily_cap_needs_a_ledger() -> None:
    with pytest.raises(ConfigurationError, match="ledger"):
        Executor(broker(), MARKET, risk=RiskConfig(daily_notional_cap=Decimal(1000)))


def test_daily_cap_holds_within_a_run(tmp_path: Path) -> None:
    sim = broker(cash="100000")
    log = EventLog(sim)
    risk = RiskConfig(daily_notional_cap=Decimal("12000"))
    ledger = SqlLedger(default_ledger_url(tmp_path))
    with pytest.raises(SafetyRefusalError, match="daily notional cap"):
        execute(
            sim,
            plan("cap-1", buy("AAA", "8000"), buy("BBB", "8000")),
            MARKET,
            before=frozen(AAA=("50.00", "50.02"), BBB=("50.00", "50.02")),
            risk=risk,
            ledger=ledger,
        )
    assert log.events == []
    result = execute(
        sim,
        plan("cap-2", buy("AAA", "8000")),
        MARKET,
        before=frozen(AAA=("50.00", "50.02")),
        risk=risk,
        ledger=ledger,
    )
    assert result.orders[0].success
    with pytest.raises(SafetyRefusalError, match=r"traded today plus 6000\.00 planned"):
        execute(
            sim,
            plan("cap-3", buy("BBB", "6000")),
            MARKET,
            before=frozen(BBB=("50.00", "50.02")),
            risk=risk,
            ledger=ledger,
        )
    ledger.close()


def test_daily_cap_holds_across_processes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.json").write_text(
        json.dumps(
            {"plan_id": "day-a", "items": [{"symbol": "AAA", "action": "BUY", "trade_amount": "7000"}]}
        )
    )
    (files / "b.json").write_text(
        json.dumps(
            {"plan_id": "day-b", "items": [{"symbol": "BBB", "action": "BUY", "trade_amount": "7000"}]}
        )
    )
    env = {**os.environ, "TRIMTAB_HOME": str(home), "TRIMTAB_RISK_DAILY_NOTIONAL_CAP": "10000"}

    def run(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trimtab", "run", str(files / name), "--algo", "market", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = run("a.json", "--fresh")
    assert first.returncode == 0, first.stderr
    second = run("b.json")
    assert second.returncode == 3, second.stdout + second.stderr
    assert "daily notional cap" in second.stderr
    state = json.loads((home / "sim-account.json").read_text())
    assert "BBB" not in state["positions"]


def test_halt_stops_a_running_plan_cancels_its_orders_and_sends_nothing_more(tmp_path: Path) -> None:
    sim = broker(positions={"AAA": "1000", "BBB": "1000"})
    log = EventLog(sim)
    ledger = SqlLedger(default_ledger_url(tmp_path))
    halted_at: list[datetime] = []

    async def main() -> ExecutionResult:
        async with Executor(sim, ExecutionConfig(default_urgency="LOW"), ledger=ledger) as executor:
            sim.force_quote("AAA", D("50.00"), D("50.10"), D(5000), D(5000))
            sim.force_quote("BBB", D("20.00"), D("20.10"), D(5000), D(5000))

            async def stop() -> None:
                await asyncio.sleep(60)
                ledger.set_flag(HALT_FLAG, "desk says stop", now=START)
                halted_at.append(sim.clock.now())

            asyncio.get_running_loop().create_task(stop())
            return await executor.execute_rebalance_plan(plan("halt", sell("AAA"), sell("BBB")))

    result = run_virtual(main())
    assert "halted" in (result.message or "")
    assert "desk says stop" in (result.message or "")
    assert run_virtual(sim.list_open_orders()) == []
    cutoff = halted_at[0]
    late = [
        e
        for e in log.events
        if e.kind.value == "accepted" and e.order.created_at > cutoff + timedelta(seconds=2)
    ]
    assert late == []
    assert result.status in (ExecutionStatus.FAILURE, ExecutionStatus.PARTIAL_SUCCESS)
    with pytest.raises(SafetyRefusalError, match="halted"):
        execute(sim, plan("after", sell("BBB")), MARKET, ledger=ledger)
    ledger.clear_flag(HALT_FLAG)
    ledger.close()


def test_risk_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_order_fraction"):
        RiskConfig.from_mapping({"max_order_fraction": "1.5"})
    with pytest.raises(ConfigurationError, match="unknown field"):
        RiskConfig.from_mapping({"max_notional": "5"})
    path = tmp_path / "c.toml"
    path.write_text('[risk]\nmax_order_notional = "2500"\n[execution]\nalgo = "market"\n')
    loaded = RiskConfig.load(path, environ={"TRIMTAB_RISK_PRICE_COLLAR_BPS": "40"})
    assert loaded.max_order_notional == Decimal(2500)
    assert loaded.price_collar_bps == Decimal(40)


T0 = START


@given(
    held=st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("100000"), places=9),
    held_for_orders=st.decimals(min_value=0, max_value=Decimal("100000"), places=9),
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2),
    price=st.decimals(min_value=Decimal("0.5"), max_value=Decimal("5000"), places=2),
    fractionable=st.booleans(),
    close=st.booleans(),
    tolerance=st.decimals(min_value=0, max_value=1, places=2),
)
def test_preflight_never_sells_more_than_available_nor_fractions_of_whole_share_assets(
    held: Decimal,
    held_for_orders: Decimal,
    amount: Decimal,
    price: Decimal,
    fractionable: bool,
    close: bool,
    tolerance: Decimal,
) -> None:
    available = max(held - held_for_orders, Decimal(0))
    item = RebalancePlanItem.model_validate(
        {"symbol": "AAA", "action": "SELL", "target_weight": "0"}
        if close
        else {"symbol": "AAA", "action": "SELL", "trade_amount": str(-amount)}
    )
    quote = Quote("AAA", price, price + Decimal("0.01"), D(100), D(100), T0)
    position = Position("AAA", held, available, price)
    sized = size_sell(
        item, position, Asset("AAA", fractionable=fractionable), quote, None, ExecutionConfig(), tolerance
    )
    assert sized.qty <= available
    if not fractionable and not close:
        assert sized.qty == sized.qty.to_integral_value()
    if sized.skip_reason is None and sized.error is None:
        assert sized.qty > 0


def test_a_closed_market_refuses_the_plan_unless_extended_hours() -> None:
    minute_before_close = datetime(2026, 11, 23, 20, 59, tzinfo=UTC)  # Monday 15:59 in New York

    async def after_the_close(s: SimBroker) -> None:
        await asyncio.sleep(120)
        assert not (await s.get_market_clock()).is_open

    sim = SimBroker(seed=3, cash=D(10000), positions={"AAA": D(10)}, start=minute_before_close)
    log = EventLog(sim)
    with pytest.raises(SafetyRefusalError, match="market is closed"):
        execute(sim, plan("closed", sell("AAA")), MARKET, before=after_the_close)
    assert log.events == []

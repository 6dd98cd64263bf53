"""Replay on the real LEAN data (IBM ticks and SPY second bars of 2013-10-07).

The data lives beside the project (../shared/data/lean-2013-10, or $TRIMTAB_REPLAY_DATA)
and is never copied into it: without it these tests skip, naming the missing path. The
figures checked are the measured ones of shared/notes/market-calibration.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections import Counter
from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest

from trimtab.adapters.sim import SimBroker, run_virtual
from trimtab.adapters.sim.path import TradeKind
from trimtab.adapters.sim.replay import ReplayPath, ReplaySource, load_replay
from trimtab.domain.orders import ClientOrderId, OrderEvent, OrderRequest, OrderType, Side
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

D = Decimal
DATA = Path(os.environ.get("TRIMTAB_REPLAY_DATA")
            or Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lean-2013-10")
FILES = ("tick_ibm_20131007_quote.zip", "tick_ibm_20131007_trade.zip",
         "second_spy_20131007_quote.zip", "second_spy_20131007_trade.zip")
REGULAR_HOURS = 6.5 * 3600  # seconds from 09:30 to 16:00


@pytest.fixture(scope="module")
def source() -> ReplaySource:
    missing = [DATA / name for name in FILES if not (DATA / name).is_file()]
    if missing:
        pytest.skip(f"replay data not found: {missing[0]}")
    return load_replay(DATA, time(9, 30))


def time_weighted_median(path: ReplayPath, end: float) -> float:
    """The time-weighted median quoted spread in basis points from the start to end."""
    weights: dict[float, float] = {}
    step = 0
    while path.step_time(step) < end:
        quote = path.quote(step)
        duration = min(path.step_time(step + 1), end) - path.step_time(step)
        if 0 < quote.bid < quote.ask:
            spread = (quote.ask - quote.bid) / ((quote.ask + quote.bid) / 2) * 1e4
            weights[spread] = weights.get(spread, 0.0) + duration
        step += 1
    half = sum(weights.values()) / 2
    seen = 0.0
    for spread in sorted(weights):
        seen += weights[spread]
        if seen >= half:
            return spread
    raise AssertionError("no two-sided quote")


def test_the_day_and_symbols(source: ReplaySource) -> None:
    assert source.day.isoformat() == "2013-10-07"
    assert source.symbols == frozenset({"IBM", "SPY"})  # IBM of 2013-10-08 is another day
    broker = SimBroker(replay=source)
    assert broker.start_time == source.start_datetime
    assert broker.profile("IBM").touch_size == 200
    assert broker.profile("SPY").touch_size == 5700  # second bars: sizes in shares too


def test_ibm_spread_and_trade_rate_match_the_calibration(source: ReplaySource) -> None:
    path = SimBroker(replay=source).path("IBM")
    assert isinstance(path, ReplayPath)
    assert 1.6 <= time_weighted_median(path, REGULAR_HOURS) <= 1.7  # measured: 1.64 bp
    first, last = path.first_trade_after(0.0), path.first_trade_after(REGULAR_HOURS)
    per_minute = (last - first) / (REGULAR_HOURS / 60)
    assert 58 <= per_minute <= 66  # measured: 61.8
    kinds = Counter(TradeKind(k) for k in path.data.trade_kind[first:last])
    shares = [kinds[k] / (last - first) for k in (TradeKind.AT_ASK, TradeKind.AT_BID, TradeKind.INSIDE)]
    assert [round(s, 2) for s in shares] == pytest.approx([0.35, 0.35, 0.30], abs=0.02)  # 36/35/30%
    assert statistics.median(path.data.trade_size[first:last]) == 100


def test_spy_second_bars_quote_one_tick(source: ReplaySource) -> None:
    path = SimBroker(replay=source).path("SPY")
    assert isinstance(path, ReplayPath)
    assert 0.55 <= time_weighted_median(path, REGULAR_HOURS) <= 0.65  # measured: 0.59 bp


def test_broker_quotes_are_the_recording(source: ReplaySource) -> None:
    broker = SimBroker(replay=source)
    path = broker.path("IBM")
    assert isinstance(path, ReplayPath)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await broker.start()
        for at in (0.0, 61.3, 3600.0, 20_000.0):
            await asyncio.sleep(at - loop.time())
            quote = await broker.get_quote("IBM")
            assert quote is not None
            top = path.quote(path.step_at(at + broker.latency))  # seen at the broker
            assert (quote.bid, quote.ask) == (top.bid * D("0.01"), top.ask * D("0.01"))

    run_virtual(main())


def run_resting_buy(source: ReplaySource, fill_model: str) -> tuple[list[OrderEvent], Decimal]:
    """A buy of 1,000 IBM resting at the bid from 10:00 for half an hour: its fill events."""
    broker = SimBroker(replay=source, fill_model=fill_model, cash=D(1_000_000))
    events: list[OrderEvent] = []
    broker.add_order_listener(events.append)

    async def main() -> Decimal:
        await broker.start()
        await asyncio.sleep(1800)  # the replay starts at 09:30
        quote = await broker.get_quote("IBM")
        assert quote is not None
        await broker.submit_order(OrderRequest(
            client_order_id=ClientOrderId("rest-1"), symbol="IBM", side=Side.BUY, qty=D(1000),
            order_type=OrderType.LIMIT, limit_price=quote.bid,
        ))
        await asyncio.sleep(1800)
        return quote.bid

    limit = run_virtual(main())
    return [e for e in events if e.fill_qty is not None], limit


def test_a_resting_order_fills_only_through_recorded_trades(source: ReplaySource) -> None:
    fills, limit = run_resting_buy(source, "queue")
    assert fills, "a resting buy at the bid gets some fills in half an hour of IBM"
    data = source.data["IBM"]
    prints: dict[int, list[tuple[int, int, int]]] = {}
    for ms, price, size, seller in zip(data.trade_ms, data.trade_price, data.trade_size, data.trade_seller,
                                       strict=True):
        prints.setdefault(ms, []).append((price, size, seller))
    filled_at: Counter[int] = Counter()
    for event in fills:
        assert event.fill_price == limit
        local = event.timestamp.astimezone(source.start_datetime.tzinfo)
        ms = ((local.hour * 60 + local.minute) * 60 + local.second) * 1000 + local.microsecond // 1000
        reaching = [p for p in prints.get(ms, []) if p[2] == 1 and p[0] <= int(limit * 10_000)]
        assert reaching, f"a fill at {local.time()} without a seller's print at or below {limit}"
        assert event.fill_qty is not None
        filled_at[ms] += int(event.fill_qty)
        assert filled_at[ms] <= sum(size for _, size, _ in reaching)
    touch_fills, _ = run_resting_buy(source, "touch")
    assert touch_fills[0].timestamp <= fills[0].timestamp  # the optimistic model fills first


def run_plan(source: ReplaySource, algo: str) -> ExecutionResult:
    broker = SimBroker(replay=source, cash=D(100_000), positions={"SPY": D(300)})
    plan = RebalancePlan.model_validate({"plan_id": f"replay-{algo}", "items": [
        {"symbol": "SPY", "action": "SELL", "trade_amount": "-30000"},
        {"symbol": "IBM", "action": "BUY", "trade_amount": "40000"},
        {"symbol": "ZZZ", "action": "BUY", "trade_amount": "10000"},  # synthetic
    ]})

    async def main() -> ExecutionResult:
        async with Executor(broker, ExecutionConfig(algo=algo)) as executor:
            return await executor.execute_rebalance_plan(plan)

    return run_virtual(main())


@pytest.mark.parametrize("algo", ["market", "smart"])
def test_the_engine_executes_a_plan_on_the_replay(source: ReplaySource, algo: str) -> None:
    result = run_plan(source, algo)
    assert result.status is ExecutionStatus.SUCCESS
    assert all(o.filled_shares > 0 for o in result.orders)

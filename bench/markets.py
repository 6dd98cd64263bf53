"""Benchmark markets: the synthetic model over seeds, and replays of recorded days.

A scenario is one market path and one plan. Every strategy runs every scenario on the
same path (common random numbers: the same seed, or the same recorded day and start), so
the differences between strategies are paired.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from functools import cache
from pathlib import Path

from trimtab.adapters.sim import ReplaySource, SimBroker, load_replay
from trimtab.domain.plan import RebalancePlan

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lean-2013-10"

IBM_DAYS = (date(2013, 10, 7), date(2013, 10, 8))
SPY_DAYS = (date(2013, 10, 7),)


@dataclass(frozen=True)
class Scenario:
    """One market path and plan: market name, seed (or index of a replay start), label."""

    market: str
    seed: int
    label: str
    symbols: int = 10
    day: date | None = None
    start: time | None = None


def synthetic(seeds: list[int], symbols: int) -> list[Scenario]:
    return [Scenario("synthetic", seed, f"seed {seed}", symbols=symbols) for seed in seeds]


def replay_starts(count: int) -> list[time]:
    """count start times spread over the regular session, 10:00 to 15:20 New York time."""
    first, last = 10 * 60, 15 * 60 + 20
    if count <= 1:
        return [time(10, 0)]
    step = (last - first) / (count - 1)
    minutes = [round(first + i * step) for i in range(count)]
    return [time(m // 60, m % 60) for m in minutes]


def replay(symbol: str, days: tuple[date, ...], starts_per_day: int) -> list[Scenario]:
    out = []
    for day in days:
        for start in replay_starts(starts_per_day):
            index = len(out)
            out.append(Scenario(f"replay-{symbol}", index, f"{day.isoformat()} {start.strftime('%H:%M')}",
                                symbols=1, day=day, start=start))
    return out


def replay_problem() -> str | None:
    """None when the replay market can run here, else why not."""
    if not DATA.is_dir():
        return f"replay data not found at {DATA} (see ../shared/data/README.md)"
    return None


@cache
def _replay_day(day: date) -> ReplaySource:
    return load_replay(DATA, day=day)


def _replay_source(day: date, start: time) -> ReplaySource:
    """The recorded day (loaded once per process) replayed from start."""
    return ReplaySource(day=day, start=start, data=_replay_day(day).data)


def synthetic_plan(scenario: Scenario) -> tuple[RebalancePlan, dict[str, Decimal]]:
    """Half the symbols close a position, half buy a dollar amount (sizes drawn from the seed)."""
    seed, symbols = scenario.seed, scenario.symbols
    rng = random.Random(seed)
    sells = [f"S{seed % 7}{i:02d}" for i in range(symbols // 2)]
    buys = [f"B{seed % 7}{i:02d}" for i in range(symbols - symbols // 2)]
    positions = {s: Decimal(rng.choice([300, 800, 1500, 4000])) for s in sells}
    items: list[dict[str, str]] = [{"symbol": s, "action": "SELL", "target_weight": "0"} for s in sells]
    amounts = [str(rng.choice([5000, 15000, 40000])) for _ in buys]
    items += [{"symbol": b, "action": "BUY", "trade_amount": a} for b, a in zip(buys, amounts, strict=True)]
    return RebalancePlan.model_validate({"plan_id": "x", "items": items}), positions


def replay_plan(scenario: Scenario, symbol: str) -> tuple[RebalancePlan, dict[str, Decimal]]:
    """One order of the replayed symbol: sells and buys alternate, sizes drawn from the index."""
    rng = random.Random(scenario.seed)
    if symbol == "SPY":
        shares = rng.choice([1000, 3000, 6000])
        price = Decimal(168)
    else:
        shares = rng.choice([200, 400, 800])
        price = Decimal(182)
    if scenario.seed % 2 == 0:
        items = [{"symbol": symbol, "action": "SELL", "target_weight": "0"}]
        return RebalancePlan.model_validate({"plan_id": "x", "items": items}), {symbol: Decimal(shares)}
    items = [{"symbol": symbol, "action": "BUY", "trade_amount": str(shares * price)}]
    return RebalancePlan.model_validate({"plan_id": "x", "items": items}), {}


def make_market(scenario: Scenario, fill_model: str, plan_id: str) -> tuple[SimBroker, RebalancePlan]:
    """The broker (a fresh account on the scenario's market) and the plan to run on it."""
    if scenario.market == "synthetic":
        plan, positions = synthetic_plan(scenario)
        broker = SimBroker(seed=scenario.seed, cash=Decimal(2_000_000), positions=positions,
                           fill_model=fill_model)
    else:
        symbol = scenario.market.removeprefix("replay-")
        assert scenario.day is not None
        assert scenario.start is not None
        plan, positions = replay_plan(scenario, symbol)
        broker = SimBroker(seed=scenario.seed, cash=Decimal(2_000_000), positions=positions,
                           fill_model=fill_model, replay=_replay_source(scenario.day, scenario.start))
    return broker, plan.model_copy(update={"plan_id": plan_id})

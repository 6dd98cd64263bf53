"""Execution quality: smart execution against market orders on identical price paths.

Every seed gives one synthetic market path per symbol (common random numbers): each
strategy runs the same plan on the same path, so their difference is paired. For each
strategy and fill rule the script prints the notional-weighted mean arrival cost in basis
points (fill price against the mid when the order was decided; positive is a cost), its
95th percentile over orders, the fill rate by the deadline, and the paired difference
against market orders with a bootstrap 95% confidence interval.

    python bench/execution_quality.py [--seeds 30] [--symbols 10] [--fill-models queue,touch]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass
from decimal import Decimal

from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

STRATEGIES: dict[str, dict[str, str]] = {
    "market": {"algo": "market"},
    "smart-LOW": {"algo": "smart", "default_urgency": "LOW"},
    "smart-NORMAL": {"algo": "smart", "default_urgency": "NORMAL"},
    "smart-HIGH": {"algo": "smart", "default_urgency": "HIGH"},
}


@dataclass
class RunFigures:
    cost_bps: float  # notional-weighted arrival cost of the plan
    order_costs: list[float]
    fill_rate: float  # filled notional / requested notional
    requests: int
    seconds: float


def make_plan(seed: int, symbols: int) -> tuple[RebalancePlan, dict[str, Decimal]]:
    rng = random.Random(seed)
    sells = [f"S{seed % 7}{i:02d}" for i in range(symbols // 2)]
    buys = [f"B{seed % 7}{i:02d}" for i in range(symbols - symbols // 2)]
    positions = {s: Decimal(rng.choice([300, 800, 1500, 4000])) for s in sells}
    items = [{"symbol": s, "action": "SELL", "target_weight": "0"} for s in sells]
    items += [
        {"symbol": b, "action": "BUY", "trade_amount": str(rng.choice([5000, 15000, 40000]))} for b in buys
    ]
    return RebalancePlan.model_validate({"plan_id": f"eq-{seed}", "items": items}), positions


def run(seed: int, symbols: int, strategy: str, fill_model: str) -> RunFigures:
    plan, positions = make_plan(seed, symbols)
    broker = SimBroker(seed=seed, cash=Decimal(2_000_000), positions=positions, fill_model=fill_model)
    config = ExecutionConfig.from_mapping(STRATEGIES[strategy])

    async def main() -> ExecutionResult:
        async with Executor(broker, config) as executor:
            return await executor.execute_rebalance_plan(plan)

    result = run_virtual(main())
    weighted = Decimal(0)
    notional = Decimal(0)
    requested = Decimal(0)
    order_costs = []
    for order in result.orders:
        if order.arrival_mid is None or order.shares == 0:
            continue
        requested += order.shares * order.arrival_mid
        notional_filled = order.filled_shares * order.arrival_mid
        notional += notional_filled
        if order.cost_bps is not None:
            weighted += order.cost_bps * notional_filled
            order_costs.append(float(order.cost_bps))
    cost = float(weighted / notional) if notional else 0.0
    seconds = (result.finished_at - result.started_at).total_seconds()
    return RunFigures(
        cost, order_costs, float(notional / requested) if requested else 1.0, result.stats.requests, seconds
    )


def bootstrap_ci(diffs: list[float], rounds: int = 4000, seed: int = 12345) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of paired differences."""
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--fill-models", default="queue,touch")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    strategies = [s for s in args.strategies.split(",") if s]
    print(f"seeds 1..{args.seeds}, {args.symbols} symbols per plan (half closes, half buys)")
    for fill_model in [m for m in args.fill_models.split(",") if m]:
        runs = {s: [run(seed, args.symbols, s, fill_model) for seed in seeds] for s in strategies}
        print(f"\nfill rule: {fill_model}")
        print(
            f"{'strategy':>13} {'mean bps':>9} {'p95 bps':>8} {'fill rate':>9} {'min fill':>8} "
            f"{'secs':>6} {'reqs':>5} {'vs market bps':>14} {'95% CI':>18}"
        )
        base = [r.cost_bps for r in runs["market"]] if "market" in runs else None
        for strategy in strategies:
            figures = runs[strategy]
            costs = [r.cost_bps for r in figures]
            all_orders = [c for r in figures for c in r.order_costs]
            fill = statistics.fmean(r.fill_rate for r in figures)
            worst = min(r.fill_rate for r in figures)
            secs = statistics.fmean(r.seconds for r in figures)
            reqs = statistics.fmean(r.requests for r in figures)
            diff_text, ci_text = "-", "-"
            if base is not None and strategy != "market":
                diffs = [a - b for a, b in zip(costs, base, strict=True)]
                low, high = bootstrap_ci(diffs)
                diff_text = f"{statistics.fmean(diffs):+.2f}"
                ci_text = f"[{low:+.2f}, {high:+.2f}]"
            print(
                f"{strategy:>13} {statistics.fmean(costs):>9.2f} {percentile(all_orders, 0.95):>8.2f} "
                f"{fill:>9.4f} {worst:>8.4f} {secs:>6.0f} {reqs:>5.0f} {diff_text:>14} {ci_text:>18}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

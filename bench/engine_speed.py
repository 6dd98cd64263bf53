"""Engine speed: CPU seconds per order lifecycle and peak memory, for plans of N symbols.

Runs a plan of N symbols (half sells, half buys) on the simulated exchange in virtual time
with each algorithm, and prints the CPU time per order lifecycle (from submission to the
order's final state, all rungs included) and the peak memory of the process.

    python bench/engine_speed.py [--sizes 10,100,1000] [--algos market,smart] [--ledger]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from decimal import Decimal

from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor


def make_plan(n: int, tag: str) -> tuple[RebalancePlan, dict[str, Decimal]]:
    sells = [f"S{i:04d}" for i in range(n // 2)]
    buys = [f"B{i:04d}" for i in range(n - n // 2)]
    positions = {s: Decimal(400) for s in sells}
    items = [{"symbol": s, "action": "SELL", "trade_amount": "-5000"} for s in sells]
    items += [{"symbol": b, "action": "BUY", "trade_amount": "4000"} for b in buys]
    plan = RebalancePlan.model_validate({"plan_id": f"bench-{tag}-{n}", "items": items})
    return plan, positions


def run_once(n: int, algo: str, seed: int) -> tuple[ExecutionResult, float]:
    plan, positions = make_plan(n, algo)
    broker = SimBroker(seed=seed, cash=Decimal(5000) * n, positions=positions, request_budget=1_000_000)
    config = ExecutionConfig(algo=algo, max_concurrent_orders=max(n, 1))

    async def main() -> ExecutionResult:
        async with Executor(broker, config) as executor:
            return await executor.execute_rebalance_plan(plan)

    started = time.process_time()
    result = run_virtual(main())
    return result, time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--algos", default="market,smart")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="one line per run")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    algos = [a for a in args.algos.split(",") if a]
    print(
        f"{'symbols':>8} {'algo':>7} {'orders':>7} {'filled':>7} {'cpu s':>8} {'ms/order':>9} "
        f"{'status':>18} {'peak MB':>8}"
    )
    worst = 0.0
    for n in sizes:
        for algo in algos:
            result, cpu = run_once(n, algo, args.seed)
            orders = sum(len(o.attempts) for o in result.orders)
            filled = sum(1 for o in result.orders if o.success)
            per_order = cpu / orders * 1000 if orders else 0.0
            worst = max(worst, per_order)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{n:>8} {algo:>7} {orders:>7} {filled:>7} {cpu:>8.3f} {per_order:>9.3f} "
                f"{result.status.value:>18} {peak_mb:>8.1f}"
            )
            if filled == 0 and n > 0:
                print(f"error: nothing filled for {n} symbols with {algo}", file=sys.stderr)
                return 1
    print(f"worst CPU per order lifecycle: {worst:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

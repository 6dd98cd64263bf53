"""Engine speed: CPU per order lifecycle and peak memory, for plans of N symbols.

Runs a plan of N symbols (half sells, half buys) on the simulated exchange in virtual time
with each algorithm, with and without the SQLite ledger, and prints the CPU time per order
lifecycle (one order from intent to its final state, every ladder rung counted as an
order) and the process's peak memory. A profiled pass splits the CPU between the engine
(trimtab's engine, domain and ports), its ledger (the SQL ledger, SQLAlchemy and the
database driver) and the simulated exchange it runs against (the test double, which
models every trade and quote of the market; a real broker's CPU is not ours).

The figure the ledger's target is about is "ours ms/order" with the ledger on: the CPU of
the engine and its ledger per order lifecycle (target: under 0.5 ms). A plan also costs a
few milliseconds of ledger work whatever its size (its claim, state changes and stored
result), which is most of the figure for a plan of ten orders.

    python bench/engine_speed.py [--sizes 10,100,1000] [--algos market,smart] [--quiet]
                                 [--ledger postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import pstats
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from trimtab.adapters.ledger import SqlLedger, default_ledger_url
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


def run_once(
    n: int, algo: str, seed: int, ledger_url: str | None, profile: cProfile.Profile | None = None
) -> tuple[ExecutionResult, float]:
    run = uuid.uuid4().hex[:8]  # plan ids of their own: a ledger may be used by many runs
    plan, positions = make_plan(n, f"{algo}-{run}")
    broker = SimBroker(seed=seed, cash=Decimal(5000) * n, positions=positions, request_budget=1_000_000)
    config = ExecutionConfig(algo=algo, max_concurrent_orders=max(n, 1))
    ledger = SqlLedger(ledger_url) if ledger_url is not None else None

    async def main(plan: RebalancePlan, broker: SimBroker) -> ExecutionResult:
        async with Executor(broker, config, ledger=ledger) as executor:
            return await executor.execute_rebalance_plan(plan)

    try:
        if ledger is not None:
            # A process's one-time setup, outside the measurement: connect, migrate, and
            # run one small plan (statements compiled, connections open), as in a worker
            # or any process that ran a plan before.
            ledger.open()
            warmup, held = make_plan(2, f"warmup-{algo}-{run}")
            run_virtual(main(warmup, SimBroker(seed=seed, cash=Decimal(5000), positions=held)))
        if profile is not None:
            profile.enable()
        started = time.process_time()
        try:
            result = run_virtual(main(plan, broker))
        finally:
            if profile is not None:
                profile.disable()
        return result, time.process_time() - started
    finally:
        if ledger is not None:
            ledger.close()


def ledger_url(tmp: str, chosen: str | None) -> str:
    """The ledger of a run: the database chosen, else a fresh SQLite file in tmp."""
    return chosen or default_ledger_url(Path(tmp))


def best_of(
    repeat: int, n: int, algo: str, seed: int, with_ledger: bool, chosen: str | None = None
) -> tuple[ExecutionResult, float]:
    """The least CPU of `repeat` identical runs (the others were slowed by the machine),
    each on a fresh SQLite ledger or, when chosen, on that database."""
    best: tuple[ExecutionResult, float] | None = None
    for _ in range(max(repeat, 1)):
        gc.collect()
        with tempfile.TemporaryDirectory() as tmp:
            result, cpu = run_once(n, algo, seed, ledger_url(tmp, chosen) if with_ledger else None)
        if best is None or cpu < best[1]:
            best = (result, cpu)
    assert best is not None
    return best


def _owner(filename: str) -> str | None:
    """Who a function's own time belongs to, by where it is defined; None for shared code."""
    if "/trimtab/adapters/sim/" in filename and "virtual_loop" not in filename:
        return "exchange"
    if "/trimtab/adapters/ledger/" in filename or "/sqlalchemy/" in filename:
        return "ledger"
    if "/trimtab/" in filename and "virtual_loop" not in filename:
        return "engine"
    return None


def cpu_shares(n: int, algo: str, seed: int, ledger: str | None) -> dict[str, float]:
    """The run's CPU split between the engine, its ledger and the simulated exchange.

    A profiled pass, on CPU time. Each function's own time goes to the part that defines it; the time
    of shared code (the standard library, builtins, the event loop's callbacks, the
    database driver) goes to the parts that called it, in proportion to the time of each
    call path. What no part called (the event loop's own bookkeeping) is split like the rest.
    """
    # On the process's CPU clock: waiting for a database server's answer costs no CPU.
    profile = cProfile.Profile(time.process_time)
    # Without the garbage collector: a collection's time would land on whichever function
    # happened to allocate when it ran. Its share of the real run is spread like the rest.
    gc.collect()
    gc.disable()
    try:
        run_once(n, algo, seed, ledger, profile)
    finally:
        gc.enable()
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}

    def owners(func: Any) -> dict[str, float]:
        if func in memo:
            return memo[func]
        owner = _owner(func[0])
        if owner is not None:
            memo[func] = {owner: 1.0}
            return memo[func]
        memo[func] = {}  # a cycle through shared code adds nothing
        weights: dict[str, float] = {}
        callers = stats[func][4] if func in stats else {}
        for caller, edge in callers.items():
            weight = edge[3] or edge[2]  # the time spent under func on this call path
            for part, share in owners(caller).items():
                weights[part] = weights.get(part, 0.0) + weight * share
        total = sum(weights.values())
        memo[func] = {part: w / total for part, w in weights.items()} if total else {}
        return memo[func]

    parts: dict[str, float] = {"engine": 0.0, "ledger": 0.0, "exchange": 0.0}
    for func, (_, _, tottime, _, _) in stats.items():
        for part, share in owners(func).items():
            parts[part] += tottime * share
    total = sum(parts.values())
    return {part: value / total for part, value in parts.items()} if total else parts


def memory_per_open_order(n: int, seed: int) -> float:
    """Bytes of Python memory per open order: n passive buys resting on frozen markets."""
    plan, _ = make_plan(n, "memory")
    buys = RebalancePlan.model_validate(
        {
            "plan_id": "bench-memory",
            "default_urgency": "LOW",
            "items": [i.model_dump(mode="json") for i in plan.items if i.action.value == "BUY"],
        }
    )
    broker = SimBroker(seed=seed, cash=Decimal(5000) * n, request_budget=1_000_000)
    config = ExecutionConfig(algo="smart", max_concurrent_orders=max(n, 1))
    measured: list[float] = []

    async def main() -> None:
        async with Executor(broker, config) as executor:
            for item in buys.items:
                broker.force_quote(
                    item.symbol, Decimal("50.00"), Decimal("50.10"), Decimal(100000), Decimal(100000)
                )
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            run = asyncio.create_task(executor.execute_rebalance_plan(buys))
            await asyncio.sleep(10)  # every order rests at the bid, behind 100,000 shares
            open_orders = len(await broker.list_open_orders())
            measured.append((tracemalloc.get_traced_memory()[0] - before) / max(open_orders, 1))
            tracemalloc.stop()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    run_virtual(main())
    return measured[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--algos", default="market,smart")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the least CPU counts")
    parser.add_argument(
        "--ledger", default=None, metavar="URL",
        help="the ledger's database for the rows with the ledger on (default: a fresh SQLite file)",
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the profiled pass")
    parser.add_argument("--quiet", action="store_true", help="only the table")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    algos = [a for a in args.algos.split(",") if a]
    print(
        f"{'symbols':>7} {'algo':>6} {'ledger':>6} {'orders':>6} {'filled':>6} {'cpu s':>7} "
        f"{'ms/order':>8} {'exch%':>5} {'ours ms/order':>13} {'ledger ms/order':>15} "
        f"{'status':>18} {'peak MB':>7}"
    )
    for n in sizes:
        for algo in algos:
            for with_ledger in (False, True):
                result, cpu = best_of(args.repeat, n, algo, args.seed, with_ledger, args.ledger)
                shares = None
                if not args.no_breakdown:
                    with tempfile.TemporaryDirectory() as tmp:
                        url = ledger_url(tmp, args.ledger) if with_ledger else None
                        shares = cpu_shares(n, algo, args.seed, url)
                orders = sum(len(o.attempts) for o in result.orders)
                filled = sum(1 for o in result.orders if o.success)
                per_order = cpu / orders * 1000 if orders else 0.0
                peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                if shares is None:
                    exchange = ours = ledger = "-"
                else:
                    exchange = f"{shares['exchange'] * 100:.0f}"
                    ours = f"{per_order * (shares['engine'] + shares['ledger']):.3f}"
                    ledger = f"{per_order * shares['ledger']:.3f}"
                print(
                    f"{n:>7} {algo:>6} {'on' if with_ledger else 'off':>6} {orders:>6} {filled:>6} "
                    f"{cpu:>7.3f} {per_order:>8.3f} {exchange:>5} {ours:>13} {ledger:>15} "
                    f"{result.status.value:>18} {peak_mb:>7.1f}"
                )
                if filled == 0 and n > 0:
                    print(f"error: nothing filled for {n} symbols with {algo}", file=sys.stderr)
                    return 1
    if not args.quiet:
        logging.getLogger("trimtab").setLevel(logging.ERROR)  # the cancels at its end are expected
        print(
            "cpu s: process CPU of the whole run; ms/order: per order lifecycle; exch%: the "
            "simulated exchange's share; ours: the engine and its ledger; ledger: of which the ledger"
        )
        size = max(sizes)
        per_order = memory_per_open_order(size, args.seed)
        print(
            f"memory per open order ({size // 2} resting orders, engine and simulated exchange): "
            f"{per_order / 1024:.1f} KiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

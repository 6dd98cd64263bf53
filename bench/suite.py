"""The benchmark suite: trimtab's execution against the alternatives a user would pick, and
the engine's speed. One command; writes RESULTS.md and PNG plots.

    python bench/suite.py                       # full: bench/RESULTS.md, bench/*.png
    python bench/suite.py --ci --out DIR        # small: a 10-symbol plan, 3 seeds, seconds

Strategies run on identical price paths (common random numbers): market orders; trimtab's
smart execution at each urgency; a LEAN-style spread-gated market model; TWAP slices of
marketable limits; post at the touch then cross after a timeout; and two reference fills
that no strategy can trade at (the arrival mid, and the far touch at arrival). Markets:
the synthetic model over seeds, and replays of recorded IBM ticks and SPY second bars
(skipped with a message when ../shared/data is absent), each under the honest "queue"
fill rule and the optimistic "touch" rule.

Every run goes through the Executor with a ledger; its cost metrics come from trimtab.tca
on the ledger's record, with the market captured from the plan's start until 65 s after
its end (so markouts and the delay cost exist for every strategy alike).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from pathlib import Path

from markets import ROOT, Scenario, make_market, replay, replay_problem, synthetic
from strategies import PostThenCross, SpreadGatedMarket, TwapMarketableLimits
from trimtab.adapters.ledger import SqlLedger
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.plan import Urgency
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import DEFAULT_LADDERS, Anchor, ExecutionConfig
from trimtab.engine.executor import Executor
from trimtab.engine.working import OrderAlgorithm
from trimtab.tca import HORIZONS, PlanCosts, analyze, load_execution

BENCH = ROOT / "bench"
MARKOUT_WINDOW = 65.0
"""Seconds of market captured after the plan ends (markouts up to 60 s)."""

STRATEGIES: dict[str, Callable[[], tuple[ExecutionConfig, OrderAlgorithm | None]]] = {
    "market": lambda: (ExecutionConfig(algo="market"), None),
    "smart-LOW": lambda: (ExecutionConfig(default_urgency=Urgency.LOW), None),
    "smart-NORMAL": lambda: (ExecutionConfig(default_urgency=Urgency.NORMAL), None),
    "smart-HIGH": lambda: (ExecutionConfig(default_urgency=Urgency.HIGH), None),
    "lean-spread": lambda: (ExecutionConfig(), SpreadGatedMarket()),
    "twap": lambda: (ExecutionConfig(), TwapMarketableLimits()),
    "post-cross": lambda: (ExecutionConfig(), PostThenCross()),
}
def _ladder(urgency: Urgency, **changes: object) -> ExecutionConfig:
    """The default config with one urgency's ladder changed (for --variants)."""
    preset = DEFAULT_LADDERS[urgency].model_copy(update=changes)
    return ExecutionConfig(default_urgency=urgency, ladders={urgency: preset})


VARIANTS: dict[str, Callable[[], tuple[ExecutionConfig, OrderAlgorithm | None]]] = {
    # Candidate ladder defaults, measured with --variants; the engine's defaults are the rows above.
    "NORMAL-wait40": lambda: (_ladder(Urgency.NORMAL, fill_wait=40.0), None),
    "NORMAL-passive": lambda: (_ladder(Urgency.NORMAL, anchor=Anchor.PASSIVE), None),
    "NORMAL-slow": lambda: (_ladder(Urgency.NORMAL, fill_wait=30.0, steps=tuple(
        Decimal(x) for x in ("0", "0.25", "0.5", "0.75"))), None),
    "HIGH-wait20": lambda: (_ladder(Urgency.HIGH, fill_wait=20.0, anchor=Anchor.IMPROVE,
                                    steps=(Decimal("0"), Decimal("0.5"))), None),
}
REFERENCES = ("ref-arrival-mid", "ref-far-touch")
ALL_MARKETS = "synthetic,replay-IBM,replay-SPY"
SMART = ("smart-LOW", "smart-NORMAL", "smart-HIGH")


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    fill_model: str
    strategy: str

    @property
    def plan_id(self) -> str:
        return f"{self.scenario.market}-{self.fill_model}-{self.strategy}-{self.scenario.seed}"


@dataclass
class Run:
    """The figures of one strategy on one scenario (plain floats: plotting and statistics)."""

    market: str
    fill_model: str
    strategy: str
    seed: int
    label: str
    status: str
    arrival_bps: float | None
    shortfall_bps: float | None
    delay_bps: float | None
    spread_capture: float | None
    markouts: dict[int, float | None]
    fill_rate: float
    passive_share: float | None
    completion_s: float
    requests: int
    orders_sent: int
    order_costs: list[float] = field(default_factory=list)
    times_to_fill: list[float] = field(default_factory=list)
    far_touch_bps: float | None = None
    """The far-touch reference of this scenario (from the market-order run)."""


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@cache
def _ledger() -> SqlLedger:
    """One in-memory ledger per worker process; plan ids keep the runs apart."""
    ledger = SqlLedger("sqlite://")
    ledger.open()
    return ledger


def run_job(job: Job) -> Run:
    broker, plan = make_market(job.scenario, job.fill_model, job.plan_id)
    config, algorithm = {**STRATEGIES, **VARIANTS}[job.strategy]()
    ledger = _ledger()
    captured: list[Quote] = []
    symbols = [item.symbol for item in plan.items]

    async def main() -> ExecutionResult:
        async with Executor(broker, config, ledger=ledger, order_algorithm=algorithm) as executor:
            await broker.subscribe_quotes(symbols, captured.append)
            result = await executor.execute_rebalance_plan(plan)
            await asyncio.sleep(MARKOUT_WINDOW)
            await broker.unsubscribe_quotes(symbols, captured.append)
            # A stream sends changes only: say that each symbol's last quote still held at the end.
            now = broker.clock.now()
            last = {q.symbol: q for q in captured}
            captured.extend(replace(q, timestamp=now) for q in last.values() if q.timestamp < now)
            return result

    result = run_virtual(main())
    costs = analyze(load_execution(ledger, plan.plan_id, captured))
    return _figures(job, result, costs)


def _figures(job: Job, result: ExecutionResult, costs: PlanCosts) -> Run:
    total = costs.total
    far = None
    if job.strategy == "market":
        num = den = Decimal(0)
        for order in costs.orders:
            arrival = order.arrival_mid
            record = next(o for o in result.orders if o.symbol == order.symbol)
            quote = record.attempts[0].quote if record.attempts else None
            if arrival is None or quote is None:
                continue
            num += (quote.ask - quote.bid) / 2 * order.requested_qty
            den += arrival * order.requested_qty
        far = float(num / den * 10000) if den else None
    return Run(
        market=job.scenario.market,
        fill_model=job.fill_model,
        strategy=job.strategy,
        seed=job.scenario.seed,
        label=job.scenario.label,
        status=result.status.value,
        arrival_bps=_f(total.arrival_cost_bps),
        shortfall_bps=_f(total.shortfall_bps),
        delay_bps=_f(total.delay_bps),
        spread_capture=_f(total.spread_capture),
        markouts={h: _f(total.markouts_bps.get(h)) for h in HORIZONS},
        fill_rate=float(total.fill_rate) if total.fill_rate is not None else 0.0,
        passive_share=_f(total.passive_share),
        completion_s=(result.finished_at - result.started_at).total_seconds(),
        requests=result.stats.requests,
        orders_sent=total.orders_sent,
        order_costs=[float(o.arrival_cost_bps) for o in costs.orders if o.arrival_cost_bps is not None],
        times_to_fill=[o.time_to_fill for o in costs.orders if o.time_to_fill is not None],
        far_touch_bps=far,
    )


# --- statistics ---


def mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def bootstrap_ci(diffs: Sequence[float], rounds: int = 4000, seed: int = 12345) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of paired differences."""
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


@dataclass
class Row:
    strategy: str
    runs: list[Run]
    arrival: float | None
    p95_order: float | None
    shortfall: float | None
    delay: float | None
    capture: float | None
    markouts: dict[int, float | None]
    fill_mean: float | None
    fill_min: float | None
    passive: float | None
    ttf_p50: float | None
    ttf_p95: float | None
    completion: float | None
    requests: float | None
    diff: tuple[float, float, float] | None = None  # mean, low, high (arrival cost vs market)
    diff_is: tuple[float, float, float] | None = None  # the same for the shortfall


def _paired(
    runs: list[Run], base: list[Run], metric: Callable[[Run], float | None]
) -> tuple[float, float, float] | None:
    by_seed = {r.seed: metric(r) for r in base}
    diffs = []
    for run in runs:
        mine, theirs = metric(run), by_seed.get(run.seed)
        if mine is not None and theirs is not None:
            diffs.append(mine - theirs)
    if len(diffs) < 2:
        return None
    low, high = bootstrap_ci(diffs)
    return statistics.fmean(diffs), low, high


def summarize(runs: list[Run]) -> list[Row]:
    by_strategy: dict[str, list[Run]] = {}
    for run in runs:
        by_strategy.setdefault(run.strategy, []).append(run)
    base = by_strategy.get("market", [])
    rows = []
    for strategy in [*STRATEGIES, *VARIANTS]:
        mine = by_strategy.get(strategy)
        if not mine:
            continue
        times = [t for r in mine for t in r.times_to_fill]
        row = Row(
            strategy=strategy,
            runs=mine,
            arrival=mean([r.arrival_bps for r in mine]),
            p95_order=percentile([c for r in mine for c in r.order_costs], 0.95),
            shortfall=mean([r.shortfall_bps for r in mine]),
            delay=mean([r.delay_bps for r in mine]),
            capture=mean([r.spread_capture for r in mine]),
            markouts={h: mean([r.markouts[h] for r in mine]) for h in HORIZONS},
            fill_mean=mean([r.fill_rate for r in mine]),
            fill_min=min(r.fill_rate for r in mine),
            passive=mean([r.passive_share for r in mine]),
            ttf_p50=percentile(times, 0.5),
            ttf_p95=percentile(times, 0.95),
            completion=mean([r.completion_s for r in mine]),
            requests=mean([float(r.requests) for r in mine]),
        )
        if strategy != "market" and base:
            row.diff = _paired(mine, base, lambda r: r.arrival_bps)
            row.diff_is = _paired(mine, base, lambda r: r.shortfall_bps)
        rows.append(row)
    if base:
        far = [r.far_touch_bps for r in base]
        for name, values in (("ref-arrival-mid", [0.0 for _ in base]), ("ref-far-touch", far)):
            known = [v for v in values if v is not None]
            capture = 0.0 if name == "ref-arrival-mid" else -1.0
            reference = Row(name, [], mean(known), None, None, None, capture, dict.fromkeys(HORIZONS),
                            1.0, 1.0, None, 0.0, 0.0, None, None)
            pairs = [(v, r.arrival_bps) for v, r in zip(values, base, strict=True)
                     if v is not None and r.arrival_bps is not None]
            if len(pairs) >= 2:
                diffs = [v - b for v, b in pairs]
                low, high = bootstrap_ci(diffs)
                reference.diff = (statistics.fmean(diffs), low, high)
            rows.append(reference)
    return rows


# --- output ---


def _n(value: float | None, digits: int = 2, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _ci(diff: tuple[float, float, float] | None) -> str:
    if diff is None:
        return "-"
    return f"{diff[0]:+.2f} [{diff[1]:+.2f}, {diff[2]:+.2f}]"


def table(rows: list[Row]) -> str:
    head = ("| strategy | arrival bp | p95 order bp | shortfall bp | delay bp | spread capture | "
            "markout 1s / 10s / 60s bp | fill mean / min | passive | time to fill p50 / p95 s | "
            "completion s | requests | vs market: arrival bp [95% CI] | vs market: shortfall bp [95% CI] |")
    lines = [head, "|" + "---|" * 15]
    for row in rows:
        markouts = " / ".join(_n(row.markouts[h]) for h in HORIZONS)
        fill = f"{_pct(row.fill_mean)} / {_pct(row.fill_min)}" if row.fill_mean is not None else "-"
        lines.append(
            f"| {row.strategy} | {_n(row.arrival)} | {_n(row.p95_order)} | {_n(row.shortfall)} | "
            f"{_n(row.delay)} | {_pct(row.capture)} | {markouts} | {fill} | {_pct(row.passive)} | "
            f"{_n(row.ttf_p50, 1, False)} / {_n(row.ttf_p95, 1, False)} | {_n(row.completion, 0, False)} | "
            f"{_n(row.requests, 1, False)} | {_ci(row.diff)} | {_ci(row.diff_is)} |"
        )
    return "\n".join(lines)


def targets(results: dict[tuple[str, str], list[Row]]) -> list[str]:
    """The issue's targets under the honest rule, on the synthetic market and the IBM replay.

    "No worse than" a baseline compares the mean arrival costs; the paired difference on
    the same scenarios and its 95% interval are given beside it.
    """
    lines = []
    for (market, fill_model), rows in results.items():
        if fill_model != "queue" or market not in ("synthetic", "replay-IBM"):
            continue
        by_name = {r.strategy: r for r in rows}
        for name in [*SMART, *VARIANTS]:
            row = by_name.get(name)
            if row is None or row.arrival is None:
                continue
            checks = []
            if row.diff is not None:
                ok = row.diff[2] < 0
                checks.append(f"{'PASS' if ok else 'MISS'} below market: {_ci(row.diff)} bp")
            for other in ("lean-spread", "post-cross"):
                theirs = by_name.get(other)
                if theirs is not None and theirs.arrival is not None:
                    ok = row.arrival <= theirs.arrival
                    paired = _paired(row.runs, theirs.runs, lambda r: r.arrival_bps)
                    checks.append(f"{'PASS' if ok else 'MISS'} no worse than {other}: "
                                  f"{row.arrival:+.2f} vs {theirs.arrival:+.2f} bp, paired {_ci(paired)}")
            if row.fill_min is not None:
                ok = row.fill_min >= 0.99
                checks.append(f"{'PASS' if ok else 'MISS'} fill >= 99%: min {row.fill_min * 100:.2f}%")
            kind = " (candidate setting)" if name in VARIANTS else ""
            lines.append(f"- {market}, {name}{kind}: " + "; ".join(checks))
    return lines


def plots(results: dict[tuple[str, str], list[Row]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    keys = list(results)
    markets = sorted({m for m, _ in keys}, key=lambda m: (m != "synthetic", m))
    fills = sorted({f for _, f in keys}, key=lambda f: f != "queue")
    figure, axes = plt.subplots(len(markets), len(fills), figsize=(6.5 * len(fills), 4.2 * len(markets)),
                                squeeze=False)
    for i, market in enumerate(markets):
        for j, fill_model in enumerate(fills):
            ax = axes[i][j]
            rows = [r for r in results.get((market, fill_model), []) if r.runs]
            data = [[r.arrival_bps for r in row.runs if r.arrival_bps is not None] for row in rows]
            labels = [row.strategy for row in rows]
            if data:
                ax.boxplot(data, showmeans=True, meanprops={"marker": "D", "markersize": 4})
                ax.set_xticks(range(1, len(labels) + 1), labels, rotation=35, ha="right", fontsize=8)
            refs = {r.strategy: r.arrival for r in results.get((market, fill_model), []) if not r.runs}
            if refs.get("ref-far-touch") is not None:
                ax.axhline(refs["ref-far-touch"], color="#dc2626", lw=0.8, ls="--",
                           label="far touch at arrival")
            ax.axhline(0.0, color="#6b7280", lw=0.8, ls=":", label="arrival mid")
            ax.set_title(f"{market}, {fill_model} fill rule", fontsize=10)
            ax.set_ylabel("plan arrival cost, bp (lower is better)", fontsize=8)
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(axis="y", alpha=0.3)
    figure.suptitle("Arrival cost per plan, by strategy (box: quartiles; diamond: mean)", fontsize=11)
    figure.tight_layout()
    path = out / "cost_distribution.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    files.append(path)

    figure, axes = plt.subplots(len(markets), len(fills), figsize=(6.0 * len(fills), 3.6 * len(markets)),
                                squeeze=False)
    for i, market in enumerate(markets):
        for j, fill_model in enumerate(fills):
            ax = axes[i][j]
            rows = [r for r in results.get((market, fill_model), []) if r.diff is not None]
            names = [r.strategy for r in rows]
            means = [r.diff[0] for r in rows if r.diff is not None]
            low = [r.diff[0] - r.diff[1] for r in rows if r.diff is not None]
            high = [r.diff[2] - r.diff[0] for r in rows if r.diff is not None]
            ax.errorbar(means, range(len(names)), xerr=[low, high], fmt="o", color="#1d4ed8", capsize=3)
            ax.axvline(0.0, color="#6b7280", lw=0.8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{market}, {fill_model} fill rule", fontsize=10)
            ax.set_xlabel("arrival cost minus market orders' on the same path, bp (95% CI)", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
    figure.suptitle("Paired difference against market orders (left of zero: cheaper)", fontsize=11)
    figure.tight_layout()
    path = out / "paired_vs_market.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    files.append(path)
    return files


def _script(name: str, args: list[str]) -> tuple[str, str]:
    """Run bench/<name> and return (its command line, its output)."""
    command = [sys.executable, str(BENCH / name), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    text = done.stdout.strip()
    if done.returncode != 0:
        text += f"\n({name} exited {done.returncode}: {done.stderr.strip()[-500:]})"
    return f"python bench/{name} " + " ".join(args), text


def engine_speed(ci: bool) -> list[tuple[str, str]]:
    """The engine's own benchmark (bench/engine_speed.py) and the quote path's cost per update."""
    sizes = ["--sizes", "10", "--no-breakdown", "--quiet"] if ci else ["--sizes", "10,100,1000"]
    updates = ["--updates", "5000" if ci else "100000"]
    return [_script("engine_speed.py", sizes), _script("quote_path.py", updates)]


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, check=False, cwd=ROOT)
    revision = done.stdout.strip() or "unknown"
    return revision + (" with uncommitted changes" if dirty.stdout.strip() else "")


# --- main ---


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ci", action="store_true",
                        help="small version for CI: a 10-symbol plan, 3 seeds, the synthetic market")
    parser.add_argument("--seeds", type=int, default=None,
                        help="synthetic seeds 1..N (default 30; 3 with --ci)")
    parser.add_argument("--symbols", type=int, default=10, help="symbols per synthetic plan")
    parser.add_argument("--replay-starts", type=int, default=None,
                        help="replay start times per recorded day (default 17; 1 with --ci)")
    parser.add_argument("--fill-models", default="queue,touch")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--markets", default=None,
                        help="default synthetic,replay-IBM,replay-SPY (synthetic with --ci)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=BENCH, help="where RESULTS.md and the plots go")
    parser.add_argument("--no-speed", action="store_true", help="skip bench/engine_speed.py")
    parser.add_argument("--variants", action="store_true",
                        help="also run candidate ladder settings: " + ", ".join(VARIANTS))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    seeds = list(range(1, (args.seeds or (3 if args.ci else 30)) + 1))
    starts = args.replay_starts or (1 if args.ci else 17)
    fill_models = [f for f in args.fill_models.split(",") if f]
    strategies = [s for s in args.strategies.split(",") if s]
    if args.variants:
        strategies += [v for v in VARIANTS if v not in strategies]
    markets = [m for m in (args.markets or ("synthetic" if args.ci else ALL_MARKETS)).split(",") if m]
    unknown = [s for s in strategies if s not in STRATEGIES and s not in VARIANTS]
    if unknown:
        parser.error(f"unknown strategies: {', '.join(unknown)}")
    if "market" not in strategies:
        strategies.insert(0, "market")  # the baseline of every comparison

    scenarios: list[Scenario] = []
    notes: list[str] = []
    if "synthetic" in markets:
        scenarios += synthetic(seeds, args.symbols)
    problem = replay_problem()
    replays = [m for m in markets if m.startswith("replay-")]
    if replays and problem is not None:
        notes.append(f"Replay markets skipped: {problem}.")
        print(f"replay skipped: {problem}", file=sys.stderr)
    elif replays:
        from markets import IBM_DAYS, SPY_DAYS

        if "replay-IBM" in replays:
            scenarios += replay("IBM", IBM_DAYS, starts)
        if "replay-SPY" in replays:
            scenarios += replay("SPY", SPY_DAYS, starts)
    jobs = [Job(s, f, strategy) for s in scenarios for f in fill_models for strategy in strategies]
    print(f"{len(jobs)} runs: {len(scenarios)} scenarios x {len(fill_models)} fill rules x "
          f"{len(strategies)} strategies, {args.workers} workers", file=sys.stderr)
    started = time.perf_counter()
    runs: list[Run] = []
    if args.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            chunk = max(1, min(8, len(jobs) // (args.workers * 8)))
            for run in pool.map(run_job, jobs, chunksize=chunk):
                runs.append(run)
                _progress(len(runs), len(jobs), started)
    else:
        for job in jobs:
            runs.append(run_job(job))
            _progress(len(runs), len(jobs), started)
    elapsed = time.perf_counter() - started

    results: dict[tuple[str, str], list[Row]] = {}
    for market in dict.fromkeys(s.market for s in scenarios):
        for fill_model in fill_models:
            subset = [r for r in runs if r.market == market and r.fill_model == fill_model]
            if subset:
                results[(market, fill_model)] = summarize(subset)

    args.out.mkdir(parents=True, exist_ok=True)
    images = [] if args.no_plots else plots(results, args.out)
    speed = None if args.no_speed else engine_speed(args.ci)
    command = "python bench/suite.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    report = render(results, runs, scenarios, command, seeds, starts, elapsed, images, speed, notes, args)
    (args.out / "RESULTS.md").write_text(report, encoding="utf-8")
    for (market, fill_model), rows in results.items():
        print(f"\n{market}, {fill_model} fill rule\n{table(rows)}")
    print("\n" + "\n".join(targets(results)))
    print(f"\nwrote {args.out / 'RESULTS.md'} ({elapsed:.0f} s of runs)", file=sys.stderr)
    broken = [r for r in runs if r.strategy == "market" and r.fill_rate < 0.99]
    if broken:
        # Market orders always fill on these markets: anything else means the suite is broken.
        first = broken[0]
        print(f"error: market orders left {len(broken)} plans unfilled, e.g. {first.market} "
              f"{first.fill_model} {first.label}: status {first.status}", file=sys.stderr)
        return 1
    return 0


def _progress(done: int, total: int, started: float) -> None:
    if done % 50 == 0 or done == total:
        print(f"  {done}/{total} runs, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def render(
    results: dict[tuple[str, str], list[Row]],
    runs: list[Run],
    scenarios: list[Scenario],
    command: str,
    seeds: list[int],
    starts: int,
    elapsed: float,
    images: list[Path],
    speed: list[tuple[str, str]] | None,
    notes: list[str],
    args: argparse.Namespace,
) -> str:
    lines = [
        "# trimtab benchmark results",
        "",
        f"Command: `{command}` (from the project root). Revision {git_revision()}; Python "
        f"{platform.python_version()} on {platform.machine()}, {len(runs)} runs in {elapsed:.0f} s "
        f"of wall time on {args.workers} processes.",
        "",
        "Scenarios (common random numbers: every strategy runs every scenario on the same path):",
    ]
    synthetic_count = sum(1 for s in scenarios if s.market == "synthetic")
    if synthetic_count:
        lines.append(f"- synthetic: seeds {seeds[0]}..{seeds[-1]}, a {args.symbols}-symbol plan per seed "
                     "(half "
                     "close a position of 300-4,000 shares, half buy $5k-$40k; symbols and sizes drawn "
                     "from the seed), the synthetic market calibrated to IBM and SPY (see "
                     "../shared/notes/market-calibration.md).")
    for market in ("replay-IBM", "replay-SPY"):
        mine = [s for s in scenarios if s.market == market]
        if mine:
            days = ", ".join(sorted({s.label.split()[0] for s in mine}))
            lines.append(f"- {market}: {len(mine)} runs of one order each, {starts} start times per recorded "
                         f"day from 10:00 to 15:20 New York time ({days}); "
                         "sells and buys alternate, sizes drawn from the index "
                         + ("(1,000-6,000 shares)." if market == "replay-SPY" else "(200-800 shares)."))
    lines += [f"- {note}" for note in notes]
    lines += [
        "",
        "Fill rules: `queue` is the honest simulator (queue position behind the displayed size, fills "
        "only from opposing trades reaching the order, adverse selection); `touch` fills a resting "
        "order completely at the first trade or quote at its price (optimistic, for comparison).",
        "",
        "Metrics (trimtab.tca on each run's ledger record; bp of notional, positive is a cost): "
        "arrival bp is the plan's notional-weighted arrival cost, averaged over scenarios; p95 order bp "
        "is the 95th percentile over all orders; shortfall is implementation shortfall from the plan's "
        "start (delay + execution + opportunity); spread capture +100% = near touch, -100% = far touch; "
        "markouts are signed so that positive means the price moved our way after the fill; fill is the "
        "share of target notional filled by the deadline (mean and worst scenario); passive is the "
        "share of filled notional from resting limits; time to fill is over all completed orders; "
        "completion is the plan's duration; requests are broker REST requests. The paired differences "
        "are strategy minus market orders on the same scenario, with a 95% percentile-bootstrap "
        "interval (4,000 resamples). The two reference rows are not executable: filling everything at "
        "the arrival mid, or at the far touch of the arrival quote (the market orders' arrival).",
        "",
    ]
    for (market, fill_model), rows in results.items():
        lines += [f"## {market}, {fill_model} fill rule", "", table(rows), ""]
    lines += ["## Targets (honest fill rule)", ""]
    lines += targets(results) or ["- (no smart strategy measured)"]
    lines.append("")
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in images]
        lines.append("")
    if speed is not None:
        lines += ["## Engine speed", ""]
        for command, output in speed:
            lines += [f"`{command}`:", "", "```", output, "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

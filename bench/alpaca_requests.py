"""REST requests per filled order, and the peak request rate, of AlpacaBroker on the sandbox.

Runs a 50-symbol plan (25 sells, 25 buys) through the Executor and AlpacaBroker against a
sandbox on a free localhost port, with healthy streams, and prints:

- trading REST requests per filled order (target: at most 2.5), counted by the sandbox;
- market-data REST requests (a separate budget at Alpaca), also per filled order;
- the peak number of trading requests in any sliding minute (limit: 200), as the sandbox
  saw them and as the adapter's token bucket granted them.

    python bench/alpaca_requests.py [--symbols 50] [--speed 10] [--fill-wait 2] [--algo smart]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from decimal import Decimal
from typing import Any

from trimtab.adapters.alpaca import AlpacaBroker, AlpacaConfig
from trimtab.adapters.clock import SystemClock
from trimtab.adapters.sandbox import AccountConfig, start_sandbox
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

KEY_ID, SECRET = "PKBENCH", "bench-secret"
TICKERS = [
    "AAPL",
    "MSFT",
    "AMZN",
    "GOOGL",
    "META",
    "NVDA",
    "TSLA",
    "IBM",
    "ORCL",
    "INTC",
    "AMD",
    "CSCO",
    "ADBE",
    "CRM",
    "NFLX",
    "PYPL",
    "QCOM",
    "TXN",
    "AVGO",
    "MU",
    "JPM",
    "BAC",
    "WFC",
    "C",
    "GS",
    "MS",
    "V",
    "MA",
    "AXP",
    "BLK",
    "KO",
    "PEP",
    "PG",
    "JNJ",
    "PFE",
    "MRK",
    "ABBV",
    "UNH",
    "CVS",
    "WMT",
    "COST",
    "HD",
    "LOW",
    "NKE",
    "MCD",
    "SBUX",
    "DIS",
    "CMCSA",
    "T",
    "VZ",
    "XOM",
    "CVX",
    "COP",
    "SLB",
    "BA",
    "CAT",
    "DE",
    "GE",
    "MMM",
    "HON",
]


def build(symbols: int, amount: Decimal) -> tuple[dict[str, Any], RebalancePlan, list[str]]:
    if not 2 <= symbols <= len(TICKERS):
        raise SystemExit(f"--symbols must be between 2 and {len(TICKERS)}")
    chosen = TICKERS[:symbols]
    sells, buys = chosen[: symbols // 2], chosen[symbols // 2 :]
    account = {"cash": str(amount * len(buys)), "positions": {s: "200" for s in sells}}
    items = [{"symbol": s, "action": "SELL", "trade_amount": str(-amount)} for s in sells]
    items += [{"symbol": s, "action": "BUY", "trade_amount": str(amount)} for s in buys]
    plan = RebalancePlan.model_validate({"plan_id": f"bench-{symbols}", "items": items})
    return account, plan, chosen


async def run(args: argparse.Namespace, url: str) -> tuple[ExecutionResult, AlpacaBroker, float]:
    broker = AlpacaBroker(AlpacaConfig(KEY_ID, SECRET, base_url=url, data_url=url))
    config = ExecutionConfig.model_validate(
        {
            "algo": args.algo,
            "ladders": {"NORMAL": {"fill_wait": args.fill_wait}},
            "settlement_timeout": 30,
            "plan_timeout": 1800,
        }
    )
    _, plan, _ = build(args.symbols, Decimal(args.amount))
    clock = SystemClock()
    started = clock.monotonic()
    async with Executor(broker, config) as executor:
        result = await executor.execute_rebalance_plan(plan)
    return result, broker, clock.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--amount", default="1000", help="dollars per plan item")
    parser.add_argument("--speed", type=float, default=10.0, help="sandbox market speed factor")
    parser.add_argument("--fill-wait", type=float, default=2.0, help="seconds per ladder step (real time)")
    parser.add_argument("--algo", choices=("smart", "market"), default="smart")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    account, _, symbols = build(args.symbols, Decimal(args.amount))
    accounts = [AccountConfig(KEY_ID, SECRET, name="bench", account=account, universe=tuple(symbols))]
    handle = start_sandbox(accounts, speed=args.speed, seed=args.seed)
    try:
        result, broker, seconds = asyncio.run(run(args, handle.url))
        stats = handle.stats()[0]
    finally:
        handle.stop()
    filled = sum(1 for o in result.orders if o.filled_shares > 0)
    sent = sum(len(o.attempts) for o in result.orders)
    figures = {
        "symbols": args.symbols,
        "algo": args.algo,
        "status": result.status.value,
        "orders_filled": filled,
        "orders_sent": sent,
        "trading_requests": stats["requests"],
        "trading_requests_per_filled_order": round(stats["requests"] / filled, 3) if filled else None,
        "data_requests": stats["data_requests"],
        "data_requests_per_filled_order": round(stats["data_requests"] / filled, 3) if filled else None,
        "peak_trading_requests_per_minute_server": stats["peak_per_minute"],
        "peak_trading_requests_per_minute_client": broker.peak_requests_per_minute,
        "refused_429": stats["refused"],
        "rest_polls": broker.polls,
        "events_from_stream": broker.stream_events,
        "events_from_rest": broker.rest_events,
        "seconds": round(seconds, 2),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())

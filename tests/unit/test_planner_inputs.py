"""gather_planning_inputs and plan_from_inputs over the ports.

A small in-memory broker and quote feed stand in here because the cases are quotes the
simulated exchange does not produce on purpose (stale, crossed, missing); the planner
over the simulated exchange itself is in tests/integration/test_planner_sim.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from trimtab.domain.account import Account, Asset, MarketClock, Position
from trimtab.domain.errors import PlanValidationError, SafetyRefusalError
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
)
from trimtab.domain.plan import Action
from trimtab.domain.quotes import Quote
from trimtab.domain.targets import TargetWeights
from trimtab.engine.planner import (
    PlannerConfig,
    PlanningInputs,
    gather_planning_inputs,
    plan_from_inputs,
)
from trimtab.ports.broker import OrderListener
from trimtab.ports.quotes import QuoteListener

D = Decimal
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0


class FakeBroker:
    """Account, positions and open orders from memory; no orders accepted."""

    def __init__(
        self, cash: str, positions: Mapping[str, str], open_orders: Iterable[OrderSnapshot] = ()
    ) -> None:
        self.cash = D(cash)
        self.positions = {s: Position(s, D(q), D(q), D(1)) for s, q in positions.items()}
        self.open_orders = list(open_orders)
        self.asked_open_orders_for: list[str] | None = None

    @property
    def name(self) -> str:
        return "fake"

    @property
    def clock(self) -> FixedClock:
        return FixedClock()

    @property
    def requests_made(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_account(self) -> Account:
        return Account(cash=self.cash, buying_power=self.cash, portfolio_value=D("999999"))

    async def get_market_clock(self) -> MarketClock:
        return MarketClock(timestamp=NOW, is_open=True, next_open=NOW, next_close=NOW)

    async def get_positions(self) -> Mapping[str, Position]:
        return dict(self.positions)

    async def get_asset(self, symbol: str) -> Asset | None:
        return Asset(symbol)

    async def get_assets(self, symbols: Iterable[str]) -> Mapping[str, Asset]:
        return {symbol: Asset(symbol) for symbol in symbols}

    async def submit_order(self, request: OrderRequest) -> OrderSnapshot:
        raise AssertionError("the planner must not send orders")

    async def cancel_order(self, order_id: BrokerOrderId) -> None:
        raise AssertionError("the planner must not cancel orders")

    async def get_order(self, order_id: BrokerOrderId) -> OrderSnapshot:
        raise AssertionError("not used")

    async def get_order_by_client_id(self, client_order_id: ClientOrderId) -> OrderSnapshot | None:
        return None

    async def list_open_orders(self, symbols: Iterable[str] | None = None) -> list[OrderSnapshot]:
        self.asked_open_orders_for = list(symbols or [])
        return list(self.open_orders)

    def add_order_listener(self, listener: OrderListener) -> Callable[[], None]:
        return lambda: None


class FakeQuotes:
    def __init__(self, quotes: Mapping[str, Quote | None]) -> None:
        self.quotes = dict(quotes)
        self.asked: list[str] = []

    async def subscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        return None

    async def unsubscribe_quotes(self, symbols: Iterable[str], listener: QuoteListener) -> None:
        return None

    async def get_quote(self, symbol: str) -> Quote | None:
        self.asked.append(symbol)
        await asyncio.sleep(0)
        return self.quotes.get(symbol)


def q(symbol: str, bid: str, ask: str, age_seconds: float = 1.0) -> Quote:
    return Quote(symbol, D(bid), D(ask), D(100), D(100), NOW - timedelta(seconds=age_seconds))


def gather(
    broker: FakeBroker, feed: FakeQuotes, symbols: Iterable[str], config: PlannerConfig | None = None
) -> PlanningInputs:
    return asyncio.run(gather_planning_inputs(broker, feed, symbols, config))


def test_gathers_account_positions_and_mid_prices() -> None:
    broker = FakeBroker("1000", {"SPY": "10", "OLD": "2", "ZERO": "0"})
    feed = FakeQuotes(
        {"SPY": q("SPY", "99.99", "100.01"), "OLD": q("OLD", "9", "11"), "BND": q("BND", "70", "70.02")}
    )
    inputs = gather(broker, feed, ["bnd", "SPY"], PlannerConfig(max_spread_bps=D("2000")))
    assert sorted(feed.asked) == ["BND", "OLD", "SPY"]  # targets plus held, not the empty one
    assert broker.asked_open_orders_for == ["BND", "SPY", "OLD"]
    assert inputs.prices == {"SPY": D("100.00"), "OLD": D("10"), "BND": D("70.01")}
    assert inputs.price_problems == {}
    # Valued at the mids, not at the account's own figure.
    assert inputs.portfolio_value == D("1000") + 10 * D("100.00") + 2 * D("10")


def test_unusable_quotes_count_as_no_price_with_the_reason() -> None:
    broker = FakeBroker("1000", {"SPY": "10"})
    feed = FakeQuotes(
        {
            "SPY": q("SPY", "100", "100.02", age_seconds=3600),
            "CRS": q("CRS", "10.01", "10.00"),
            "WID": q("WID", "9", "11"),
            "ZER": q("ZER", "0", "5"),
            "NONE": None,
        }
    )
    inputs = gather(broker, feed, ["CRS", "WID", "ZER", "NONE"])
    assert inputs.prices == {}
    assert "stale" in inputs.price_problems["SPY"]
    assert "crossed" in inputs.price_problems["CRS"]
    assert "spread too wide" in inputs.price_problems["WID"]
    assert "zero-sided" in inputs.price_problems["ZER"]
    assert inputs.price_problems["NONE"] == "no quote"
    # The held symbol has no price: the account's own value stands in.
    assert inputs.portfolio_value == D("999999")
    with pytest.raises(PlanValidationError, match=r"no usable price for SPY \(stale quote"):
        plan_from_inputs(TargetWeights.from_mapping({"SPY": "1"}), inputs, PlannerConfig(), "p")


def test_plan_from_inputs_uses_quotes_for_the_cost() -> None:
    broker = FakeBroker("10000", {})
    feed = FakeQuotes({"SPY": q("SPY", "99.90", "100.10")})
    inputs = gather(broker, feed, ["SPY"])
    proposal = plan_from_inputs(TargetWeights.from_mapping({"SPY": "0.5"}), inputs, PlannerConfig(), "p")
    assert proposal.items[0].action is Action.BUY
    assert proposal.estimated_cost_bps == D("10.00")


def _open_order(symbol: str) -> OrderSnapshot:
    return OrderSnapshot(
        broker_order_id=BrokerOrderId("b-1"),
        client_order_id=ClientOrderId("c-1"),
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        qty=D(1),
        status=OrderStatus.ACCEPTED,
        filled_qty=D(0),
        filled_avg_price=None,
        limit_price=D("99"),
        created_at=NOW,
        updated_at=NOW,
    )


def test_open_orders_refuse_a_plan_unless_allowed() -> None:
    broker = FakeBroker("10000", {}, open_orders=[_open_order("SPY")])
    feed = FakeQuotes({"SPY": q("SPY", "99.99", "100.01")})
    inputs = gather(broker, feed, ["SPY"])
    targets = TargetWeights.from_mapping({"SPY": "0.5"})
    with pytest.raises(SafetyRefusalError, match="open orders at the broker for SPY"):
        plan_from_inputs(targets, inputs, PlannerConfig(), "p")
    proposal = plan_from_inputs(targets, inputs, PlannerConfig(), "p", allow_open_orders=True)
    assert proposal.total_buys == D("5000.00")

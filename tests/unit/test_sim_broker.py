"""SimBroker: matching, queue position, account, rejections, latency, cancel and replace.

Every test runs in virtual time on run_virtual(). Most pin the book with force_quote()
(which also stops random trades) and drive it with inject_trade(), so the outcome is exact.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest

from trimtab.adapters.clock import LoopClock
from trimtab.adapters.sim import SimBroker, SymbolProfile, run_virtual
from trimtab.domain.account import Asset
from trimtab.domain.errors import (
    BrokerUnavailableError,
    DuplicateClientOrderIdError,
    InsufficientBuyingPowerError,
    InsufficientQuantityError,
    InvalidOrderError,
    OrderNotCancelableError,
    OrderNotFoundError,
    QuoteStreamError,
    RateLimitedError,
    UnknownOrderOutcomeError,
)
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderEventKind,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trimtab.domain.quotes import Quote
from trimtab.ports import Broker, QuoteFeed

T = TypeVar("T")
D = Decimal
NY = ZoneInfo("America/New_York")
LATENCY = 0.02
K = OrderEventKind
S = OrderStatus


def profile(price: str = "100.00", **overrides: float) -> SymbolProfile:
    """A large cap with 200 shares at the touch and on every deeper level."""
    return SymbolProfile(price=D(price), touch_size=200, depth_size=200, **overrides)  # type: ignore[arg-type]


def make(**options: object) -> SimBroker:
    options.setdefault("seed", 1)
    options.setdefault("profiles", {"AAA": profile(), "BBB": profile("50.00")})
    return SimBroker(**options)  # type: ignore[arg-type]


def run(test: Callable[[], Awaitable[T]]) -> T:
    return run_virtual(test())  # type: ignore[arg-type]


def order(
    cid: str,
    side: Side,
    qty: str | int,
    limit: str | None = None,
    symbol: str = "AAA",
    tif: TimeInForce = TimeInForce.DAY,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=ClientOrderId(cid),
        symbol=symbol,
        side=side,
        qty=D(qty),
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=None if limit is None else D(limit),
        time_in_force=tif,
    )


class Events:
    """Records order events with the loop time they were delivered at."""

    def __init__(self, broker: SimBroker) -> None:
        self.items: list[tuple[float, OrderEvent]] = []
        broker.add_order_listener(self._on)

    def _on(self, event: OrderEvent) -> None:
        self.items.append((asyncio.get_running_loop().time(), event))

    def kinds(self, cid: str | None = None) -> list[OrderEventKind]:
        return [e.kind for _, e in self.items if cid is None or e.order.client_order_id == cid]

    def fills(self, cid: str) -> list[tuple[Decimal, Decimal]]:
        return [
            (e.fill_qty, e.fill_price)
            for _, e in self.items
            if e.order.client_order_id == cid and e.fill_qty is not None and e.fill_price is not None
        ]


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


def pin(broker: SimBroker, bid: str = "100.00", ask: str = "100.03", bid_size: int = 200,
        ask_size: int = 200, symbol: str = "AAA") -> None:
    broker.force_quote(symbol, D(bid), D(ask), D(bid_size), D(ask_size))


# -- the ports -------------------------------------------------------------------------------


def test_implements_broker_and_quote_feed() -> None:
    broker = make()
    assert isinstance(broker, Broker)
    assert isinstance(broker, QuoteFeed)
    assert broker.name == "sim"
    assert isinstance(broker.clock, LoopClock)


def test_clock_starts_at_ten_new_york_and_runs_in_virtual_time() -> None:
    broker = make(market_date=date(2026, 3, 2))

    async def main() -> tuple[datetime, datetime]:
        first = broker.clock.now()
        await asyncio.sleep(600)
        return first, broker.clock.now()

    first, later = run(main)
    assert first.astimezone(NY).time() == time(10, 0)
    assert first.astimezone(NY).date().isoformat() == "2026-03-02"
    assert (later - first).total_seconds() == pytest.approx(600)


def test_start_and_market_date_are_exclusive() -> None:
    with pytest.raises(ValueError, match="start or market_date"):
        SimBroker(start=datetime(2026, 1, 5, 15, tzinfo=NY), market_date=date(2026, 1, 5))
    with pytest.raises(ValueError, match="timezone"):
        SimBroker(start=datetime(2026, 1, 5, 15))  # noqa: DTZ001


# -- taking liquidity -------------------------------------------------------------------------


def test_market_buy_walks_the_levels_and_pays_impact() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> tuple[OrderSnapshot, Quote | None]:
        pin(broker)
        snap = await broker.submit_order(order("m1", Side.BUY, 500))
        await settle()
        return await broker.get_order(snap.broker_order_id), await broker.get_quote("AAA")

    final, quote = run(main)
    assert events.fills("m1") == [(D(200), D("100.03")), (D(200), D("100.04")), (D(100), D("100.05"))]
    assert events.kinds("m1") == [K.ACCEPTED, K.PARTIAL_FILL, K.PARTIAL_FILL, K.FILL]
    assert final.status is S.FILLED
    assert final.filled_avg_price == D("100.038")
    assert quote is not None
    assert quote.ask == D("100.05")  # the two first levels are gone
    assert (broker.requests_made, broker.quote_requests_made) == (2, 1)


def test_market_sell_takes_the_bid() -> None:
    broker = make(positions={"AAA": D(250)})
    events = Events(broker)

    async def main() -> None:
        pin(broker)
        await broker.submit_order(order("s1", Side.SELL, 250))
        await settle()

    run(main)
    assert events.fills("s1") == [(D(200), D("100.00")), (D(50), D("99.99"))]


def test_marketable_limit_fills_up_to_its_limit_then_rests() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> tuple[OrderSnapshot, Quote | None]:
        pin(broker)
        snap = await broker.submit_order(order("l1", Side.BUY, 500, "100.04"))
        await settle()
        return await broker.get_order(snap.broker_order_id), await broker.get_quote("AAA")

    final, quote = run(main)
    assert events.fills("l1") == [(D(200), D("100.03")), (D(200), D("100.04"))]
    assert final.status is S.PARTIALLY_FILLED
    assert final.filled_qty == D(400)
    assert quote is not None
    assert quote.bid == D("100.04")  # the rest of our order is now the best bid
    assert quote.bid_size == D(100)


def test_ioc_limit_cancels_what_it_cannot_take() -> None:
    broker = make()

    async def main() -> OrderSnapshot:
        pin(broker)
        snap = await broker.submit_order(order("i1", Side.BUY, 500, "100.04", tif=TimeInForce.IOC))
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.CANCELED
    assert final.filled_qty == D(400)


# -- resting orders: queue position -------------------------------------------------------------


def test_resting_buy_waits_behind_the_displayed_queue() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> list[Decimal]:
        pin(broker)  # 200 shares bid at 100.00
        snap = await broker.submit_order(order("q1", Side.BUY, 100, "100.00"))
        filled = []
        for size in (150, 100, 60):  # sells hitting the bid
            broker.inject_trade("AAA", size, at="bid")
            await settle()
            filled.append((await broker.get_order(snap.broker_order_id)).filled_qty)
        return filled

    assert run(main) == [D(0), D(50), D(100)]
    assert events.fills("q1") == [(D(50), D("100.00")), (D(50), D("100.00"))]


def test_trades_at_the_ask_or_inside_never_fill_a_resting_buy() -> None:
    broker = make()

    async def main() -> OrderSnapshot:
        pin(broker, ask="100.05")
        snap = await broker.submit_order(order("q2", Side.BUY, 100, "100.00"))
        for _ in range(20):
            broker.inject_trade("AAA", 500, at="ask")
            broker.inject_trade("AAA", 500, at="inside")
        await settle()
        return await broker.get_order(snap.broker_order_id)

    assert run(main).filled_qty == D(0)


def test_order_inside_the_spread_is_first_in_the_queue() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> tuple[Quote | None, OrderSnapshot]:
        pin(broker, ask="100.05")
        snap = await broker.submit_order(order("q3", Side.BUY, 100, "100.02"))
        quote = await broker.get_quote("AAA")
        broker.inject_trade("AAA", 30, at="bid")
        await settle()
        return quote, await broker.get_order(snap.broker_order_id)

    quote, final = run(main)
    assert quote is not None
    assert (quote.bid, quote.bid_size) == (D("100.02"), D(100))
    assert final.filled_qty == D(30)
    assert events.fills("q3") == [(D(30), D("100.02"))]


def test_a_trade_that_eats_the_whole_queue_moves_the_price_through() -> None:
    broker = make()

    async def main() -> Quote | None:
        pin(broker)
        await broker.submit_order(order("q4", Side.BUY, 100, "100.00"))
        broker.inject_trade("AAA", 400, at="bid")
        await settle(0.05)
        return await broker.get_quote("AAA")

    quote = run(main)
    assert quote is not None
    assert quote.bid == D("99.99")


def test_the_quote_moving_through_fills_at_the_limit() -> None:
    """Adverse selection: the ask falls to a resting buy's limit; it fills at its limit."""
    broker = make()
    events = Events(broker)

    async def main() -> OrderSnapshot:
        pin(broker)  # 200 shares bid ahead of us at 100.00
        snap = await broker.submit_order(order("a1", Side.BUY, 300, "100.00"))
        pin(broker, bid="99.97", ask="100.00", ask_size=250)  # sellers at our price
        await settle()
        first = await broker.get_order(snap.broker_order_id)
        assert first.filled_qty == D(50)  # the queue ahead of us traded first
        pin(broker, bid="99.95", ask="99.98", ask_size=100)  # the market falls through us
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.FILLED
    assert events.fills("a1") == [(D(50), D("100.00")), (D(250), D("100.00"))]
    assert final.filled_avg_price == D("100.00")


def test_touch_model_fills_at_the_first_touch() -> None:
    async def one(fill_model: str) -> Decimal:
        broker = make(fill_model=fill_model)
        pin(broker)
        snap = await broker.submit_order(order("t1", Side.BUY, 100, "100.00"))
        broker.inject_trade("AAA", 10, at="bid")
        await settle()
        return (await broker.get_order(snap.broker_order_id)).filled_qty

    assert run(lambda: one("touch")) == D(100)
    assert run(lambda: one("queue")) == D(0)


def test_touch_model_flatters_passive_orders_on_the_same_path() -> None:
    symbols = [f"P{i:02d}" for i in range(30)]

    async def one(fill_model: str) -> tuple[int, Decimal]:
        broker = SimBroker(seed=5, fill_model=fill_model, cash=D(10_000_000))
        snaps = []
        for i, symbol in enumerate(symbols):
            quote = await broker.get_quote(symbol)
            assert quote is not None
            snaps.append(await broker.submit_order(order(f"p{i}", Side.BUY, 300, str(quote.bid), symbol)))
        await asyncio.sleep(20)
        finals = [await broker.get_order(s.broker_order_id) for s in snaps]
        return sum(f.status is S.FILLED for f in finals), sum((f.filled_qty for f in finals), D(0))

    touch_filled, touch_qty = run(lambda: one("touch"))
    queue_filled, queue_qty = run(lambda: one("queue"))
    assert touch_filled > queue_filled
    assert touch_qty > queue_qty


def test_own_resting_order_shows_in_the_quote() -> None:
    broker = make()

    async def main() -> Quote | None:
        pin(broker)
        await broker.submit_order(order("o1", Side.BUY, 70, "100.00"))
        return await broker.get_quote("AAA")

    quote = run(main)
    assert quote is not None
    assert (quote.bid, quote.bid_size) == (D("100.00"), D(270))


# -- the account ---------------------------------------------------------------------------------


def test_buy_reserves_buying_power_until_cancelled() -> None:
    broker = make()

    async def main() -> list[Decimal]:
        pin(broker)
        seen = [(await broker.get_account()).buying_power]
        snap = await broker.submit_order(order("r1", Side.BUY, 100, "99.00"))
        seen.append((await broker.get_account()).buying_power)
        await broker.cancel_order(snap.broker_order_id)
        await settle()
        seen.append((await broker.get_account()).buying_power)
        return seen

    assert run(main) == [D("100000.00"), D("90100.00"), D("100000.00")]


def test_sell_proceeds_raise_cash_only_as_the_sell_fills() -> None:
    broker = make(positions={"AAA": D(300)})

    async def main() -> list[tuple[Decimal, Decimal, Decimal, Decimal]]:
        pin(broker)
        seen = []

        async def look() -> None:
            account = await broker.get_account()
            position = (await broker.get_positions()).get("AAA")
            qty = position.qty if position else D(0)
            available = position.qty_available if position else D(0)
            seen.append((account.cash, account.buying_power, qty, available))

        await look()
        await broker.submit_order(order("p1", Side.SELL, 300, "100.03"))
        await look()
        broker.inject_trade("AAA", 250, at="ask")  # 200 ahead, 50 for us
        await settle()
        await look()
        broker.inject_trade("AAA", 300, at="ask")
        await settle()
        await look()
        return seen

    assert run(main) == [
        (D("100000.00"), D("100000.00"), D(300), D(300)),
        (D("100000.00"), D("100000.00"), D(300), D(0)),
        (D("105001.50"), D("105001.50"), D(250), D(0)),
        (D("130009.00"), D("130009.00"), D(0), D(0)),
    ]


def test_portfolio_value_is_cash_plus_positions_at_the_mid() -> None:
    broker = make(positions={"AAA": D(10)})

    async def main() -> tuple[Decimal, Decimal | None]:
        pin(broker, ask="100.04")
        account = await broker.get_account()
        positions = await broker.get_positions()
        return account.portfolio_value, positions["AAA"].market_value

    assert run(main) == (D("101000.20"), D("1000.20"))


def test_buy_fill_moves_cash_and_position_with_average_price() -> None:
    broker = make(cash=D(50_000))

    async def main() -> tuple[Decimal, Decimal, Decimal]:
        pin(broker)
        await broker.submit_order(order("b1", Side.BUY, 300))
        await settle()
        account = await broker.get_account()
        position = (await broker.get_positions())["AAA"]
        return account.cash, position.qty, position.avg_entry_price

    cash, qty, avg = run(main)
    assert qty == D(300)
    assert cash == D(50_000) - D("20006.00") - D("10004.00")
    assert avg == D("100.033333")


# -- rejections ---------------------------------------------------------------------------------


def reject(
    broker: SimBroker,
    request: OrderRequest,
    error: type[Exception],
    before: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """Submit request (after before()), expect error; return its message."""

    async def main() -> str:
        if before is not None:
            await before()
        with pytest.raises(error) as caught:
            await broker.submit_order(request)
        return str(caught.value)

    return run(main)


def test_reject_insufficient_buying_power() -> None:
    message = reject(make(cash=D(1000)), order("x", Side.BUY, 100, "100.00"), InsufficientBuyingPowerError)
    assert "buying power" in message


def test_reject_sell_without_shares_no_short_selling() -> None:
    assert "available 0" in reject(make(), order("x", Side.SELL, 1, "100.00"), InsufficientQuantityError)
    broker = make(positions={"AAA": D(10)})
    assert "available 10" in reject(broker, order("y", Side.SELL, 11), InsufficientQuantityError)


def test_reject_sell_of_shares_held_by_an_open_sell() -> None:
    broker = make(positions={"AAA": D(10)})

    async def first() -> None:
        await broker.submit_order(order("s1", Side.SELL, 6, "200.00"))

    message = reject(broker, order("s2", Side.SELL, 5, "200.00"), InsufficientQuantityError, first)
    assert "available 4" in message


def test_reject_fractional_qty_on_whole_share_asset() -> None:
    broker = make(assets={"AAA": Asset("AAA", fractionable=False)})
    message = reject(broker, order("x", Side.BUY, "1.5", "100.00"), InvalidOrderError)
    assert "not fractionable" in message


def test_reject_qty_with_more_than_nine_decimals() -> None:
    message = reject(make(), order("x", Side.BUY, "1.0000000001", "100.00"), InvalidOrderError)
    assert "more than 9 decimals" in message


def test_reject_fractional_order_under_one_dollar() -> None:
    message = reject(make(), order("x", Side.BUY, "0.005", "100.00"), InvalidOrderError)
    assert "$1" in message


def test_reject_untradable_and_unknown_assets() -> None:
    broker = make(assets={"AAA": Asset("AAA", tradable=False)}, unknown_symbols={"GONE"})
    assert "not tradable" in reject(broker, order("x", Side.BUY, 1, "100.00"), InvalidOrderError)
    assert "not found" in reject(broker, order("y", Side.BUY, 1, "100.00", symbol="GONE"), InvalidOrderError)
    assert "not found" in reject(broker, order("z", Side.BUY, 1, "100.00", symbol="bad!"), InvalidOrderError)

    async def assets() -> tuple[Asset | None, Asset | None, list[str]]:
        many = await broker.get_assets(["AAA", "GONE", "CCC"])
        return await broker.get_asset("GONE"), await broker.get_asset("CCC"), sorted(many)

    gone, other, many = run(assets)
    assert gone is None
    assert other == Asset("CCC")
    assert many == ["AAA", "CCC"]


def test_reject_limit_price_off_the_tick() -> None:
    message = reject(make(), order("x", Side.BUY, 1, "100.005"), InvalidOrderError)
    assert "tick" in message


def test_reject_wash_trade_against_an_open_opposite_order() -> None:
    broker = make(positions={"AAA": D(10)})

    async def first() -> None:
        await broker.submit_order(order("s1", Side.SELL, 10, "150.00"))

    message = reject(broker, order("b1", Side.BUY, 1, "90.00"), InvalidOrderError, first)
    assert "wash trade" in message


def test_reject_reused_client_order_id() -> None:
    broker = make()

    async def first() -> None:
        await broker.submit_order(order("same", Side.BUY, 1, "90.00"))

    assert "unique" in reject(broker, order("same", Side.BUY, 1, "91.00"), DuplicateClientOrderIdError, first)


def test_reject_after_the_close() -> None:
    broker = make(start=datetime(2026, 1, 5, 15, 59, tzinfo=NY))

    async def late() -> None:
        await broker.start()  # the market starts when the broker is first used
        await asyncio.sleep(61)

    assert "closed" in reject(broker, order("x", Side.BUY, 1, "100.00"), InvalidOrderError, late)


def test_unknown_order_ids() -> None:
    broker = make()

    async def main() -> OrderSnapshot | None:
        with pytest.raises(OrderNotFoundError):
            await broker.get_order(BrokerOrderId("nope"))
        with pytest.raises(OrderNotFoundError):
            await broker.cancel_order(BrokerOrderId("nope"))
        return await broker.get_order_by_client_id(ClientOrderId("nope"))

    assert run(main) is None


# -- latency and events ----------------------------------------------------------------------------


def test_requests_take_a_round_trip_and_events_one_way() -> None:
    broker = make(latency=0.05)
    events = Events(broker)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        pin(broker)
        t0 = loop.time()
        await broker.submit_order(order("l1", Side.BUY, 10))
        t1 = loop.time()
        await settle()
        return t0, t1

    t0, t1 = run(main)
    assert t1 - t0 == pytest.approx(0.10)
    delivered = [t for t, _ in events.items]
    assert delivered == pytest.approx([t0 + 0.10] * 2)
    # The exchange stamped them when it matched the order, one latency after the send.
    stamps = [(e.timestamp - events.items[0][1].order.created_at).total_seconds() for _, e in events.items]
    assert stamps == pytest.approx([0.0, 0.0])


def test_events_are_delivered_on_the_loop_not_inside_submit() -> None:
    broker = make(latency=0.0)
    calls: list[str] = []
    broker.add_order_listener(lambda e: calls.append(e.kind.value))

    async def main() -> list[str]:
        pin(broker)
        await broker.submit_order(order("e1", Side.BUY, 10))
        during = list(calls)
        await settle()
        return during

    during = run(main)
    assert calls == ["accepted", "fill"]
    assert during == ["accepted", "fill"]  # delivered before the reply, by the loop


def test_listener_removal() -> None:
    broker = make()
    calls: list[OrderEvent] = []
    remove = broker.add_order_listener(calls.append)
    remove()
    remove()

    async def main() -> None:
        pin(broker)
        await broker.submit_order(order("e2", Side.BUY, 10))
        await settle()

    run(main)
    assert calls == []


# -- cancel -----------------------------------------------------------------------------------------


def test_cancel_goes_pending_then_canceled_after_the_latency() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> tuple[float, OrderSnapshot]:
        loop = asyncio.get_running_loop()
        pin(broker)
        snap = await broker.submit_order(order("c1", Side.BUY, 10, "99.00"))
        t0 = loop.time()
        await broker.cancel_order(snap.broker_order_id)
        await settle()
        return t0, await broker.get_order(snap.broker_order_id)

    t0, final = run(main)
    assert final.status is S.CANCELED
    assert events.kinds("c1") == [K.ACCEPTED, K.PENDING_CANCEL, K.CANCELED]
    pending, canceled = (t for t, e in events.items if e.kind in (K.PENDING_CANCEL, K.CANCELED))
    assert pending == pytest.approx(t0 + 2 * LATENCY)
    assert canceled == pytest.approx(t0 + 3 * LATENCY)


def test_cancel_after_a_partial_fill_keeps_the_fill() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> OrderSnapshot:
        pin(broker)
        snap = await broker.submit_order(order("c2", Side.BUY, 100, "100.00"))
        broker.inject_trade("AAA", 230, at="bid")
        await broker.cancel_order(snap.broker_order_id)
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert (final.status, final.filled_qty) == (S.CANCELED, D(30))
    assert events.kinds("c2") == [K.ACCEPTED, K.PARTIAL_FILL, K.PENDING_CANCEL, K.CANCELED]


def test_fill_while_the_cancel_is_in_flight_wins() -> None:
    """The cancel/fill race: cancel_order returns normally, the order ends FILLED."""
    broker = make()
    events = Events(broker)

    async def main() -> OrderSnapshot:
        pin(broker)
        snap = await broker.submit_order(order("c3", Side.BUY, 100, "100.00"))
        cancel = asyncio.create_task(broker.cancel_order(snap.broker_order_id))
        await asyncio.sleep(1.5 * LATENCY)  # the broker has it; the exchange not yet
        broker.inject_trade("AAA", 300, at="bid")
        await cancel
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.FILLED
    assert events.kinds("c3") == [K.ACCEPTED, K.PENDING_CANCEL, K.FILL, K.CANCEL_REJECTED]


def test_cancel_of_a_filled_order_is_refused() -> None:
    broker = make()

    async def main() -> None:
        pin(broker)
        snap = await broker.submit_order(order("c4", Side.BUY, 10))
        await settle()
        with pytest.raises(OrderNotCancelableError, match="filled"):
            await broker.cancel_order(snap.broker_order_id)

    run(main)


def test_hold_fills_until_cancel_makes_a_deterministic_race() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> OrderSnapshot:
        pin(broker)
        snap = await broker.submit_order(order("c5", Side.BUY, 100, "100.00"))
        broker.hold_fills("AAA", until_cancel=True)
        pin(broker, bid="99.96", ask="99.99")  # the market falls through us: fills are held
        await settle()
        assert (await broker.get_order(snap.broker_order_id)).filled_qty == D(0)
        await broker.cancel_order(snap.broker_order_id)
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.FILLED
    assert events.kinds("c5") == [K.ACCEPTED, K.PENDING_CANCEL, K.FILL, K.CANCEL_REJECTED]


def test_held_market_order_waits_for_release() -> None:
    broker = make()

    async def main() -> tuple[Decimal, Decimal]:
        pin(broker)
        broker.hold_fills("AAA")
        snap = await broker.submit_order(order("h1", Side.BUY, 50))
        await settle()
        before = (await broker.get_order(snap.broker_order_id)).filled_qty
        broker.release_fills("AAA")
        await settle()
        return before, (await broker.get_order(snap.broker_order_id)).filled_qty

    assert run(main) == (D(0), D(50))


# -- replace --------------------------------------------------------------------------------------------


def test_replace_creates_a_new_order_and_replaces_the_old_one() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> tuple[OrderSnapshot, OrderSnapshot, OrderSnapshot, Quote | None]:
        pin(broker)
        old = await broker.submit_order(order("r1", Side.BUY, 100, "99.90"))
        new = await broker.replace_order(old.broker_order_id, limit_price=D("100.01"),
                                         client_order_id=ClientOrderId("r1-b"))
        await settle()
        return (new, await broker.get_order(old.broker_order_id), await broker.get_order(new.broker_order_id),
                await broker.get_quote("AAA"))

    reply, old, new, quote = run(main)
    assert reply.status is S.PENDING_NEW
    assert reply.replaces == old.broker_order_id
    assert reply.broker_order_id != old.broker_order_id
    assert (old.status, old.replaced_by) == (S.REPLACED, new.broker_order_id)
    assert (new.status, new.qty, new.limit_price) == (S.ACCEPTED, D(100), D("100.01"))
    assert events.kinds("r1") == [K.ACCEPTED, K.PENDING_REPLACE, K.REPLACED]
    assert events.kinds("r1-b") == [K.ACCEPTED]
    assert quote is not None
    assert (quote.bid, quote.bid_size) == (D("100.01"), D(100))


def test_replace_of_a_partly_filled_order_defaults_to_what_is_left() -> None:
    broker = make()

    async def main() -> tuple[OrderSnapshot, OrderSnapshot, Decimal]:
        pin(broker)
        old = await broker.submit_order(order("r2", Side.BUY, 100, "100.00"))
        broker.inject_trade("AAA", 240, at="bid")  # 40 filled
        new = await broker.replace_order(old.broker_order_id, limit_price=D("99.99"))
        await settle()
        account = await broker.get_account()
        return await broker.get_order(old.broker_order_id), await broker.get_order(new.broker_order_id), \
            account.buying_power

    old, new, buying_power = run(main)
    assert (old.status, old.filled_qty) == (S.REPLACED, D(40))
    assert (new.qty, new.filled_qty, new.status) == (D(60), D(0), S.ACCEPTED)
    assert buying_power == D(100_000) - D(40) * D("100.00") - D(60) * D("99.99")


def test_replace_of_a_filled_order_is_refused() -> None:
    broker = make()

    async def main() -> None:
        pin(broker)
        snap = await broker.submit_order(order("r3", Side.BUY, 10))
        await settle()
        with pytest.raises(OrderNotCancelableError):
            await broker.replace_order(snap.broker_order_id, qty=D(5))

    run(main)


def test_replace_loses_the_race_against_a_fill() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> tuple[OrderSnapshot, OrderSnapshot]:
        pin(broker)
        old = await broker.submit_order(order("r4", Side.BUY, 100, "100.00"))
        replace = asyncio.create_task(broker.replace_order(old.broker_order_id, limit_price=D("99.95")))
        await asyncio.sleep(1.5 * LATENCY)
        broker.inject_trade("AAA", 300, at="bid")
        new = await replace
        await settle()
        return await broker.get_order(old.broker_order_id), await broker.get_order(new.broker_order_id)

    old, new = run(main)
    assert old.status is S.FILLED
    assert new.status is S.REJECTED
    assert events.kinds("r4") == [K.ACCEPTED, K.PENDING_REPLACE, K.FILL, K.REPLACE_REJECTED]


def test_replace_qty_needs_buying_power() -> None:
    broker = make(cash=D(20_000))

    async def main() -> None:
        pin(broker)
        old = await broker.submit_order(order("r5", Side.BUY, 100, "99.00"))
        with pytest.raises(InsufficientBuyingPowerError):
            await broker.replace_order(old.broker_order_id, qty=D(300))
        await broker.replace_order(old.broker_order_id, qty=D(200))

    run(main)


# -- determinism and common random numbers -----------------------------------------------------------


def _scenario(seed: int, trade: bool, subscribe: bool = False) -> tuple[list[Quote], list[str]]:
    broker = SimBroker(seed=seed, cash=D(10_000_000))
    events = Events(broker)

    async def main() -> list[Quote]:
        quotes: list[Quote] = []
        await broker.start()
        if subscribe:
            await broker.subscribe_quotes(["AAA", "BBB", "CCC"], lambda q: None)
        if trade:
            await broker.submit_order(order("big", Side.BUY, 3000))
            quote = await broker.get_quote("CCC")
            assert quote is not None
            await broker.submit_order(order("rest", Side.BUY, 500, str(quote.bid), "CCC"))
        loop = asyncio.get_running_loop()
        start = 0.0  # the loop's start, when the broker was first used in both runs
        for i in range(1, 13):
            await asyncio.sleep(start + 5 * i - loop.time())
            for symbol in ("BBB", "CCC"):
                quote = await broker.get_quote(symbol)
                assert quote is not None
                quotes.append(quote)
        await asyncio.sleep(start + 400 - loop.time())
        late = await broker.get_quote("AAA")
        assert late is not None
        quotes.append(late)
        return quotes

    quotes = run(main)
    return quotes, [f"{e.kind.value} {e.order.symbol} {e.fill_qty} {e.fill_price} {e.timestamp}"
                    for _, e in events.items]


def test_same_seed_gives_the_same_market_and_the_same_fills() -> None:
    first = _scenario(9, trade=True)
    assert _scenario(9, trade=True) == first
    assert _scenario(10, trade=True)[0] != first[0]


def test_the_path_does_not_depend_on_our_orders() -> None:
    traded, events = _scenario(9, trade=True)
    untouched, no_events = _scenario(9, trade=False)
    assert no_events == []
    assert any("fill AAA" in e for e in events)
    # BBB is never traded; CCC and AAA are, but the exogenous market is the same and our
    # impact has worn off by the last look at AAA, five minutes later.
    bbb = [q for q in traded if q.symbol == "BBB"]
    assert bbb == [q for q in untouched if q.symbol == "BBB"]
    assert traded[-1] == untouched[-1]
    ccc_traded = [(q.bid, q.ask) for q in traded if q.symbol == "CCC"]
    ccc_untouched = [(q.bid, q.ask) for q in untouched if q.symbol == "CCC"]
    assert ccc_traded != ccc_untouched or any("CCC" in e for e in events)


def test_streaming_quotes_does_not_change_the_fills() -> None:
    """A symbol is simulated event by event when streamed, lazily otherwise: same result."""
    quiet = _scenario(4, trade=True)
    streamed = _scenario(4, trade=True, subscribe=True)
    assert streamed[1] == quiet[1]
    assert [(q.bid, q.ask) for q in streamed[0]] == [(q.bid, q.ask) for q in quiet[0]]


# -- quotes and their test hooks --------------------------------------------------------------------


def test_quote_stream_delivers_changes_until_unsubscribed() -> None:
    broker = make()

    async def main() -> tuple[list[Quote], int]:
        got: list[Quote] = []
        await broker.subscribe_quotes(["AAA", "UNKNOWN SYMBOL"], got.append)
        await asyncio.sleep(30)
        await broker.unsubscribe_quotes(["AAA"], got.append)
        count = len(got)
        await asyncio.sleep(30)
        return got, count

    got, count = run(main)
    assert len(got) == count
    assert 15 <= count <= 60
    assert all(q.symbol == "AAA" and q.bid < q.ask for q in got)
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(got))
    assert all((a.bid, a.ask, a.bid_size, a.ask_size) != (b.bid, b.ask, b.bid_size, b.ask_size)
               for a, b in itertools.pairwise(got))


def test_quote_stream_failure_hook() -> None:
    broker = make()
    broker.fail_quote_stream()

    async def main() -> None:
        with pytest.raises(QuoteStreamError):
            await broker.subscribe_quotes(["AAA"], lambda q: None)

    run(main)


def test_silent_quote_stream_hook() -> None:
    broker = make()

    async def main() -> int:
        got: list[Quote] = []
        await broker.subscribe_quotes(["AAA"], got.append)
        await settle()
        broker.silence_quote_stream()
        before = len(got)
        await asyncio.sleep(20)
        return len(got) - before

    assert run(main) == 0


def test_stale_zero_sided_and_crossed_quotes() -> None:
    broker = make()

    async def main() -> list[str | None]:
        problems = []
        broker.set_quote_stale("AAA")
        await asyncio.sleep(30)
        stale = await broker.get_quote("AAA")
        assert stale is not None
        problems.append(stale.problem(broker.clock.now(), 10.0, D(100)))
        broker.set_quote_stale("AAA", False)
        fresh = await broker.get_quote("AAA")
        assert fresh is not None
        problems.append(fresh.problem(broker.clock.now(), 10.0, D(100)))
        broker.force_quote("AAA", D(0), D("100.03"))
        zero = await broker.get_quote("AAA")
        assert zero is not None
        problems.append(zero.problem(broker.clock.now(), 10.0, D(100)))
        broker.force_quote("AAA", D("100.05"), D("100.03"))
        crossed = await broker.get_quote("AAA")
        assert crossed is not None
        problems.append(crossed.problem(broker.clock.now(), 10.0, D(100)))
        broker.release_quote("AAA")
        back = await broker.get_quote("AAA")
        assert back is not None
        problems.append(back.problem(broker.clock.now(), 10.0, D(100)))
        return problems

    stale, fresh, zero, crossed, back = run(main)
    assert stale is not None
    assert stale.startswith("stale")
    assert fresh is None
    assert zero is not None
    assert zero.startswith("zero-sided")
    assert crossed is not None
    assert crossed.startswith("crossed")
    assert back is None


def test_market_buy_without_an_ask_is_rejected_by_event() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> OrderSnapshot:
        broker.force_quote("AAA", D("100.00"), D(0))
        snap = await broker.submit_order(order("z1", Side.BUY, 10))
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.REJECTED
    assert events.kinds("z1") == [K.ACCEPTED, K.REJECTED]


def test_silent_order_stream_hook_leaves_rest_truthful() -> None:
    broker = make()
    events = Events(broker)

    async def main() -> OrderSnapshot:
        broker.silence_order_stream()
        pin(broker)
        snap = await broker.submit_order(order("s1", Side.BUY, 10))
        await settle()
        return await broker.get_order(snap.broker_order_id)

    assert run(main).status is S.FILLED
    assert events.items == []


# -- request budget and failures ---------------------------------------------------------------------


def test_request_budget_per_rolling_minute() -> None:
    broker = make(request_budget=5)

    async def main() -> float:
        for _ in range(5):
            await broker.get_account()
        with pytest.raises(RateLimitedError) as caught:
            await broker.get_positions()
        retry_after = caught.value.retry_after
        assert retry_after is not None
        await asyncio.sleep(retry_after)
        await broker.get_positions()
        await broker.get_quote("AAA")  # market data has its own budget
        return retry_after

    retry_after = run(main)
    assert retry_after == pytest.approx(60 - 5 * 2 * LATENCY, abs=0.01)
    assert broker.requests_made == 6
    assert broker.quote_requests_made == 1


def test_fail_next_hook_before_and_after_the_effect() -> None:
    broker = make()

    async def main() -> tuple[OrderSnapshot | None, OrderSnapshot | None]:
        pin(broker)
        broker.fail_next("submit_order", BrokerUnavailableError("503"))
        with pytest.raises(BrokerUnavailableError):
            await broker.submit_order(order("f1", Side.BUY, 1, "99.00"))
        broker.fail_next("submit_order", UnknownOrderOutcomeError("timeout"), applied=True)
        with pytest.raises(UnknownOrderOutcomeError):
            await broker.submit_order(order("f2", Side.BUY, 1, "99.00"))
        return (await broker.get_order_by_client_id(ClientOrderId("f1")),
                await broker.get_order_by_client_id(ClientOrderId("f2")))

    lost, placed = run(main)
    assert lost is None
    assert placed is not None
    assert placed.status is S.ACCEPTED
    with pytest.raises(ValueError, match="unknown method"):
        broker.fail_next("nope", BrokerUnavailableError("x"))


# -- the trading day --------------------------------------------------------------------------------


def test_day_orders_expire_at_the_close() -> None:
    broker = make(start=datetime(2026, 1, 5, 15, 58, tzinfo=NY))
    events = Events(broker)

    async def main() -> OrderSnapshot:
        snap = await broker.submit_order(order("d1", Side.BUY, 10, "90.00"))
        await asyncio.sleep(180)
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.EXPIRED
    assert events.kinds("d1") == [K.ACCEPTED, K.EXPIRED]
    close = datetime(2026, 1, 5, 16, 0, tzinfo=NY)
    assert abs((final.updated_at - close).total_seconds()) < 0.001


def test_list_open_orders_and_lookup_by_client_id() -> None:
    broker = make(positions={"BBB": D(5)})

    async def main() -> tuple[list[OrderSnapshot], list[OrderSnapshot], OrderSnapshot | None]:
        await broker.submit_order(order("o1", Side.BUY, 1, "90.00"))
        await broker.submit_order(order("o2", Side.SELL, 5, "80.00", symbol="BBB"))
        return (await broker.list_open_orders(), await broker.list_open_orders(["BBB"]),
                await broker.get_order_by_client_id(ClientOrderId("o1")))

    every, bbb, found = run(main)
    assert [o.client_order_id for o in every] == ["o1", "o2"]
    assert [o.client_order_id for o in bbb] == ["o2"]
    assert found is not None
    assert found.symbol == "AAA"


def test_broker_quotes_are_the_exogenous_path_when_we_do_not_trade() -> None:
    broker = SimBroker(seed=4)

    async def main() -> list[tuple[Quote, float]]:
        loop = asyncio.get_running_loop()
        await broker.start()
        seen = []
        for at in (0.0, 1.3, 60.0, 601.7):
            await asyncio.sleep(at - loop.time())
            quote = await broker.get_quote("IBM")
            assert quote is not None
            seen.append((quote, at + LATENCY))  # the request reaches the exchange one latency later
        return seen

    path = broker.path("IBM")
    tick = broker.profile("IBM").tick
    for quote, at in run(main):
        top = path.quote(int(at // 0.5))
        assert (quote.bid, quote.ask) == (top.bid * tick, top.ask * tick)
        assert (quote.bid_size, quote.ask_size) == (D(top.bid_size), D(top.ask_size))


# -- the calendar: market clock, closed market, early closes ----------------------------------------


def test_get_market_clock_is_a_request_and_follows_virtual_time() -> None:
    broker = make(start=datetime(2026, 3, 6, 15, 0, tzinfo=NY))  # a Friday

    async def main() -> list[tuple[bool, datetime, datetime]]:
        seen = []
        for wait in (0, 3600):
            await asyncio.sleep(wait)
            clock = await broker.get_market_clock()
            assert abs((clock.timestamp - broker.clock.now()).total_seconds()) <= 2 * LATENCY
            seen.append((clock.is_open, clock.next_open, clock.next_close))
        return seen

    assert run(main) == [
        (True, datetime(2026, 3, 9, 9, 30, tzinfo=NY), datetime(2026, 3, 6, 16, 0, tzinfo=NY)),
        (False, datetime(2026, 3, 9, 9, 30, tzinfo=NY), datetime(2026, 3, 9, 16, 0, tzinfo=NY)),
    ]
    assert broker.requests_made == 2


def test_get_market_clock_respects_the_request_budget() -> None:
    broker = make(request_budget=1)

    async def main() -> None:
        await broker.get_market_clock()
        with pytest.raises(RateLimitedError):
            await broker.get_market_clock()

    run(main)


@pytest.mark.parametrize(
    ("market_date", "start"),
    [
        (date(2026, 3, 7), datetime(2026, 3, 9, 10, 0, tzinfo=NY)),  # a Saturday
        (date(2026, 3, 8), datetime(2026, 3, 9, 10, 0, tzinfo=NY)),  # a Sunday
        (date(2026, 4, 3), datetime(2026, 4, 6, 10, 0, tzinfo=NY)),  # Good Friday
        (date(2026, 11, 26), datetime(2026, 11, 27, 10, 0, tzinfo=NY)),  # Thanksgiving
    ],
)
def test_a_closed_market_date_starts_on_the_next_trading_day(market_date: date, start: datetime) -> None:
    broker = make(market_date=market_date)
    assert broker.start_time == start


def test_a_start_after_hours_moves_to_ten_on_the_next_trading_day() -> None:
    monday_ten = datetime(2026, 3, 9, 10, tzinfo=NY)
    assert make(start=datetime(2026, 3, 6, 18, 0, tzinfo=NY)).start_time == monday_ten  # Friday evening
    assert make(start=datetime(2026, 3, 9, 6, 0, tzinfo=NY)).start_time == monday_ten
    inside = datetime(2026, 3, 9, 9, 31, tzinfo=NY)
    assert make(start=inside).start_time == inside


def test_the_default_session_is_open() -> None:
    broker = make()

    async def main() -> bool:
        return (await broker.get_market_clock()).is_open

    assert run(main)


def test_day_orders_expire_at_an_early_close_and_later_orders_are_refused() -> None:
    broker = make(start=datetime(2026, 11, 27, 12, 58, tzinfo=NY))  # the day after Thanksgiving
    events = Events(broker)

    async def after_close() -> None:
        snap = await broker.submit_order(order("d1", Side.BUY, 10, "90.00"))
        await asyncio.sleep(180)
        final = await broker.get_order(snap.broker_order_id)
        assert final.status is S.EXPIRED
        assert final.updated_at == datetime(2026, 11, 27, 13, 0, tzinfo=NY)

    message = reject(broker, order("d2", Side.BUY, 1, "90.00"), InvalidOrderError, after_close)
    assert "closed" in message
    assert "2026-11-30T09:30:00-05:00" in message
    assert events.kinds("d1") == [K.ACCEPTED, K.EXPIRED]


def test_orders_are_accepted_again_when_the_market_reopens() -> None:
    broker = make(start=datetime(2026, 3, 6, 15, 59, tzinfo=NY))  # Friday

    async def main() -> OrderStatus:
        await broker.start()  # the market starts when the broker is first used
        await asyncio.sleep(120)
        with pytest.raises(InvalidOrderError, match="closed"):
            await broker.submit_order(order("w1", Side.BUY, 1, "90.00"))
        await asyncio.sleep((datetime(2026, 3, 9, 9, 31, tzinfo=NY) - broker.clock.now()).total_seconds())
        snap = await broker.submit_order(order("w2", Side.BUY, 1, "90.00"))
        return snap.status

    assert run(main) is S.ACCEPTED


def test_gtc_orders_survive_the_close_and_do_not_fill_while_closed() -> None:
    broker = make(start=datetime(2026, 3, 6, 15, 59, tzinfo=NY))
    events = Events(broker)

    async def main() -> list[Decimal]:
        pin(broker)
        snap = await broker.submit_order(order("g1", Side.BUY, 100, "100.00", tif=TimeInForce.GTC))
        await broker.submit_order(order("d1", Side.BUY, 100, "100.00"))
        await asyncio.sleep(120)  # closed
        filled = [(await broker.get_order(snap.broker_order_id)).filled_qty]
        broker.inject_trade("AAA", 1000, at="bid")
        await settle()
        filled.append((await broker.get_order(snap.broker_order_id)).filled_qty)
        await asyncio.sleep((datetime(2026, 3, 9, 9, 31, tzinfo=NY) - broker.clock.now()).total_seconds())
        broker.inject_trade("AAA", 250, at="bid")  # 200 ahead of us, then 50 for us
        await settle()
        filled.append((await broker.get_order(snap.broker_order_id)).filled_qty)
        return filled

    assert run(main) == [D(0), D(0), D(50)]
    assert events.kinds("d1") == [K.ACCEPTED, K.EXPIRED]


# -- closing dust ------------------------------------------------------------------------------------


def test_a_sell_of_the_whole_position_below_one_dollar_is_accepted() -> None:
    broker = make(positions={"AAA": D("0.004")})
    events = Events(broker)

    async def main() -> OrderSnapshot:
        pin(broker)
        snap = await broker.submit_order(order("dust", Side.SELL, "0.004"))
        await settle()
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is S.FILLED
    assert events.fills("dust") == [(D("0.004"), D("100.00"))]


def test_a_limit_sell_of_the_whole_position_below_one_dollar_is_accepted() -> None:
    broker = make(positions={"AAA": D("0.0049")})

    async def main() -> OrderSnapshot:
        pin(broker)
        return await broker.submit_order(order("dust", Side.SELL, "0.0049", "100.05"))

    assert run(main).status is S.ACCEPTED


def test_other_fractional_orders_below_one_dollar_are_still_refused() -> None:
    broker = make(positions={"AAA": D("0.004")})
    # Part of the position, more than it, and a buy of the same size.
    assert "$1" in reject(broker, order("p", Side.SELL, "0.003"), InvalidOrderError, _pin_async(broker))
    assert "$1" in reject(broker, order("b", Side.BUY, "0.004"), InvalidOrderError)
    message = reject(broker, order("m", Side.SELL, "0.005"), InvalidOrderError)
    assert "0.005" in message


def test_dust_counts_against_what_is_available_not_the_whole_position() -> None:
    broker = make(positions={"AAA": D("1.004")})

    async def first() -> None:
        pin(broker)
        await broker.submit_order(order("s1", Side.SELL, 1, "150.00"))  # holds 1 share

    async def main() -> OrderSnapshot:
        await first()
        return await broker.submit_order(order("s2", Side.SELL, "0.004", "150.00"))

    # The rest after the open sell is exactly 0.004: it closes the position.
    assert run(main).status is S.ACCEPTED
    broker = make(positions={"AAA": D("1.004")})
    # Without the open sell, 0.004 is only part of the position.
    assert "$1" in reject(broker, order("s3", Side.SELL, "0.004", "150.00"), InvalidOrderError)


def _pin_async(broker: SimBroker) -> Callable[[], Awaitable[None]]:
    async def pin_now() -> None:
        pin(broker)

    return pin_now

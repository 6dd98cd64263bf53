"""The broker contract: the same scenarios against SimBroker and against AlpacaBroker over the sandbox."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tests.contract.venues import Venue, run_on
from trimtab.domain.errors import (
    DuplicateClientOrderIdError,
    InsufficientBuyingPowerError,
    InsufficientQuantityError,
    InvalidOrderError,
    OrderNotCancelableError,
    OrderNotFoundError,
)
from trimtab.domain.money import ZERO
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEventKind,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
)

VENUES = ["sim", "alpaca"]
D = Decimal


def cid(name: str) -> ClientOrderId:
    return ClientOrderId(f"ct-{name}-{uuid.uuid4().hex[:8]}")


def market(symbol: str, side: Side, qty: str, name: str = "m") -> OrderRequest:
    return OrderRequest(cid(name), symbol, side, D(qty), OrderType.MARKET)


def limit(symbol: str, side: Side, qty: str, price: str, name: str = "l") -> OrderRequest:
    return OrderRequest(cid(name), symbol, side, D(qty), OrderType.LIMIT, limit_price=D(price))


def freeze(venue: Venue, symbol: str, bid: str, ask: str, size: int = 200) -> None:
    venue.hook(lambda sim: sim.force_quote(symbol, D(bid), D(ask), D(size), D(size)))


@pytest.mark.parametrize("venue_name", VENUES)
def test_submit_fills_and_reports(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        before = await broker.get_account()
        request = market("IBM", Side.BUY, "10", "submit")
        snap = await broker.submit_order(request)
        assert snap.client_order_id == request.client_order_id
        assert snap.symbol == "IBM"
        assert snap.side is Side.BUY
        assert snap.qty == D(10)
        fill = await venue.until_final(snap.broker_order_id)
        assert fill.order.status is OrderStatus.FILLED
        kinds = venue.kinds_of(snap.broker_order_id)
        assert kinds[0] is OrderEventKind.ACCEPTED
        fills = [e for e in venue.events_of(snap.broker_order_id) if e.fill_qty is not None]
        assert sum((e.fill_qty or ZERO for e in fills), ZERO) == D(10)
        found = await broker.get_order_by_client_id(request.client_order_id)
        assert found is not None
        assert found.broker_order_id == snap.broker_order_id
        assert found.status is OrderStatus.FILLED
        assert found.filled_avg_price is not None
        positions = await broker.get_positions()
        assert positions["IBM"].qty == D(10)
        after = await broker.get_account()
        spent = before.cash - after.cash
        assert abs(spent - D(10) * found.filled_avg_price) <= D("0.05")

    run_on(venue_name, {"cash": "100000"}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_partial_fill_then_cancel(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        freeze(venue, "IBM", "100.00", "100.02", size=200)
        snap = await broker.submit_order(limit("IBM", Side.BUY, "300", "100.00", "partial"))
        await venue.until_event(snap.broker_order_id, OrderEventKind.ACCEPTED)
        # 200 shares rest ahead of us at the bid: a 300-share sell fills 100 of ours.
        venue.hook(lambda sim: sim.inject_trade("IBM", 300, at="bid"))
        partial = await venue.until_event(snap.broker_order_id, OrderEventKind.PARTIAL_FILL)
        assert partial.fill_qty == D(100)
        assert partial.fill_price == D("100.00")
        assert partial.order.status is OrderStatus.PARTIALLY_FILLED
        assert partial.order.filled_qty == D(100)
        await broker.cancel_order(snap.broker_order_id)
        final = await venue.until_final(snap.broker_order_id)
        assert final.order.status is OrderStatus.CANCELED
        assert final.order.filled_qty == D(100)
        read = await broker.get_order(snap.broker_order_id)
        assert read.status is OrderStatus.CANCELED
        assert read.filled_qty == D(100)
        assert (await broker.get_positions())["IBM"].qty == D(100)

    run_on(venue_name, {"cash": "100000"}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_replace_limit_price(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        freeze(venue, "IBM", "100.00", "100.02")
        old = await broker.submit_order(limit("IBM", Side.BUY, "10", "99.00", "replace"))
        await venue.until_event(old.broker_order_id, OrderEventKind.ACCEPTED)
        new = await broker.replace_order(old.broker_order_id, limit_price=D("99.50"))
        assert new.broker_order_id != old.broker_order_id
        assert new.limit_price == D("99.50")
        assert new.replaces == old.broker_order_id
        replaced = await venue.until_event(old.broker_order_id, OrderEventKind.REPLACED)
        assert replaced.order.status is OrderStatus.REPLACED
        await venue.until_event(new.broker_order_id, OrderEventKind.ACCEPTED)
        old_read = await broker.get_order(old.broker_order_id)
        assert old_read.status is OrderStatus.REPLACED
        assert old_read.replaced_by == new.broker_order_id
        open_orders = await broker.list_open_orders(["IBM"])
        assert [o.broker_order_id for o in open_orders] == [new.broker_order_id]
        await broker.cancel_order(new.broker_order_id)
        assert (await venue.until_final(new.broker_order_id)).order.status is OrderStatus.CANCELED

    run_on(venue_name, {"cash": "100000"}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_cancel_resting_order(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        freeze(venue, "IBM", "100.00", "100.02")
        snap = await broker.submit_order(limit("IBM", Side.BUY, "5", "98.00", "cancel"))
        await venue.until_event(snap.broker_order_id, OrderEventKind.ACCEPTED)
        assert [o.broker_order_id for o in await broker.list_open_orders()] == [snap.broker_order_id]
        account = await broker.get_account()
        assert account.buying_power < account.cash  # the open buy reserves cash
        await broker.cancel_order(snap.broker_order_id)
        final = await venue.until_final(snap.broker_order_id)
        assert final.kind is OrderEventKind.CANCELED
        assert final.order.filled_qty == ZERO
        with pytest.raises(OrderNotCancelableError):
            await broker.cancel_order(snap.broker_order_id)
        assert await broker.list_open_orders() == []
        account = await broker.get_account()
        assert account.buying_power == account.cash

    run_on(venue_name, {"cash": "100000"}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_cancel_loses_race_to_fill(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        freeze(venue, "IBM", "100.00", "100.02", size=500)
        venue.hook(lambda sim: sim.hold_fills("IBM", until_cancel=True))
        snap = await broker.submit_order(limit("IBM", Side.BUY, "50", "100.02", "race"))
        await venue.until_event(snap.broker_order_id, OrderEventKind.ACCEPTED)
        await broker.cancel_order(snap.broker_order_id)
        final = await venue.until_final(snap.broker_order_id)
        assert final.order.status is OrderStatus.FILLED
        assert final.order.filled_qty == D(50)
        await venue.until_event(snap.broker_order_id, OrderEventKind.CANCEL_REJECTED)
        assert (await broker.get_order(snap.broker_order_id)).status is OrderStatus.FILLED
        assert (await broker.get_positions())["IBM"].qty == D(50)

    run_on(venue_name, {"cash": "100000"}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_liquidation_uses_exact_quantity(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        position = (await broker.get_positions())["SPY"]
        assert position.qty == D("7.2273576")
        assert position.qty_available == position.qty
        snap = await broker.submit_order(market("SPY", Side.SELL, str(position.qty_available), "close"))
        final = await venue.until_final(snap.broker_order_id)
        assert final.order.status is OrderStatus.FILLED
        assert final.order.filled_qty == D("7.2273576")
        assert "SPY" not in await broker.get_positions()

    run_on(venue_name, {"cash": "1000", "positions": {"SPY": "7.2273576"}}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_buying_power_after_sells(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        before = await broker.get_account()
        assert before.cash == D("1000.00")
        snap = await broker.submit_order(market("IBM", Side.SELL, "20", "sell"))
        final = await venue.until_final(snap.broker_order_id)
        assert final.order.status is OrderStatus.FILLED
        assert final.order.filled_avg_price is not None
        proceeds = D(20) * final.order.filled_avg_price
        after = await broker.get_account()
        assert abs(after.cash - (before.cash + proceeds)) <= D("0.05")
        assert after.buying_power == after.cash
        # The proceeds are spendable at once: a buy sized from them is accepted.
        buy = await broker.submit_order(market("IBM", Side.BUY, "15", "rebuy"))
        assert (await venue.until_final(buy.broker_order_id)).order.status is OrderStatus.FILLED

    run_on(venue_name, {"cash": "1000", "positions": {"IBM": "20"}}, scenario)


@pytest.mark.parametrize("venue_name", VENUES)
def test_rejections(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        broker = venue.broker
        with pytest.raises(InsufficientBuyingPowerError):
            await broker.submit_order(market("IBM", Side.BUY, "1000", "nobp"))
        with pytest.raises(InsufficientQuantityError):
            await broker.submit_order(market("IBM", Side.SELL, "30", "noqty"))
        with pytest.raises(InvalidOrderError):
            await broker.submit_order(market("BRK.A", Side.BUY, "0.5", "frac"))
        first = market("IBM", Side.SELL, "1", "dup")
        snap = await broker.submit_order(first)
        with pytest.raises(DuplicateClientOrderIdError):
            await broker.submit_order(first)
        await venue.until_final(snap.broker_order_id)
        unknown = BrokerOrderId(str(uuid.uuid4()))
        with pytest.raises(OrderNotFoundError):
            await broker.get_order(unknown)
        with pytest.raises(OrderNotFoundError):
            await broker.cancel_order(unknown)
        assert await broker.get_order_by_client_id(cid("nothing")) is None
        assert await broker.get_asset("ZZ!!") is None

    run_on(
        venue_name,
        {"cash": "1000", "positions": {"IBM": "20"}, "assets": {"BRK.A": {"fractionable": False}}},
        scenario,
    )


@pytest.mark.parametrize("venue_name", VENUES)
def test_market_clock(venue_name: str) -> None:
    async def scenario(venue: Venue) -> None:
        clock = await venue.broker.get_market_clock()
        assert clock.is_open
        assert clock.next_close > clock.timestamp
        assert clock.next_open > clock.timestamp

    run_on(venue_name, {"cash": "1000"}, scenario)

"""Property tests: whatever the clients and the market do, the simulated books balance.

Random sequences of orders, trades, quote moves, cancels, replaces and waits; after each
step the account must agree with the fills reported by the event stream, reservations must
equal what open orders need, and no position may go short.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab.adapters.sim import SimBroker, SymbolProfile, run_virtual
from trimtab.domain.errors import RateLimitedError, RejectedError
from trimtab.domain.money import ZERO, money
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)

D = Decimal
TICK = D("0.01")

submit = st.tuples(
    st.just("submit"),
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(1, 400),
    st.one_of(st.none(), st.integers(-4, 4)),
    st.sampled_from([TimeInForce.DAY, TimeInForce.DAY, TimeInForce.IOC]),
)
trade = st.tuples(st.just("trade"), st.sampled_from(["bid", "ask", "inside"]), st.integers(1, 600))
move = st.tuples(st.just("move"), st.integers(-3, 3), st.integers(1, 4))
cancel = st.tuples(st.just("cancel"), st.integers(0, 50))
replace = st.tuples(st.just("replace"), st.integers(0, 50), st.integers(-3, 3), st.booleans())
wait = st.tuples(st.just("wait"), st.sampled_from([0.0, 0.01, 0.02, 0.03, 0.05, 1.0, 7.0]))
hold = st.tuples(st.just("hold"), st.booleans())
free = st.tuples(st.just("free"))
steps = st.lists(
    st.one_of(submit, submit, trade, move, cancel, replace, wait, hold, free), min_size=1, max_size=40
)


def _check_books(broker: SimBroker) -> None:
    """Reservations equal what open orders need; open lists and the book agree."""
    orders = list(broker._orders.values())
    open_orders = [o for o in orders if o.status.is_open]
    assert broker._reserved_cash == sum((o.reserved for o in open_orders if o.is_buy), ZERO)
    assert broker._held.get("AAA", ZERO) == sum((o.reserved for o in open_orders if not o.is_buy), ZERO)
    assert all(o.reserved == ZERO for o in orders if o.status.is_terminal)
    for o in orders:
        assert ZERO <= o.filled_qty <= o.qty
    listed = [o for group in broker._open.values() for o in group]
    assert sorted(o.seq for o in listed) == sorted(o.seq for o in open_orders)
    book = broker._symbols["AAA"].book
    assert all(o.status.is_open for o in book.buys + book.sells)
    assert all(o.is_buy for o in book.buys)
    assert all(not o.is_buy for o in book.sells)


def _check_cash(
    broker: SimBroker, initial_cash: Decimal, initial_qty: Decimal, events: list[OrderEvent]
) -> None:
    """Cash and position follow the fills reported by the stream, one by one."""
    cash, qty = initial_cash, initial_qty
    for event in events:
        if event.fill_qty is None or event.fill_price is None:
            continue
        notional = money(event.fill_qty * event.fill_price)
        if event.order.side is Side.BUY:
            cash, qty = cash - notional, qty + event.fill_qty
        else:
            cash, qty = cash + notional, qty - event.fill_qty
    position = broker._positions.get("AAA")
    assert (position.qty if position else ZERO) == qty
    assert qty >= ZERO
    assert broker._cash == cash


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, fill_model=st.sampled_from(["queue", "touch"]))
def test_books_balance_whatever_happens(steps: list[tuple[object, ...]], fill_model: str) -> None:
    initial_cash, initial_qty = D(200_000), D(500)
    broker = SimBroker(
        seed=1,
        cash=initial_cash,
        positions={"AAA": initial_qty},
        profiles={"AAA": SymbolProfile(price=D("100.00"), touch_size=200, depth_size=200)},
        fill_model=fill_model,
        request_budget=10_000,
    )
    events: list[OrderEvent] = []
    broker.add_order_listener(events.append)
    ids: list[BrokerOrderId] = []

    async def main() -> None:
        bid = D("100.00")
        broker.force_quote("AAA", bid, bid + 3 * TICK, D(200), D(200))
        tasks: list[asyncio.Task[object]] = []
        for number, step in enumerate(steps):
            kind = step[0]
            if kind == "submit":
                _, side, qty, offset, tif = step
                assert isinstance(side, Side)
                assert isinstance(qty, int)
                assert isinstance(tif, TimeInForce)
                limit = None if offset is None else bid + (1 + int(str(offset))) * TICK
                request = OrderRequest(
                    client_order_id=ClientOrderId(f"c{number}"),
                    symbol="AAA",
                    side=side,
                    qty=D(qty),
                    order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
                    limit_price=limit,
                    time_in_force=tif if limit is not None else TimeInForce.DAY,
                )
                tasks.append(asyncio.ensure_future(_submit(broker, request, ids)))
            elif kind == "trade":
                broker.inject_trade("AAA", int(str(step[2])), at=str(step[1]))
            elif kind == "move":
                bid = max(D("90.00"), bid + int(str(step[1])) * TICK)
                broker.force_quote("AAA", bid, bid + int(str(step[2])) * TICK, D(200), D(200))
            elif kind == "cancel":
                tasks.append(asyncio.ensure_future(_cancel(broker, ids, int(str(step[1])))))
            elif kind == "replace":
                tasks.append(asyncio.ensure_future(
                    _replace(broker, ids, int(str(step[1])), bid + int(str(step[2])) * TICK, bool(step[3]))))
            elif kind == "wait":
                await asyncio.sleep(float(str(step[1])))
            elif kind == "free":
                broker.release_quote("AAA")  # back to the random path, random trades and all
            elif kind == "hold":
                if step[1]:
                    broker.hold_fills("AAA", until_cancel=True)
                else:
                    broker.release_fills("AAA")
            _check_books(broker)
        await asyncio.gather(*tasks)
        broker.release_fills("AAA")
        await asyncio.sleep(1.0)
        _check_books(broker)
        _check_cash(broker, initial_cash, initial_qty, events)

    run_virtual(main())


async def _submit(broker: SimBroker, request: OrderRequest, ids: list[BrokerOrderId]) -> object:
    try:
        snapshot = await broker.submit_order(request)
    except (RejectedError, RateLimitedError):
        return None
    ids.append(snapshot.broker_order_id)
    return snapshot


async def _cancel(broker: SimBroker, ids: list[BrokerOrderId], pick: int) -> object:
    await asyncio.sleep(0.05)  # let orders sent just before get their ids
    if not ids:
        return None
    order_id = ids[pick % len(ids)]
    try:
        await broker.cancel_order(order_id)
    except RejectedError:
        return None
    return order_id


async def _replace(
    broker: SimBroker, ids: list[BrokerOrderId], pick: int, limit: Decimal, keep_qty: bool
) -> object:
    await asyncio.sleep(0.05)
    if not ids:
        return None
    order_id = ids[pick % len(ids)]
    try:
        snapshot = await broker.replace_order(order_id, qty=None if keep_qty else D(50), limit_price=limit)
    except RejectedError:
        return None
    ids.append(snapshot.broker_order_id)
    return snapshot

"""The smart order algorithm on scripted markets of the simulated exchange."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simkit import D, EventLog, broker, buy, execute, plan, sell
from trimtab.adapters.sim import SimBroker
from trimtab.domain.orders import OrderEventKind
from trimtab.domain.results import ExecutionStatus
from trimtab.engine.config import ExecutionConfig

NORMAL = ExecutionConfig(algo="smart")


def frozen(symbol: str, bid: str, ask: str, size: int = 5000):  # type: ignore[no-untyped-def]
    async def setup(s: SimBroker) -> None:
        s.force_quote(symbol, D(bid), D(ask), D(size), D(size))

    return setup


def test_ladder_walks_toward_the_far_touch_then_escalates() -> None:
    sim = broker(positions={"AAA": "100"})
    result = execute(sim, plan("ladder", sell("AAA")), NORMAL, before=frozen("AAA", "100.00", "100.10"))
    order = result.orders[0]
    limits = [a.limit_price for a in order.attempts]
    # improve by a tick, then 0.25, 0.5, 0.75 of the spread toward the bid, then market
    assert limits == [D("100.09"), D("100.08"), D("100.05"), D("100.03"), None]
    assert [a.order_type for a in order.attempts] == ["limit"] * 4 + ["market"]
    assert [a.qty for a in order.attempts] == [D(100)] * 5
    assert order.filled_shares == D(100)
    assert order.avg_fill_price == D("100.00")
    gaps = [
        (b.time - a.time).total_seconds() for a, b in zip(order.attempts, order.attempts[1:], strict=False)
    ]
    assert all(29 <= g <= 32 for g in gaps), gaps  # fill_wait of the NORMAL ladder is 30 s


def test_urgencies_pick_their_ladder() -> None:
    sim = broker(positions={"AAA": "100", "BBB": "100"})
    result = execute(
        sim,
        plan("urgency", sell("AAA", urgency="HIGH"), sell("BBB"), default_urgency="LOW"),
        NORMAL,
        before=_both_frozen,
    )
    by = {o.symbol: o for o in result.orders}
    assert by["AAA"].urgency == "HIGH"
    assert by["BBB"].urgency == "LOW"
    assert by["AAA"].attempts[0].limit_price == D("100.00")  # marketable at once
    assert by["AAA"].attempts[0].filled_qty == D(100)
    assert by["BBB"].attempts[0].limit_price == D("50.10")  # passive at the near touch
    assert len(by["BBB"].attempts) == 6  # five rungs and the market order


async def _both_frozen(s: SimBroker) -> None:
    s.force_quote("AAA", D("100.00"), D("100.10"), D(5000), D(5000))
    s.force_quote("BBB", D("50.00"), D("50.10"), D(5000), D(5000))


def test_a_large_order_starts_one_rung_more_aggressive() -> None:
    sim = broker(positions={"AAA": "900"})
    result = execute(
        sim, plan("big", sell("AAA")), NORMAL, before=frozen("AAA", "100.00", "100.10", size=300)
    )
    assert result.orders[0].attempts[0].limit_price == D("100.08")  # the 0.25 rung


def test_escalation_and_every_rung_send_exactly_the_remainder() -> None:
    sim = broker(positions={"AAA": "100"})

    async def setup(s: SimBroker) -> None:
        s.force_quote("AAA", D("100.00"), D("100.10"), D(5000), D(5000))

        async def trades() -> None:
            await asyncio.sleep(5)
            s.inject_trade("AAA", 30, at="ask")  # buyers lift our offer: 30 fill on rung 1
            await asyncio.sleep(30)
            s.inject_trade("AAA", 25, at="ask")  # 25 more on rung 2

        asyncio.get_running_loop().create_task(trades())

    result = execute(sim, plan("remainder", sell("AAA")), NORMAL, before=setup)
    order = result.orders[0]
    assert [a.qty for a in order.attempts] == [D(100), D(70), D(45), D(45), D(45)]
    assert [a.filled_qty for a in order.attempts] == [D(30), D(25), D(0), D(0), D(45)]
    assert order.filled_shares == D(100)
    assert order.success


def test_a_fill_during_the_cancel_is_counted_and_only_the_rest_is_resent() -> None:
    sim = broker(positions={"AAA": "100"})
    log = EventLog(sim)

    async def setup(s: SimBroker) -> None:
        s.force_quote("AAA", D("100.00"), D("100.10"), D(5000), D(5000))

        async def race() -> None:
            await asyncio.sleep(1)
            s.hold_fills("AAA", until_cancel=True)
            # A buyer now bids 60 shares at our limit; the fill lands as our cancel arrives.
            s.force_quote("AAA", D("100.09"), D("100.12"), D(60), D(5000))

        asyncio.get_running_loop().create_task(race())

    result = execute(sim, plan("race", sell("AAA")), NORMAL, before=setup)
    order = result.orders[0]
    first, second = order.attempts[0], order.attempts[1]
    assert first.filled_qty > 0
    assert second.qty == D(100) - first.filled_qty
    assert order.filled_shares == D(100)
    fills = [e for e in log.of("AAA") if e.kind in (OrderEventKind.FILL, OrderEventKind.PARTIAL_FILL)]
    assert sum((e.fill_qty or D(0) for e in fills), D(0)) == D(100)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trades=st.lists(
        st.tuples(
            st.floats(min_value=0.5, max_value=40),
            st.integers(min_value=1, max_value=400),
            st.sampled_from(["bid", "ask", "inside"]),
        ),
        max_size=12,
    ),
    qty=st.integers(min_value=1, max_value=600),
    side=st.sampled_from(["buy", "sell"]),
)
def test_filled_never_exceeds_requested(trades: list[tuple[float, int, str]], qty: int, side: str) -> None:
    sim = broker(cash="1000000", positions={"AAA": str(qty)})

    async def setup(s: SimBroker) -> None:
        s.force_quote("AAA", D("40.00"), D("40.04"), D(200), D(200))

        async def play() -> None:
            for delay, size, at in trades:
                await asyncio.sleep(delay)
                s.inject_trade("AAA", size, at=at)

        asyncio.get_running_loop().create_task(play())

    item = sell("AAA") if side == "sell" else buy("AAA", str(qty * 40))
    result = execute(sim, plan(f"prop-{side}", item), NORMAL, before=setup)
    order = result.orders[0]
    assert order.filled_shares <= order.shares
    assert order.filled_shares == sum((a.filled_qty for a in order.attempts), D(0))
    for attempt, next_attempt in zip(order.attempts, order.attempts[1:], strict=False):
        assert next_attempt.qty == attempt.qty - attempt.filled_qty
    assert order.success


def _bad_quote_result(setup_name: str) -> tuple[object, int]:
    sim = broker(cash="10000")

    async def setup(s: SimBroker) -> None:
        if setup_name == "crossed":
            s.force_quote("CCC", D("20.05"), D("20.00"))
        elif setup_name == "zero":
            s.force_quote("CCC", D("0"), D("20.00"))
        else:
            await s.get_quote("CCC")
            s.set_quote_stale("CCC")
            await asyncio.sleep(60)

    before = 0
    result = execute(sim, plan(f"bad-{setup_name}", buy("CCC", "1000")), NORMAL, before=setup)
    return result, sim.quote_requests_made - before


def test_crossed_zero_sided_and_stale_quotes_are_refreshed_then_skipped() -> None:
    for name, word in (("crossed", "crossed"), ("zero", "zero-sided"), ("stale", "stale")):
        result, quote_requests = _bad_quote_result(name)
        order = result.orders[0]  # type: ignore[attr-defined]
        assert order.skipped, name
        assert word in order.skip_reason, (name, order.skip_reason)
        assert order.attempts == ()
        # the first look plus quote_refresh_attempts refreshes
        assert quote_requests >= 1 + NORMAL.quote_refresh_attempts, (name, quote_requests)


def test_bad_quote_can_fall_back_to_market_when_configured() -> None:
    sim = broker(positions={"AAA": "10"})
    config = ExecutionConfig(algo="smart", on_bad_quote="market")

    async def setup(s: SimBroker) -> None:
        s.force_quote("AAA", D("0"), D("20.00"))

    result = execute(sim, plan("fallback-q", sell("AAA")), config, before=setup)
    order = result.orders[0]
    assert not order.skipped
    assert order.order_type == "market"


def test_stream_start_failure_falls_back_to_market_orders() -> None:
    sim = broker(positions={"AAA": "10"}, cash="5000")
    sim.fail_quote_stream()
    result = execute(sim, plan("nostream", sell("AAA"), buy("CCC", "1000")), NORMAL)
    assert result.status is ExecutionStatus.SUCCESS
    assert len(result.warnings) == 1
    assert "quote stream" in result.warnings[0]
    for order in result.orders:
        assert order.order_type == "market"
        assert order.fallback_reason is not None
        assert "quote stream" in order.fallback_reason
        assert len(order.attempts) == 1


def test_a_buy_remainder_below_the_minimum_notional_is_dropped_with_a_note() -> None:
    sim = broker(cash="10000")

    async def setup(s: SimBroker) -> None:
        s.force_quote("CCC", D("100.00"), D("100.10"), D(5000), D(5000))

        async def trades() -> None:
            await asyncio.sleep(2)
            s.inject_trade("CCC", 9, at="bid")

        asyncio.get_running_loop().create_task(trades())

    # 903.206 dollars at the ask plus the 20 bp buffer is 9.005 shares; 9 fill on the
    # first rung and 0.005 shares (50 cents) are left: below the $1 minimum.
    result = execute(sim, plan("dust", buy("CCC", "903.206")), NORMAL, before=setup)
    order = result.orders[0]
    assert D(9) < order.shares < D("9.01")
    assert order.filled_shares == D(9)
    assert len(order.attempts) == 1
    assert order.success
    assert any("below the minimum notional" in note for note in order.notes)

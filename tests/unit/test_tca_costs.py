"""Cost metrics on hand-built executions: every number checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from trimtab.domain.orders import OrderType, Side
from trimtab.domain.plan import Action
from trimtab.domain.quotes import Quote
from trimtab.domain.results import (
    Attempt,
    ExecutionResult,
    ExecutionStats,
    ExecutionStatus,
    OrderResult,
    PhaseStats,
    QuoteView,
)
from trimtab.tca import (
    ExecAttempt,
    ExecFill,
    ExecOrder,
    ExecutionRecord,
    QuoteTape,
    analyze,
    order_costs,
    percentile,
    record_from_result,
)

D = Decimal
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def quote(bid: str, ask: str, seconds: float = 0.0, symbol: str = "IBM") -> Quote:
    return Quote(symbol, D(bid), D(ask), D(200), D(300), at(seconds))


def attempt(cid: str, seconds: float, order_type: OrderType, limit: str | None, qty: str,
            q: Quote | None, step: int = 0, ended: float | None = None) -> ExecAttempt:
    return ExecAttempt(
        client_order_id=cid, step=step, time=at(seconds), order_type=order_type,
        limit_price=D(limit) if limit is not None else None, qty=D(qty), quote=q, status="filled",
        filled_qty=D(0), avg_fill_price=None, ended_at=at(ended) if ended is not None else None,
    )


def order(side: Side, qty: str, attempts: list[ExecAttempt], fills: list[ExecFill], *,
          arrival: Quote, decision: Quote | None = None, ended: float = 30.0) -> ExecOrder:
    return ExecOrder(
        symbol=arrival.symbol, side=side, requested_qty=D(qty), arrival_mid=arrival.mid, arrival=arrival,
        decision=decision, attempts=tuple(attempts), fills=tuple(fills), started_at=attempts[0].time,
        ended_at=at(ended), status=None,
    )


def fill(cid: str, seconds: float, qty: str, price: str) -> ExecFill:
    return ExecFill(cid, at(seconds), D(qty), D(price))


ARRIVAL = quote("100.00", "100.04")  # mid 100.02, half spread 0.02


def test_quote_tape_prevailing_quotes() -> None:
    q1, q2, q3 = quote("1", "2", 0), quote("1.1", "2", 5), quote("1.2", "2", 10)
    tape = QuoteTape([q3, q1, q2, q2])
    assert len(tape) == 3
    assert tape.at(at(-1)) is None
    assert tape.at(at(5)) == q2
    assert tape.at(at(5), strict=True) == q1
    assert tape.at(at(7)) == q2
    assert tape.covers(at(10))
    assert not tape.covers(at(10.5))
    assert tape.between(at(6), at(10)) == [q2, q3]


def test_a_buy_at_the_far_touch_pays_half_the_spread() -> None:
    a = attempt("c0", 0, OrderType.MARKET, None, "100", ARRIVAL)
    costs = order_costs(order(Side.BUY, "100", [a], [fill("c0", 0.1, "100", "100.04")], arrival=ARRIVAL),
                        QuoteTape([ARRIVAL]))
    # (100.04 - 100.02) / 100.02 = 1.9996 bp
    assert costs.arrival_cost_bps == D("2.00")
    assert costs.arrival_cost == D("2.00")  # dollars: 100 shares x 2 cents
    assert costs.spread_capture == D("-1.0000")
    assert costs.fills[0].kind == "market"
    assert not costs.fills[0].passive
    assert costs.passive_share == D("0.0000")
    assert costs.fill_rate == D("1.0000")
    assert costs.time_to_fill == 0.1


def test_a_sell_resting_at_the_ask_captures_the_spread_and_counts_as_passive() -> None:
    a = attempt("c0", 0, OrderType.LIMIT, "100.04", "50", ARRIVAL)
    costs = order_costs(order(Side.SELL, "50", [a], [fill("c0", 12, "50", "100.04")], arrival=ARRIVAL),
                        QuoteTape([ARRIVAL]))
    assert costs.arrival_cost_bps == D("-2.00")  # a sell above the mid is a saving
    assert costs.spread_capture == D("1.0000")
    assert costs.fills[0].kind == "resting limit"
    assert costs.passive_share == D("1.0000")
    assert costs.time_to_fill == 12.0


def test_a_limit_through_the_far_touch_is_marketable_not_passive() -> None:
    a = attempt("c0", 0, OrderType.LIMIT, "100.05", "10", ARRIVAL)
    costs = order_costs(order(Side.BUY, "10", [a], [fill("c0", 0.1, "10", "100.04")], arrival=ARRIVAL),
                        QuoteTape([ARRIVAL]))
    assert costs.fills[0].kind == "marketable limit"
    assert costs.passive_share == D("0.0000")


def test_shortfall_splits_into_delay_execution_and_opportunity() -> None:
    decision = quote("99.98", "100.02", -20)  # mid 100.00 when the plan started
    end = quote("100.10", "100.14", 29)  # mid 100.12 when the order stopped
    a = attempt("c0", 0, OrderType.LIMIT, "100.01", "100", ARRIVAL, ended=30)
    fills = [fill("c0", 5, "60", "100.01")]
    tape = QuoteTape([decision, ARRIVAL, end])
    costs = order_costs(order(Side.BUY, "100", [a], fills, arrival=ARRIVAL, decision=decision), tape)
    # delay: 60 x (100.02 - 100.00) = 1.20; execution: 60 x (100.01 - 100.02) = -0.60;
    # opportunity: 40 unfilled x (100.12 - 100.00) = 4.80; target notional 100 x 100.00.
    assert costs.delay_cost == D("1.20")
    assert costs.arrival_cost == D("-0.60")
    assert costs.opportunity_cost == D("4.80")
    assert costs.shortfall == D("5.40")
    assert (costs.delay_bps, costs.execution_bps, costs.opportunity_bps, costs.shortfall_bps) == (
        D("1.20"), D("-0.60"), D("4.80"), D("5.40"))
    assert costs.fill_rate == D("0.6000")
    assert costs.time_to_fill is None  # never completed
    assert costs.end_mid == D("100.12")


def test_without_a_decision_price_the_shortfall_starts_at_arrival() -> None:
    a = attempt("c0", 0, OrderType.MARKET, None, "10", ARRIVAL)
    costs = order_costs(order(Side.SELL, "10", [a], [fill("c0", 0.1, "10", "100.00")], arrival=ARRIVAL),
                        QuoteTape([ARRIVAL]))
    assert costs.decision_mid is None
    assert costs.delay_bps is None
    assert costs.delay_cost is None
    assert costs.shortfall == costs.arrival_cost == D("0.20")


def test_markouts_only_where_the_tape_reaches() -> None:
    later = [quote("100.10", "100.14", 1.5), quote("100.20", "100.24", 11)]
    a = attempt("c0", 0, OrderType.MARKET, None, "100", ARRIVAL)
    costs = order_costs(order(Side.BUY, "100", [a], [fill("c0", 0.5, "100", "100.04")], arrival=ARRIVAL),
                        QuoteTape([ARRIVAL, *later]))
    marks = costs.fills[0].markouts_bps
    # 1 s after the fill (t=1.5) the mid is 100.12: +0.08 on 100.04 = +8.00 bp (moved our way)
    assert marks[1] == D("8.00")
    # 10 s after (t=10.5) the mid is still 100.12; the tape reaches t=11
    assert marks[10] == D("8.00")
    assert marks[60] is None
    assert costs.markouts_bps == {1: D("8.00"), 10: D("8.00"), 60: None}


def test_a_sell_marked_out_lower_is_favourable() -> None:
    after = [quote("99.90", "99.94", 1.2), quote("99.90", "99.95", 3)]
    a = attempt("c0", 0, OrderType.MARKET, None, "10", ARRIVAL)
    costs = order_costs(order(Side.SELL, "10", [a], [fill("c0", 0.5, "10", "100.00")], arrival=ARRIVAL),
                        QuoteTape([ARRIVAL, *after]))
    assert costs.fills[0].markouts_bps[1] == D("8.00")


def test_plan_totals_are_notional_weighted() -> None:
    small_q = quote("10.00", "10.02", symbol="SMALL")
    big = order(Side.BUY, "100", [attempt("b0", 0, OrderType.MARKET, None, "100", ARRIVAL)],
                [fill("b0", 1, "100", "100.04")], arrival=ARRIVAL)
    small = order(Side.SELL, "100", [attempt("s0", 0, OrderType.LIMIT, "10.02", "100", small_q)],
                  [fill("s0", 3, "100", "10.02")], arrival=small_q)
    record = ExecutionRecord(
        plan_id="p", correlation_id=None, status="SUCCESS", started_at=T0, finished_at=at(40),
        orders=(big, small), tapes={"IBM": QuoteTape([ARRIVAL]), "SMALL": QuoteTape([small_q])},
    )
    costs = analyze(record)
    # big: +2.00 $ on 10,002 $; small: -1.00 $ on 1,001 $ -> +1.00 $ on 11,003 $ = 0.91 bp
    assert costs.total.arrival_cost == D("1.00")
    assert costs.total.arrival_cost_bps == D("0.91")
    assert costs.buys.arrival_cost_bps == D("2.00")
    assert costs.sells.arrival_cost_bps == D("-9.99")
    assert costs.total.passive_share == D("0.0910")  # 1,002 $ resting sell of 11,006 $ filled
    assert costs.total.time_to_fill_p50 == 1.0
    assert costs.total.time_to_fill_p95 == 3.0
    assert costs.total.fill_rate == D("1.0000")
    assert costs.duration_seconds == 40.0
    payload = costs.to_json()
    assert payload["total"]["arrival_cost_bps"] == "0.91"
    assert payload["orders"][0]["fills"][0]["kind"] == "market"


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


def _result_with(attempts: tuple[Attempt, ...], arrival_mid: str, cost_bps: str) -> ExecutionResult:
    phase = PhaseStats(name="buy", orders=1, succeeded=1, failed=0, skipped=0, notional=D(0),
                       started_at=T0, finished_at=T0, timed_out=False)
    item = OrderResult(
        symbol="IBM", action=Action.BUY, side="buy", trade_amount=D("1000"), shares=D("10"),
        filled_shares=D("10"), avg_fill_price=D("100.03"), filled_notional=D("1000.30"),
        arrival_mid=D(arrival_mid), cost_bps=D(cost_bps), order_type="limit", client_order_id="c1",
        urgency=None, scale_factor=None, success=True, skipped=False, skip_reason=None, error_message=None,
        fallback_reason=None, notes=(), attempts=attempts,
    )
    hold = item.model_copy(update={"symbol": "GLD", "action": Action.HOLD, "side": None, "attempts": (),
                                   "skip_reason": "HOLD: nothing to trade"})
    return ExecutionResult(
        plan_id="p", correlation_id=None, status=ExecutionStatus.SUCCESS, success=True,
        already_executed=False,
        orders_placed=1, orders_succeeded=1, total_trade_value=D("1000.30"), started_at=T0,
        finished_at=at(30), message=None, warnings=(), orders=(item, hold),
        stats=ExecutionStats(sell=phase, buy=phase, settlement_seconds=0.0, buying_power_for_buys=None,
                             buy_scale_factor=None, requests=9),
    )


def test_costs_from_an_execution_result_agree_with_its_cost_bps() -> None:
    view = QuoteView(bid=D("100.00"), ask=D("100.04"), bid_size=D(1), ask_size=D(1), time=T0)
    attempts = (
        Attempt(step=0, time=T0, client_order_id="c0", broker_order_id="b0", order_type="limit",
                limit_price=D("100.01"), qty=D("10"), quote=view, filled_qty=D("4"),
                avg_fill_price=D("100.01"), status="canceled", ended_at=at(20)),
        Attempt(step=1, time=at(20), client_order_id="c1", broker_order_id="b1", order_type="market",
                limit_price=None, qty=D("6"), quote=view, filled_qty=D("6"), avg_fill_price=D("100.04333333"),
                status="filled", ended_at=at(20.1)),
    )
    result = _result_with(attempts, "100.02", "0.50")
    costs = analyze(record_from_result(result, [quote("100.10", "100.14", 90)]))
    (item,) = costs.orders
    # 4 at 100.01 and 6 at 100.04333333 against 100.02: +0.0999998 $ on 1,000.20 $ = 1.00 bp
    assert item.arrival_cost_bps == D("1.00")
    assert item.passive_share == D("0.3999")  # 400.04 $ resting of 1,000.30 $ filled
    assert [f.kind for f in item.fills] == ["resting limit", "market"]
    assert item.time_to_fill == 20.1
    # The first fill counts at t=20 (its attempt's end). The quote observed at t=90 shows the
    # tape reaches t=80, where the arrival quote still prevailed: (100.02 - 100.01) / 100.01.
    assert item.fills[0].markouts_bps[60] == D("1.00")
    assert item.fills[1].markouts_bps[60] == D("-2.33")  # (100.02 - 100.04333333) / 100.04333333
    assert costs.requests == 9
    assert [s.symbol for s in costs.skipped] == ["GLD"]


@given(
    st.lists(
        st.tuples(st.integers(1, 500), st.integers(-300, 300)),  # (qty, price offset in cents)
        min_size=0,
        max_size=6,
    ),
    st.integers(0, 400),
    st.integers(-200, 200),
    st.integers(-200, 200),
    st.sampled_from([Side.BUY, Side.SELL]),
)
def test_shortfall_is_the_sum_of_its_parts(
    fills: list[tuple[int, int]], extra: int, delay_cents: int, end_cents: int, side: Side
) -> None:
    decision = quote("99.98", "100.02", -5)
    arrival = Quote("IBM", D("100.00") + D(delay_cents) / 100, D("100.04") + D(delay_cents) / 100,
                    D(1), D(1), T0)
    end = Quote("IBM", D("100.00") + D(end_cents) / 100, D("100.04") + D(end_cents) / 100, D(1), D(1), at(50))
    execs = [fill("c0", 1 + i, str(q), str(D("100.02") + D(c) / 100)) for i, (q, c) in enumerate(fills)]
    requested = sum(q for q, _ in fills) + extra
    if requested == 0:
        return
    a = attempt("c0", 0, OrderType.LIMIT, "100.02", str(requested), arrival)
    the_order = order(side, str(requested), [a], execs, arrival=arrival, decision=decision, ended=60)
    costs = order_costs(the_order, QuoteTape([decision, arrival, end]))
    parts = (costs.delay_cost, costs.arrival_cost, costs.opportunity_cost)
    assert costs.shortfall is not None
    assert None not in parts
    assert costs.shortfall == sum((p for p in parts if p is not None), D(0))
    # Buying more expensively is a cost; selling at the same prices is the opposite.
    mirrored = order_costs(
        order(side.opposite, str(requested), [a], execs, arrival=arrival, decision=decision, ended=60),
        QuoteTape([decision, arrival, end]),
    )
    assert mirrored.shortfall == -costs.shortfall

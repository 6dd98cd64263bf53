"""Recording the market around a plan's orders: the ledger's quotes, the journal's throttle,
the quote service's lingering streams, and the markouts they make possible."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.pgkit import scratch_schema_url
from tests.simkit import FixedClock, broker, buy, plan, sell
from trimtab.adapters.ledger import SqlLedger, default_ledger_url, export_jsonl
from trimtab.adapters.ledger.sql import QUOTE_BATCH
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.orders import (
    BrokerOrderId,
    OrderEvent,
    OrderEventKind,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    make_client_order_id,
)
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor
from trimtab.engine.journal import Journal
from trimtab.engine.quotes import MARKOUT_LINGER, QuoteService
from trimtab.tca import analyze, load_execution

D = Decimal
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield default_ledger_url(tmp_path / "home")
        return
    with scratch_schema_url() as scoped:
        yield scoped


def _claim(ledger: SqlLedger, plan_id: str = "p") -> None:
    ledger.begin_plan(plan_id, "hash", "{}", None, "w1", now=T0, lease_ttl=timedelta(seconds=30))


def _quote(seconds: float, bid: str = "601.23", ask: str = "601.25", bid_size: str = "300",
           symbol: str = "SPY") -> Quote:
    return Quote(symbol, D(bid), D(ask), D(bid_size), D("1200.5"), T0 + timedelta(seconds=seconds))


def test_quotes_round_trip_exactly_and_wait_for_a_commit_point(url: str, tmp_path: Path) -> None:
    with SqlLedger(url) as ledger, SqlLedger(url, share_connections=False) as reader:
        _claim(ledger)
        quotes = [_quote(0.25), _quote(1.5, bid="601.24"), _quote(2, symbol="BND", bid="72.1", ask="72.11")]
        for quote in quotes:
            ledger.record_quote("p", quote)
        assert reader.quotes("p") == []  # batched, like order events
        ledger.flush()
        assert reader.quotes("p") == quotes
        assert ledger.quotes("unknown") == []
        summary = export_jsonl(ledger, tmp_path / "out.jsonl")
        assert summary.records["quote"] == 3


def test_a_full_batch_of_quotes_is_committed_without_a_flush(tmp_path: Path) -> None:
    url = default_ledger_url(tmp_path)
    with SqlLedger(url) as ledger, SqlLedger(url, share_connections=False) as reader:
        _claim(ledger)
        for index in range(QUOTE_BATCH):
            ledger.record_quote("p", _quote(index / 10))
        assert len(reader.quotes("p")) == QUOTE_BATCH


def test_quotes_of_an_unknown_plan_are_refused() -> None:
    with SqlLedger("sqlite://") as ledger, pytest.raises(LookupError):
        ledger.record_quote("nothing", _quote(0))


def test_the_journal_keeps_touch_changes_and_throttles_the_rest() -> None:
    with SqlLedger("sqlite://") as ledger:
        _claim(ledger)
        clock = FixedClock(T0)
        journal = Journal(ledger, "p", clock, clock, "w1", 30.0)
        assert journal.quote_observer is not None
        journal.quote(_quote(0.1))  # no order of SPY yet: not this plan's symbol
        request = OrderRequest(make_client_order_id("p", "SPY", 0), "SPY", Side.SELL, D(5), OrderType.LIMIT,
                               D("601.25"))
        asyncio.run(journal.intent(request, 0, _quote(0)))
        journal.quote(_quote(0.2))  # the intent's quote again, within a second: dropped
        journal.quote(_quote(0.4, bid_size="100"))  # sizes only, within a second: dropped
        journal.quote(_quote(0.5, bid="601.24"))  # the touch moved: kept
        journal.quote(_quote(0.6, bid="601.24", bid_size="900"))  # sizes only: dropped
        journal.quote(_quote(1.6, bid="601.24", bid_size="900"))  # sizes, a second later: kept
        journal.quote(_quote(1.0, bid="601.20"))  # older than the last kept: dropped
        journal.quote(_quote(2.0, symbol="BND", bid="72.1", ask="72.11"))  # not this plan's
        journal.quote(_quote(2.7, bid="601.24", bid_size="900"))  # unchanged a second on: kept (still held)
        kept = ledger.quotes("p")
        assert [(q.timestamp - T0).total_seconds() for q in kept] == [0.5, 1.6, 2.7]
        assert Journal(None, "p", clock, clock, "w1", 30.0).quote_observer is None


def _fill_event(request: OrderRequest, seconds: float) -> OrderEvent:
    snapshot = OrderSnapshot(
        broker_order_id=BrokerOrderId("b-1"), client_order_id=request.client_order_id, symbol=request.symbol,
        side=request.side, order_type=request.order_type, qty=request.qty, status=OrderStatus.FILLED,
        filled_qty=request.qty, filled_avg_price=request.limit_price, limit_price=request.limit_price,
        created_at=T0, updated_at=T0 + timedelta(seconds=seconds),
    )
    return OrderEvent(OrderEventKind.FILL, snapshot, T0 + timedelta(seconds=seconds), fill_qty=request.qty,
                      fill_price=request.limit_price)


def _filled_at_two_seconds(ledger: SqlLedger) -> Journal:
    """A journal whose SPY order, worked from 0 s (touch 601.24 at 1 s), filled at 2 s:
    markouts wanted at 3, 12 and 62 s."""
    _claim(ledger)
    clock = FixedClock(T0)
    journal = Journal(ledger, "p", clock, clock, "w1", 30.0)
    request = OrderRequest(make_client_order_id("p", "SPY", 0), "SPY", Side.SELL, D(5), OrderType.LIMIT,
                           D("601.25"))
    asyncio.run(journal.intent(request, 0, _quote(0)))
    journal.quote(_quote(1, bid="601.24"))  # worked: every touch change is kept
    journal.event(_fill_event(request, 2))
    return journal


def test_after_the_orders_only_the_markout_instants_are_recorded() -> None:
    with SqlLedger("sqlite://") as ledger:
        journal = _filled_at_two_seconds(ledger)
        for second, bid in [(2.5, "601.20"), (2.8, "601.21"), (3.5, "601.22"), (4, "601.23"),
                            (11, "601.19"), (13, "601.18"), (30, "601.17"), (70, "601.16"), (80, "601.15")]:
            journal.quote(_quote(second, bid=bid))
        kept = [((q.timestamp - T0).total_seconds(), str(q.bid)) for q in ledger.quotes("p")]
        # At each markout time, once a later quote showed the market got there: the quote
        # that prevailed then, as of that time. Nothing after the last one.
        assert kept == [(1.0, "601.24"), (3.0, "601.21"), (12.0, "601.19"), (62.0, "601.17")]


def test_markout_instants_passed_together_or_hit_exactly() -> None:
    with SqlLedger("sqlite://") as ledger:
        journal = _filled_at_two_seconds(ledger)
        journal.quote(_quote(3, bid="601.20"))  # exactly at the first: this quote is the one
        journal.quote(_quote(5, bid="601.19"))
        journal.quote(_quote(100, bid="601.10"))  # a quiet market: 12 and 62 passed at once
        kept = [((q.timestamp - T0).total_seconds(), str(q.bid)) for q in ledger.quotes("p")]
        assert kept == [(1.0, "601.24"), (3.0, "601.20"), (12.0, "601.19"), (62.0, "601.19")]
        record = load_execution(ledger, "p")
        assert record.recorded_quotes == 4


def test_a_released_stream_lingers_while_quotes_are_observed() -> None:
    sim = broker()
    config = ExecutionConfig()
    seen: list[Quote] = []

    async def main() -> tuple[list[float], list[float], list[float]]:
        await sim.start()
        service = QuoteService(sim, sim.clock, config)
        service.observe(seen.append)
        assert await service.acquire("IBM")
        await asyncio.sleep(5)
        await service.release("IBM")  # the stream stays for the markouts
        released = sim.clock.now()
        await asyncio.sleep(MARKOUT_LINGER / 2)
        assert await service.acquire("IBM")  # taken up again while lingering: no new subscription
        await service.release("IBM")
        await asyncio.sleep(MARKOUT_LINGER + 30)
        after_linger = [(q.timestamp - released).total_seconds() for q in seen]
        service.observe(None)
        assert await service.acquire("SPY")
        await service.release("SPY")  # no observer: closed at once
        spy_closed = sim.clock.now()
        await asyncio.sleep(30)
        spy_late = [(q.timestamp - spy_closed).total_seconds() for q in seen if q.symbol == "SPY"]
        service.observe(seen.append)
        assert await service.acquire("MSFT")
        await service.release("MSFT")
        await service.stop()  # shutdown closes lingering streams at once
        stopped = sim.clock.now()
        await asyncio.sleep(30)
        msft_late = [(q.timestamp - stopped).total_seconds() for q in seen if q.symbol == "MSFT"]
        await sim.close()
        return after_linger, spy_late, msft_late

    after_linger, spy_late, msft_late = run_virtual(main())
    ibm = [t for t in after_linger if t > 0]
    assert ibm
    assert max(ibm) > MARKOUT_LINGER * 1.2  # still streaming after the second release
    assert max(ibm) <= MARKOUT_LINGER * 1.5 + 1  # and closed one linger after it
    assert all(t <= 0 for t in spy_late)
    assert all(t <= 0 for t in msft_late)


def _run(sim_plan_id: str, ledger: SqlLedger, wait_after: float) -> ExecutionResult:
    sim = broker(cash="60000", positions={"IBM": "300"}, seed=5)
    the_plan = plan(sim_plan_id, sell("IBM"), buy("MSFT", "12000"))

    async def main() -> ExecutionResult:
        async with Executor(sim, ledger=ledger) as executor:
            result = await executor.execute_rebalance_plan(the_plan)
            await asyncio.sleep(wait_after)
            return result

    return run_virtual(main())


def test_a_run_records_the_market_and_its_report_has_markouts() -> None:
    with SqlLedger("sqlite://") as ledger:
        result = _run("rec-1", ledger, MARKOUT_LINGER)
        assert result.success
        recorded = ledger.quotes("rec-1")
        assert {q.symbol for q in recorded} == {"IBM", "MSFT"}
        costs = analyze(load_execution(ledger, "rec-1"))
    by_symbol = {o.symbol: o for o in result.orders}
    for order in costs.orders:
        engine = by_symbol[order.symbol].cost_bps
        assert engine is not None
        assert order.arrival_cost_bps is not None
        assert abs(order.arrival_cost_bps - engine) <= D("0.01")
        assert order.fill_rate == D("1.0000")
    assert costs.total.markout_coverage == {1: D(1), 10: D(1), 60: D(1)}
    assert all(v is not None for v in costs.total.markouts_bps.values())
    assert costs.requests == result.stats.requests
    assert costs.sells.decision_coverage == D(1)  # the sells priced at the plan's start


def test_without_quotes_after_the_fills_markouts_are_missing_not_invented() -> None:
    with SqlLedger("sqlite://") as ledger:
        _run("rec-2", ledger, 0)
        costs = analyze(load_execution(ledger, "rec-2"))
    last_fill = max((f for o in costs.orders for f in o.fills), key=lambda f: f.time)
    assert last_fill.markouts_bps[60] is None
    coverage = costs.total.markout_coverage[60]
    assert coverage is not None
    assert coverage < D(1)

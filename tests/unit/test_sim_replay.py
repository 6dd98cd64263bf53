"""Replay: loading recorded quotes and trades (LEAN zips, second bars, CSV) and the simulated
exchange driven by them. Every test writes its own small files."""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

from trimtab.adapters.sim import SimBroker, run_virtual
from trimtab.adapters.sim.path import BookTop, MarketPath, TradeKind
from trimtab.adapters.sim.replay import (
    DEFAULT_START,
    ReplayPath,
    ReplaySource,
    load_replay,
    replay_market,
)
from trimtab.adapters.sim.state import DEFAULT_MARKET_DATE
from trimtab.adapters.sim.trading_calendar import NEW_YORK
from trimtab.domain.orders import (
    ClientOrderId,
    OrderEvent,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
)
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.quotes import Quote
from trimtab.engine.executor import Executor

D = Decimal
T = TypeVar("T")
QUOTE_HEADER = "time,bid,bid_size,ask,ask_size"
TRADE_HEADER = "time,price,size"


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_zip(path: Path, lines: Sequence[str], inner: str = "data.csv") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(inner, "\n".join(lines) + "\n")
    return path


def csv_replay(
    folder: Path,
    quotes: Sequence[str],
    trades: Sequence[str] = (),
    start: time | None = None,
    symbol: str = "IBM",
) -> ReplaySource:
    write(folder / f"{symbol}_quotes.csv", [QUOTE_HEADER, *quotes])
    write(folder / f"{symbol}_trades.csv", [TRADE_HEADER, *trades])
    return load_replay(folder, start)


def run(main: Callable[[], Awaitable[T]]) -> T:
    return run_virtual(main())  # type: ignore[arg-type]


def order(cid: str, side: Side, qty: int, limit: str | None = None, symbol: str = "IBM") -> OrderRequest:
    return OrderRequest(
        client_order_id=ClientOrderId(cid),
        symbol=symbol,
        side=side,
        qty=D(qty),
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=None if limit is None else D(limit),
    )


class Fills:
    """Fills of our orders with the New York time of day they happened at."""

    def __init__(self, broker: SimBroker) -> None:
        self.items: list[tuple[str, Decimal, Decimal]] = []
        broker.add_order_listener(self._on)

    def _on(self, event: OrderEvent) -> None:
        if event.fill_qty is not None and event.fill_price is not None:
            when = event.timestamp.astimezone(NEW_YORK).time().isoformat(timespec="milliseconds")
            self.items.append((when, event.fill_qty, event.fill_price))


async def sleep_until(broker: SimBroker, hh: int, mm: int, ss: float = 0.0) -> None:
    now = broker.clock.now().astimezone(NEW_YORK)
    target = datetime.combine(now.date(), time(hh, mm), tzinfo=NEW_YORK)
    await asyncio.sleep((target - now).total_seconds() + ss)


# A book with 300 shares bid at 100.00 and 200 offered at 100.03 from before the start.
BOOK = ["09:44:00,100.00,300,100.03,200"]


# -- loading --------------------------------------------------------------------------------------


def test_csv_files_give_states_trades_and_a_profile(tmp_path: Path) -> None:
    source = csv_replay(
        tmp_path,
        [*BOOK, "09:45:00.250,100.00,300,100.03,200", "35100500,100.01,100,100.03,200",
         "09:46:00,100.01,100,100.03,200"],
        ["09:45:10,100.00,200", "35120500,100.03,100"],
    )
    assert source.day == DEFAULT_MARKET_DATE
    assert source.start == DEFAULT_START
    assert source.symbols == frozenset({"IBM"})
    assert source.start_datetime == datetime(2026, 1, 5, 9, 45, tzinfo=NEW_YORK)
    data = source.data["IBM"]
    # Repeated states are dropped; prices in ticks of a cent, times in ms since midnight.
    assert list(data.quote_ms) == [35_040_000, 35_100_500]
    assert (list(data.bid), list(data.ask)) == ([10000, 10001], [10003, 10003])
    assert list(data.bid_size) == [300, 100]
    assert data.tick == D("0.01")
    assert list(data.trade_ms) == [35_110_000, 35_120_500]
    assert list(data.trade_price) == [1_000_000, 1_000_300]  # 1/10,000 dollar
    assert [TradeKind(k) for k in data.trade_kind] == [TradeKind.AT_BID, TradeKind.AT_ASK]
    assert list(data.trade_seller) == [1, 0]
    profile = source.profile("IBM")
    assert profile.price == D("100.02")  # the mid at the start, to the tick
    assert profile.tick == D("0.01")
    assert profile.level_size == 200  # the median displayed size


def test_lean_tick_rows_update_one_side_and_suspicious_rows_are_dropped(tmp_path: Path) -> None:
    write_zip(tmp_path / "tick_abc_20131007_quote.zip", [
        "34000000,0,0,500300,100,Q,1,0",  # the ask first; no bid yet
        "34000100,500000,200,0,0,P,1,0",  # the bid; the ask unchanged
        "34000200,490000,900,0,0,P,1,1",  # suspicious: dropped
        "34000300,0,0,500200,300,N,1,0",  # two rows of one millisecond make one state
        "34000300,500100,100,0,0,N,1,0",
        "34000400,500100,100,0,0,Z,1,0",  # unchanged: no new state
    ])
    write_zip(tmp_path / "tick_abc_20131007_trade.zip", [
        "34000150,500300,10,P,1,0",  # at the ask: a buyer
        "34000160,500000,20,P,1,0",  # at the bid: a seller
        "34000170,499000,30,P,1,1",  # suspicious: dropped
        "34000500,500200,40,P,1,0",  # at the new ask (50.01 / 50.02): a buyer
        "34000600,500150,50,P,1,0",  # at the midpoint, a downtick: a seller
        "34000700,500160,60,P,1,0",  # inside, above the midpoint: a buyer
    ])
    source = load_replay(tmp_path / "tick_abc_20131007_quote.zip", time(9, 30))
    data = source.data["ABC"]
    assert source.day == date(2013, 10, 7)
    assert data.source == "tick_abc_20131007_quote.zip + tick_abc_20131007_trade.zip"
    assert list(data.quote_ms) == [34000000, 34000100, 34000300]
    assert list(zip(data.bid, data.ask, strict=True)) == [(0, 5003), (5000, 5003), (5001, 5002)]
    assert list(zip(data.bid_size, data.ask_size, strict=True)) == [(0, 100), (200, 100), (100, 300)]
    assert list(data.trade_size) == [10, 20, 40, 50, 60]
    assert [TradeKind(k) for k in data.trade_kind] == [
        TradeKind.AT_ASK, TradeKind.AT_BID, TradeKind.AT_ASK, TradeKind.INSIDE, TradeKind.INSIDE]
    assert list(data.trade_seller) == [0, 1, 0, 1, 0]


def test_a_trade_is_classified_against_the_quote_before_it(tmp_path: Path) -> None:
    write_zip(tmp_path / "tick_abc_20131007_quote.zip", [
        "34000000,500000,200,500300,100,P,1,0",
        "34000500,0,0,500400,100,P,1,0",  # the ask moves up as the trade takes it
    ])
    write_zip(tmp_path / "tick_abc_20131007_trade.zip", ["34000500,500300,100,P,1,0"])
    data = load_replay(tmp_path, time(9, 30)).data["ABC"]
    assert [TradeKind(k) for k in data.trade_kind] == [TradeKind.AT_ASK]


def test_second_bars_hold_the_close_from_the_end_of_the_bar(tmp_path: Path) -> None:
    write_zip(tmp_path / "second_xyz_20131007_quote.zip", [
        "34200000,1672700,1672800,1672600,1672700,5700,1672800,1672900,1672700,1672800,6100",
        "34201000,0,0,0,0,0,1672900,1672900,1672900,1672900,300",  # no bid in the bar: unchanged
    ])
    write_zip(tmp_path / "second_xyz_20131007_trade.zip", [
        "34200000,1672700,1672800,1672600,1672800,1001",  # up bar: the low first, then the high
        "34201000,1672800,1672800,1672800,1672800,50",
    ])
    data = load_replay(tmp_path, time(9, 30)).data["XYZ"]
    assert list(data.quote_ms) == [34201000, 34202000]
    assert [(data.bid[i], data.ask[i], data.bid_size[i], data.ask_size[i]) for i in range(2)] == [
        (16727, 16728, 5700, 6100), (16727, 16729, 5700, 300)]
    assert list(data.trade_ms) == [34200500, 34200500, 34201500]
    assert list(data.trade_price) == [1672600, 1672800, 1672800]
    assert list(data.trade_size) == [501, 500, 50]


def test_a_folder_replays_its_earliest_day_unless_told(tmp_path: Path) -> None:
    for day in ("20131007", "20131008"):
        write_zip(tmp_path / f"tick_ibm_{day}_quote.zip", ["34000000,1800000,100,1800300,100,P,1,0"])
        write_zip(tmp_path / f"tick_ibm_{day}_trade.zip", ["34300000,1800000,100,P,1,0"])
    write(tmp_path / "XYZ_quotes.csv", ["09:00:00,20.00,500,20.01,500"])  # no trades: allowed
    write(tmp_path / "notes.txt", ["not data"])
    first = load_replay(tmp_path)
    assert (first.day, first.symbols) == (date(2013, 10, 7), frozenset({"IBM", "XYZ"}))
    second = load_replay(tmp_path, time(10, 30), day=date(2013, 10, 8))
    assert (second.day, second.start) == (date(2013, 10, 8), time(10, 30))
    assert second.data["IBM"].source == "tick_ibm_20131008_quote.zip + tick_ibm_20131008_trade.zip"
    assert len(first.data["XYZ"].trade_ms) == 0


def test_one_file_brings_its_partner(tmp_path: Path) -> None:
    write(tmp_path / "IBM_quotes.csv", ["09:00:00,100.00,100,100.01,100"])
    write(tmp_path / "IBM_trades.csv", ["09:50:00,100.00,100"])
    write(tmp_path / "AAPL_quotes.csv", ["09:00:00,400.00,100,400.01,100"])
    source = load_replay(tmp_path / "IBM_trades.csv")
    assert source.symbols == frozenset({"IBM"})
    assert len(source.data["IBM"].trade_ms) == 1


ONE_QUOTE = ["09:00:00,100.00,100,100.01,100"]


@pytest.mark.parametrize(
    ("files", "target", "start", "message"),
    [
        ({}, "missing", None, "not found"),
        ({}, ".", None, "no replay files"),
        ({"IBM.csv": ["x"]}, "IBM.csv", None, "not a replay file name"),
        ({"IBM_trades.csv": ["09:50:00,100.00,100"]}, ".", None, "no quotes for IBM"),
        ({"IBM_quotes.csv": [QUOTE_HEADER, "09:00:00,100.00,100,100.01"]}, ".", None, "line 2: expected 5"),
        ({"IBM_quotes.csv": ["09:00:00,100.00,100,abc,100"]}, ".", None, "IBM_quotes.csv line 1: not a num"),
        ({"IBM_quotes.csv": ["09:00:00,100.00001,100,100.01,100"]}, ".", None, "at most 4 decimals"),
        ({"IBM_quotes.csv": ["09:00:00,100.00,1.5,100.01,100"]}, ".", None, "whole number of shares"),
        ({"IBM_quotes.csv": ["time,bid,ask", "09:00:00,100.00,100,100.01,100"]}, ".", None, "header"),
        ({"IBM_quotes.csv": ["09:10:00,100.00,100,100.01,100", "09:00:00,100.00,100,100.01,100"]}, ".",
         None, "line 2: time 32400000 ms is earlier"),
        ({"IBM_quotes.csv": ["09:00:00,0,0,0,0"]}, ".", None, "no usable quotes"),
        ({"IBM_quotes.csv": ONE_QUOTE}, ".", time(16, 0), "outside the regular hours"),
        ({"IBM_quotes.csv": ONE_QUOTE}, ".", time(9, 0), "outside the regular hours"),
        ({"IBM_20131005_quotes.csv": ONE_QUOTE}, ".", None, "not a trading day"),
        ({"tick_ibm_20131007_quote.zip": ["34000000,1800000,-1,0,0,P,1,0"]}, ".", None, "line 1: negative"),
        ({"tick_ibm_20131007_quote.zip": ["34000000,1800000"]}, ".", None, "line 1: expected 5 fields"),
        ({"tick_ibm_20131307_quote.zip": ["34000000,1800000,100,0,0,P,1,0"]}, ".", None, "not a date"),
    ],
)
def test_load_errors_name_the_problem(
    tmp_path: Path, files: dict[str, list[str]], target: str, start: time | None, message: str
) -> None:
    for name, lines in files.items():
        if name.endswith(".zip"):
            write_zip(tmp_path / name, lines)
        else:
            write(tmp_path / name, lines)
    with pytest.raises(ValueError, match=message):
        load_replay(tmp_path / target, start)


def test_a_zip_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tick_ibm_20131007_quote.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip file"):
        load_replay(tmp_path)
    with zipfile.ZipFile(tmp_path / "tick_ibm_20131007_quote.zip", "w") as archive:
        archive.writestr("a.csv", "1")
        archive.writestr("b.csv", "2")
    with pytest.raises(ValueError, match="exactly one CSV"):
        load_replay(tmp_path)


def test_the_market_option_of_the_command_line(tmp_path: Path) -> None:
    write(tmp_path / "IBM_quotes.csv", ["09:00:00,100.00,100,100.01,100"])
    assert replay_market("synthetic") is None
    source = replay_market(f"replay:{tmp_path}", "10:30")
    assert source is not None
    assert (source.symbols, source.start) == (frozenset({"IBM"}), time(10, 30))
    default = replay_market(f"replay:{tmp_path / 'IBM_quotes.csv'}")
    assert default is not None
    assert default.start == DEFAULT_START
    with pytest.raises(ValueError, match="replay:PATH only"):
        replay_market("synthetic", "10:30")
    with pytest.raises(ValueError, match="HH:MM"):
        replay_market(f"replay:{tmp_path}", "half past ten")
    with pytest.raises(ValueError, match="unknown market"):
        replay_market("random")
    with pytest.raises(ValueError, match="unknown market"):
        replay_market("replay:")
    with pytest.raises(ValueError, match="not found"):
        replay_market(f"replay:{tmp_path / 'nothing'}")


def test_the_path_steps_through_recorded_states(tmp_path: Path) -> None:
    quotes = [*BOOK, "09:45:00.500,100.01,100,100.03,200", "09:45:02,100.01,100,100.02,50"]
    source = csv_replay(tmp_path, quotes)
    path = source.path("IBM")
    assert path.steps == 3
    assert [path.step_time(k) for k in range(4)] == [0.0, 0.5, 2.0, float("inf")]
    assert path.quote_at(0.0) == BookTop(10000, 10003, 300, 200)
    assert path.quote_at(0.499) == BookTop(10000, 10003, 300, 200)
    assert path.quote_at(0.5) == BookTop(10001, 10003, 100, 200)
    assert path.quote_at(3600.0) == BookTop(10001, 10002, 100, 50)  # the last state holds


# -- the exchange on replayed data ------------------------------------------------------------------


def test_the_session_is_the_recorded_day_and_other_symbols_stay_synthetic(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK, start=time(10, 15))
    broker = SimBroker(replay=source)

    async def main() -> tuple[Quote | None, Quote | None, bool]:
        clock = await broker.get_market_clock()
        return await broker.get_quote("IBM"), await broker.get_quote("AAA"), clock.is_open

    ibm, aaa, is_open = run(main)
    assert broker.start_time == datetime(2026, 1, 5, 10, 15, tzinfo=NEW_YORK)
    assert broker.replay is source
    assert ibm is not None
    assert (ibm.bid, ibm.ask, ibm.bid_size, ibm.ask_size) == (D("100.00"), D("100.03"), D(300), D(200))
    assert aaa is not None
    assert isinstance(broker.path("AAA"), MarketPath)
    assert isinstance(broker.path("IBM"), ReplayPath)
    assert is_open
    with pytest.raises(ValueError, match="give neither"):
        SimBroker(replay=source, market_date=date(2026, 1, 5))
    with pytest.raises(ValueError, match="give neither"):
        SimBroker(replay=source, start=source.start_datetime)


def test_quotes_follow_the_recording(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, [*BOOK, "09:45:10,100.01,100,100.03,200", "09:47:00,99.90,400,99.95,100"])
    broker = SimBroker(replay=source)

    async def main() -> list[Quote | None]:
        seen = [await broker.get_quote("IBM")]
        await sleep_until(broker, 9, 45, 30)
        seen.append(await broker.get_quote("IBM"))
        await sleep_until(broker, 9, 48)
        seen.append(await broker.get_quote("IBM"))
        return seen

    bids = [q.bid if q is not None else None for q in run(main)]
    assert bids == [D("100.00"), D("100.01"), D("99.90")]


def test_streamed_quotes_of_a_replayed_symbol(tmp_path: Path) -> None:
    changes = ["09:45:03.300,100.01,100,100.03,200", "09:45:03.400,100.02,100,100.03,200",
               "09:45:07,100.01,100,100.03,200"]
    source = csv_replay(tmp_path, [*BOOK, *changes])
    broker = SimBroker(replay=source, quote_interval=1.0)
    seen: list[tuple[float, Decimal]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await broker.subscribe_quotes(["IBM"], lambda q: seen.append((round(loop.time() - start, 3), q.bid)))
        await asyncio.sleep(60)  # the recording ends: the stream goes quiet, nothing breaks

    run(main)
    # The first quote at once, then changes on the one-second grid (the two changes at
    # 3.3 s and 3.4 s are seen together at 4 s).
    assert seen == [(0.0, D("100.00")), (4.0, D("100.02")), (7.0, D("100.01"))]


def test_a_market_order_walks_the_displayed_size_then_deeper_levels(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK)
    broker = SimBroker(replay=source)
    fills = Fills(broker)

    async def main() -> tuple[OrderSnapshot, Quote | None]:
        snap = await broker.submit_order(order("m1", Side.BUY, 500))
        await asyncio.sleep(0.2)
        return await broker.get_order(snap.broker_order_id), await broker.get_quote("IBM")

    final, quote = run(main)
    # 200 displayed at the ask, then levels as deep as the median displayed size (250).
    assert [(q, p) for _, q, p in fills.items] == [(D(200), D("100.03")), (D(250), D("100.04")),
                                                   (D(50), D("100.05"))]
    assert final.status is OrderStatus.FILLED
    assert quote is not None
    assert quote.ask == D("100.05")  # our impact on top of the recorded book


def test_a_resting_buy_fills_only_by_prints_reaching_it_after_the_queue(tmp_path: Path) -> None:
    source = csv_replay(
        tmp_path,
        BOOK,
        [
            "09:45:10,100.00,200",  # a seller at the bid: 200 of the 300 ahead of us
            "09:45:20,100.01,500",  # inside the spread: fills nobody at the touch
            "09:45:30,100.03,1000",  # a buyer at the ask: not for a buy
            "09:45:40,100.00,150",  # 100 ahead, then 50 for us
            "09:45:50,99.99,10",  # through our price: ours directly
            "09:46:00,100.00,500",  # the rest (40) of our order
            "09:46:10,100.00,500",
        ],
    )
    broker = SimBroker(replay=source)
    fills = Fills(broker)

    async def main() -> OrderSnapshot:
        snap = await broker.submit_order(order("r1", Side.BUY, 100, "100.00"))
        await sleep_until(broker, 9, 50)
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert fills.items == [("09:45:40.000", D(50), D("100.00")), ("09:45:50.000", D(10), D("100.00")),
                           ("09:46:00.000", D(40), D("100.00"))]
    assert final.status is OrderStatus.FILLED


def test_an_order_inside_the_spread_is_reached_by_prints_at_or_through_it(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK, ["09:45:10,100.02,30", "09:45:20,100.00,40", "09:45:30,100.01,500"])
    broker = SimBroker(replay=source)
    fills = Fills(broker)

    async def main() -> None:
        await broker.submit_order(order("r1", Side.BUY, 100, "100.01"))
        await sleep_until(broker, 9, 46)

    run(main)
    # 100.02 is above our 100.01 (and a buyer's print: above the mid); the seller at the
    # bid meets our better price first; the print at 100.01 (below the mid) is a seller's.
    assert fills.items == [("09:45:20.000", D(40), D("100.01")), ("09:45:30.000", D(60), D("100.01"))]


def test_a_resting_sell_is_reached_by_buyers_at_the_ask(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK, ["09:45:10,100.00,500", "09:45:20,100.03,250", "09:45:30,100.03,70"])
    broker = SimBroker(replay=source, positions={"IBM": D(100)})
    fills = Fills(broker)

    async def main() -> None:
        await broker.submit_order(order("s1", Side.SELL, 100, "100.03"))
        await sleep_until(broker, 9, 46)

    run(main)
    assert fills.items == [("09:45:20.000", D(50), D("100.03")), ("09:45:30.000", D(50), D("100.03"))]


def test_the_recorded_quote_moving_through_a_resting_order_fills_nothing(tmp_path: Path) -> None:
    quotes = [*BOOK, "09:45:10,100.00,300,100.00,100", "09:45:20,99.97,100,99.99,100"]
    source = csv_replay(tmp_path, quotes, ["09:45:30,99.97,20"])
    broker = SimBroker(replay=source)
    fills = Fills(broker)

    async def main() -> None:
        await broker.submit_order(order("r1", Side.BUY, 100, "100.00"))
        await sleep_until(broker, 9, 46)

    run(main)
    assert fills.items == [("09:45:30.000", D(20), D("100.00"))]  # only the print


def test_the_touch_model_fills_at_the_first_print_or_quote_at_or_through(tmp_path: Path) -> None:
    prints = ["09:45:10,100.01,500", "09:45:20,100.00,1"]
    source = csv_replay(tmp_path, BOOK, prints)
    broker = SimBroker(replay=source, fill_model="touch")
    fills = Fills(broker)

    async def main() -> None:
        await broker.submit_order(order("r1", Side.BUY, 100, "100.00"))
        await sleep_until(broker, 9, 46)

    run(main)
    assert fills.items == [("09:45:20.000", D(100), D("100.00"))]

    other = tmp_path / "crossing"
    other.mkdir()
    crossing = csv_replay(other, [*BOOK, "09:45:15,99.98,100,100.00,100"])
    broker = SimBroker(replay=crossing, fill_model="touch")
    fills = Fills(broker)
    run(main)
    assert fills.items == [("09:45:15.000", D(100), D("100.00"))]


def test_test_hooks_work_on_a_replayed_symbol(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK)
    broker = SimBroker(replay=source)
    fills = Fills(broker)

    async def main() -> Quote | None:
        await broker.submit_order(order("r1", Side.BUY, 100, "100.00"))
        broker.inject_trade("IBM", 350, at="bid")  # 300 ahead, then 50 for us
        broker.force_quote("IBM", D("99.98"), D("100.00"), D(100), D(500))  # crosses: fills
        await asyncio.sleep(1)
        broker.release_quote("IBM")
        return await broker.get_quote("IBM")

    quote = run(main)
    assert [q for _, q, _ in fills.items] == [D(50), D(50)]
    assert quote is not None
    assert (quote.bid, quote.ask) == (D("100.00"), D("100.03"))  # the recording again


def test_day_orders_expire_at_the_recorded_days_close(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK, start=time(15, 59))
    broker = SimBroker(replay=source)

    async def main() -> OrderSnapshot:
        snap = await broker.submit_order(order("d1", Side.BUY, 10, "90.00"))
        await asyncio.sleep(120)
        return await broker.get_order(snap.broker_order_id)

    final = run(main)
    assert final.status is OrderStatus.EXPIRED
    assert final.updated_at == datetime(2026, 1, 5, 16, 0, tzinfo=NEW_YORK)


def test_a_loaded_account_replays_the_recorded_day(tmp_path: Path) -> None:
    source = csv_replay(tmp_path, BOOK)
    state = tmp_path / "state.json"
    SimBroker(market_date=date(2026, 3, 2), positions={"IBM": D(5)}).save(state)
    broker = SimBroker.load(state, replay=source)
    assert broker.start_time == source.start_datetime
    assert broker.session == 1

    async def main() -> Decimal:
        quote = await broker.get_quote("IBM")
        assert quote is not None
        return quote.bid

    assert run(main) == D("100.00")  # the recording, not the saved price
    with pytest.raises(ValueError, match="give neither"):
        SimBroker.load(state, replay=source, market_date=date(2026, 3, 3))
    fresh = SimBroker.from_account_text('{"cash": "1000"}', replay=source)
    assert fresh.start_time == source.start_datetime


def test_the_engine_runs_a_plan_on_replayed_data(tmp_path: Path) -> None:
    # A print every ten seconds, alternately at the bid and at the ask.
    prints = [f"09:{45 + i // 6:02d}:{i % 6}0,{'100.00' if i % 2 else '100.03'},100" for i in range(60)]
    source = csv_replay(tmp_path, BOOK, prints)
    broker = SimBroker(replay=source, cash=D(100_000))
    plan = RebalancePlan.model_validate(
        {"plan_id": "replay-1", "items": [{"symbol": "IBM", "action": "BUY", "trade_amount": "5000"}]}
    )

    async def main() -> bool:
        async with Executor(broker) as executor:
            result = await executor.execute_rebalance_plan(plan)
        return result.success

    assert run(main)

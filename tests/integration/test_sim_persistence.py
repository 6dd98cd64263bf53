"""The simulated account on disk: account files, saved state, sessions that continue."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from trimtab.adapters.sim import SimBroker, SymbolProfile, run_virtual
from trimtab.adapters.sim.state import continue_session
from trimtab.domain.account import Asset
from trimtab.domain.errors import DuplicateClientOrderIdError, OrderNotCancelableError
from trimtab.domain.orders import ClientOrderId, OrderRequest, OrderSnapshot, OrderStatus, OrderType, Side

D = Decimal
NY = ZoneInfo("America/New_York")


def request(cid: str, side: Side, qty: int, limit: str | None = None, symbol: str = "AAA") -> OrderRequest:
    return OrderRequest(
        client_order_id=ClientOrderId(cid),
        symbol=symbol,
        side=side,
        qty=D(qty),
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=None if limit is None else D(limit),
    )


def _trade_and_save(path: Path) -> tuple[SimBroker, OrderSnapshot, OrderSnapshot]:
    broker = SimBroker(
        seed=3,
        cash=D(50_000),
        positions={"AAA": D(10), "BRK.A": D(2)},
        assets={"BRK.A": Asset("BRK.A", fractionable=False)},
        profiles={"AAA": SymbolProfile(price=D("100.00"))},
    )

    async def main() -> tuple[OrderSnapshot, OrderSnapshot]:
        filled = await broker.submit_order(request("b1", Side.BUY, 5))
        resting = await broker.submit_order(request("s1", Side.SELL, 2, "900.00", symbol="BRK.A"))
        await asyncio.sleep(120)
        return await broker.get_order(filled.broker_order_id), await broker.get_order(resting.broker_order_id)

    filled, resting = run_virtual(main())
    broker.save(path)
    return broker, filled, resting


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sim-account.json"
    before, filled, resting = _trade_and_save(path)
    assert filled.status is OrderStatus.FILLED
    assert resting.status is OrderStatus.ACCEPTED
    saved_at = before.clock.now()
    after = SimBroker.load(path)
    assert (after.seed, after.session) == (3, 1)
    assert after.start_time == saved_at

    state = before.to_state()

    async def main() -> None:
        account = await after.get_account()
        positions = await after.get_positions()
        assert account.cash == D(state["cash"])
        assert account.buying_power == account.cash
        assert positions["AAA"].qty == D(15)
        assert positions["AAA"].avg_entry_price == D(state["positions"]["AAA"]["avg_entry_price"])
        assert positions["BRK.A"].qty_available == D(2)  # the open sell ended with the session
        asset = await after.get_asset("BRK.A")
        assert asset is not None
        assert not asset.fractionable
        old_fill = await after.get_order_by_client_id(ClientOrderId("b1"))
        assert old_fill == filled
        old_open = await after.get_order(resting.broker_order_id)
        assert old_open.status is OrderStatus.EXPIRED
        with pytest.raises(OrderNotCancelableError):
            await after.cancel_order(resting.broker_order_id)
        with pytest.raises(DuplicateClientOrderIdError):
            await after.submit_order(request("b1", Side.BUY, 1))
        fresh = await after.submit_order(request("b2", Side.BUY, 1))
        assert fresh.broker_order_id not in (filled.broker_order_id, resting.broker_order_id)
        assert after.clock.now() >= saved_at
        quote = await after.get_quote("AAA")
        assert quote is not None
        saved_price = D(state["prices"]["AAA"])
        assert abs(quote.mid - saved_price) / saved_price < D("0.01")

    run_virtual(main())


def test_saved_file_is_plain_json_and_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sim-account.json"
    broker, _, _ = _trade_and_save(path)
    broker.save(path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["sim-account.json"]
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "trimtab-sim-account"
    assert data["cash"] == str(D(data["cash"]))
    assert {o["client_order_id"] for o in data["orders"]} == {"b1", "s1"}


def test_load_keeps_or_overrides_the_seed_and_moves_the_path(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    SimBroker(seed=5).save(path)
    assert SimBroker.load(path).seed == 5
    assert SimBroker.load(path, seed=8).seed == 8
    fresh = SimBroker(seed=5).path("AAA")
    loaded = SimBroker.load(path).path("AAA")
    assert [fresh.quote(k) for k in range(0, 400, 40)] != [loaded.quote(k) for k in range(0, 400, 40)]


def test_load_on_a_later_day_starts_that_morning(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    SimBroker(market_date=date(2026, 1, 5)).save(path)
    broker = SimBroker.load(path, market_date=date(2026, 1, 7))
    assert broker.start_time.astimezone(NY) == datetime(2026, 1, 7, 10, 0, tzinfo=NY)


def test_a_session_saved_late_continues_next_weekday() -> None:
    friday_late = datetime(2026, 1, 9, 15, 45, tzinfo=NY)
    friday_morning = datetime(2026, 1, 9, 10, 0, tzinfo=NY)
    assert continue_session(friday_late, friday_morning) == datetime(2026, 1, 12, 10, 0, tzinfo=NY)
    mid_morning = datetime(2026, 1, 9, 11, 0, tzinfo=NY)
    assert continue_session(mid_morning, friday_morning) == mid_morning
    early = datetime(2026, 1, 9, 7, 0, tzinfo=NY)
    assert continue_session(early, early).astimezone(NY).time() == time(10, 0)


def test_load_on_a_holiday_or_a_weekend_starts_on_the_next_trading_day(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    SimBroker(market_date=date(2026, 11, 25)).save(path)
    thanksgiving = SimBroker.load(path, market_date=date(2026, 11, 26))
    assert thanksgiving.start_time.astimezone(NY) == datetime(2026, 11, 27, 10, 0, tzinfo=NY)
    saturday = SimBroker.load(path, market_date=date(2026, 11, 28))
    assert saturday.start_time.astimezone(NY) == datetime(2026, 11, 30, 10, 0, tzinfo=NY)


def test_a_session_saved_near_an_early_close_continues_next_trading_day(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    broker = SimBroker(start=datetime(2026, 11, 27, 12, 40, tzinfo=NY))

    async def main() -> None:
        await broker.start()
        await asyncio.sleep(600)  # 12:50: ten minutes before the 13:00 close

    run_virtual(main())
    broker.save(path)
    loaded = SimBroker.load(path, market_date=date(2026, 11, 27))
    assert loaded.start_time.astimezone(NY) == datetime(2026, 11, 30, 10, 0, tzinfo=NY)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SimBroker.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        SimBroker.load(broken)
    wrong = tmp_path / "wrong.json"
    bad_cash = {"format": "trimtab-sim-account", "version": 1, "cash": [1]}
    wrong.write_text(json.dumps(bad_cash), encoding="utf-8")
    with pytest.raises(ValueError, match="cash"):
        SimBroker.load(wrong)
    alien = tmp_path / "alien.json"
    alien.write_text(json.dumps({"cash": "1"}), encoding="utf-8")
    with pytest.raises(ValueError, match="format"):
        SimBroker.load(alien)


# -- the user's account file ---------------------------------------------------------------------


def test_account_file_sets_up_the_account(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    path.write_text(
        '{"cash": "100000", "positions": {"SPY": "50", "BND": "120.5", '
        '"IBM": {"qty": 3, "avg_entry_price": "150.25"}}, '
        '"assets": {"BRK.A": {"fractionable": false}, "XYZ": {"tradable": false}}, '
        '"prices": {"SPY": "450.00"}}',
        encoding="utf-8",
    )
    broker = SimBroker.from_account_file(path, seed=2, market_date=date(2026, 2, 2))

    async def main() -> None:
        account = await broker.get_account()
        positions = await broker.get_positions()
        assert account.cash == D("100000")
        assert {s: p.qty for s, p in positions.items()} == {"BND": D("120.5"), "IBM": D(3), "SPY": D(50)}
        assert positions["IBM"].avg_entry_price == D("150.25")
        assert positions["SPY"].avg_entry_price == D("450.00")
        quote = await broker.get_quote("SPY")
        assert quote is not None
        assert abs(quote.mid - D(450)) < D(1)
        brk = await broker.get_asset("BRK.A")
        xyz = await broker.get_asset("XYZ")
        assert brk == Asset("BRK.A", tradable=True, fractionable=False)
        assert xyz == Asset("XYZ", tradable=False, fractionable=True)

    run_virtual(main())
    assert broker.start_time.astimezone(NY) == datetime(2026, 2, 2, 10, 0, tzinfo=NY)


def test_example_account_file_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "account.json"
    broker = SimBroker.from_account_file(example)
    assert broker.to_state()["positions"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be a JSON object"),
        ("{", "not valid JSON"),
        ('{"cash": NaN}', "NaN is not allowed"),
        ('{"money": "1"}', "unknown field 'money'"),
        ('{"cash": "-5"}', "cash must not be negative"),
        ('{"cash": "lots"}', "cash is not a number"),
        ('{"cash": true}', "cash must be a decimal string or number, got a boolean"),
        ('{"positions": []}', "positions must be an object"),
        ('{"positions": {"spy": "1"}}', "positions.spy"),
        ('{"positions": {"SPY": "ten"}}', "positions.SPY is not a number"),
        ('{"positions": {"SPY": "-1"}}', "positions.SPY: short positions"),
        ('{"positions": {"SPY": "0.0000000001"}}', "more than 9 decimals"),
        ('{"positions": {"SPY": {"shares": 1}}}', "positions.SPY: unknown field 'shares'"),
        ('{"positions": {"SPY": {"avg_entry_price": 1}}}', "positions.SPY.qty is missing"),
        ('{"assets": {"BRK.A": {"fractionable": "no"}}, "positions": {}}', "assets.BRK.A.fractionable"),
        ('{"assets": {"BRK.A": {"shortable": true}}}', "assets.BRK.A: unknown field 'shortable'"),
        ('{"assets": {"BRK.A": {"fractionable": false}}, "positions": {"BRK.A": "1.5"}}',
         "positions.BRK.A: 1.5 shares is fractional"),
        ('{"prices": {"SPY": "0"}}', "prices.SPY must be positive"),
    ],
)
def test_account_file_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("$", r"\$")):
        SimBroker.from_account_text(text)


def test_account_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        SimBroker.from_account_file(tmp_path / "none.json")
    with pytest.raises(ValueError, match="directory"):
        SimBroker.from_account_file(tmp_path)

"""The command line on the simulated exchange: exit codes, JSON, bad input, idempotent re-runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.plan_corpus import BAD_PLANS, BadPlan
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ACCOUNT = EXAMPLES / "account.json"
PLAN = EXAMPLES / "plan.json"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(app, list(args), env={"TRIMTAB_HOME": str(home), "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_run_prints_the_execution_result_as_json(home: Path) -> None:
    code, out, _ = cli(home, "run", str(PLAN), "--account", str(ACCOUNT), "--json", "--seed", "3")
    assert code == 0
    result = json.loads(out)
    for key in (
        "plan_id",
        "correlation_id",
        "status",
        "success",
        "already_executed",
        "orders_placed",
        "orders_succeeded",
        "total_trade_value",
        "started_at",
        "finished_at",
        "orders",
    ):
        assert key in result, key
    assert result["status"] == "SUCCESS"
    assert result["already_executed"] is False
    assert isinstance(result["total_trade_value"], str)
    assert datetime.fromisoformat(result["started_at"]).tzinfo is not None
    assert len(result["orders"]) == 5
    for order in result["orders"]:
        for key in (
            "symbol",
            "action",
            "trade_amount",
            "shares",
            "filled_shares",
            "avg_fill_price",
            "arrival_mid",
            "cost_bps",
            "order_type",
            "client_order_id",
            "success",
            "skipped",
            "skip_reason",
            "error_message",
            "attempts",
        ):
            assert key in order, key
        for attempt in order["attempts"]:
            assert {"time", "limit_price", "quote", "filled_qty"} <= set(attempt)
    sold = {o["symbol"]: o for o in result["orders"]}
    assert sold["BND"]["filled_shares"] == "120.5"


def test_run_prints_a_table_and_the_account_persists_between_runs(home: Path) -> None:
    code, out, _ = cli(home, "run", str(PLAN), "--account", str(ACCOUNT))
    assert code == 0
    assert "Plan example-daily-1: SUCCESS" in out
    assert "BND" in out
    assert "arrival mid" in out
    code, out, _ = cli(home, "account", "--json")
    assert code == 0
    account = json.loads(out)
    assert set(account) == {"cash", "buying_power", "portfolio_value", "positions"}
    assert "BND" not in account["positions"]
    assert "TQQQ" in account["positions"]


def test_the_same_plan_again_sends_nothing_and_says_so(home: Path) -> None:
    code, first, _ = cli(home, "run", str(PLAN), "--account", str(ACCOUNT), "--json")
    assert code == 0
    before = (home / "sim-account.json").read_text()
    code, second, _ = cli(home, "run", str(PLAN), "--json")
    assert code == 0
    a, b = json.loads(first), json.loads(second)
    assert b["already_executed"] is True
    assert a["orders"] == b["orders"]
    state_after = json.loads((home / "sim-account.json").read_text())
    assert state_after["positions"] == json.loads(before)["positions"]
    assert state_after["cash"] == json.loads(before)["cash"]


def test_the_same_plan_id_with_other_content_is_refused(home: Path, tmp_path: Path) -> None:
    assert cli(home, "run", str(PLAN), "--account", str(ACCOUNT))[0] == 0
    changed = json.loads(PLAN.read_text())
    changed["items"][0]["trade_amount"] = "-4000"
    other = tmp_path / "changed.json"
    other.write_text(json.dumps(changed))
    code, _, err = cli(home, "run", str(other))
    assert code == 2
    assert "example-daily-1" in err
    assert "different plan" in err


@pytest.mark.parametrize("bad", BAD_PLANS, ids=[b.name for b in BAD_PLANS])
def test_bad_plans_exit_2_with_one_line_and_leave_the_account_unchanged(
    bad: BadPlan, home: Path, tmp_path: Path
) -> None:
    assert cli(home, "account", "--account", str(ACCOUNT))[0] == 0  # reading does not persist
    assert cli(home, "run", str(PLAN), "--account", str(ACCOUNT), "--dry-run")[0] == 0
    # Make a persisted account to compare against.
    assert cli(home, "run", str(EXAMPLES / "plan.yaml"), "--account", str(ACCOUNT))[0] == 0
    state = home / "sim-account.json"
    before = state.read_bytes()
    path = tmp_path / f"bad.{bad.fmt}"
    path.write_text(bad.text)
    code, out, err = cli(home, "run", str(path))
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for word in bad.expect:
        assert word in lines[0]
    assert state.read_bytes() == before


def test_missing_and_unreadable_files_exit_2(home: Path, tmp_path: Path) -> None:
    code, _, err = cli(home, "run", str(tmp_path / "nope.json"))
    assert code == 2
    assert "not found" in err
    code, _, err = cli(home, "run", str(tmp_path))
    assert code == 2
    (tmp_path / "plan.txt").write_text("{}")
    code, _, err = cli(home, "run", str(tmp_path / "plan.txt"))
    assert code == 2
    assert "format" in err
    bad_account = tmp_path / "account.json"
    bad_account.write_text('{"cash": "lots"}')
    code, _, err = cli(home, "run", str(PLAN), "--account", str(bad_account))
    assert code == 2
    assert "cash" in err


def test_invalid_options_exit_2(home: Path, tmp_path: Path) -> None:
    assert cli(home, "run", str(PLAN), "--algo", "twap")[0] == 2
    assert cli(home, "run", str(PLAN), "--urgency", "ASAP")[0] == 2
    config = tmp_path / "bad.toml"
    config.write_text('[execution]\nmax_spread_bps = "-3"\n')
    code, _, err = cli(home, "run", str(PLAN), "--config", str(config))
    assert code == 2
    assert "max_spread_bps" in err


def test_dry_run_sizes_and_prices_but_sends_nothing(home: Path) -> None:
    code, out, _ = cli(home, "run", str(PLAN), "--account", str(ACCOUNT), "--dry-run", "--json")
    assert code == 0
    preview = json.loads(out)
    assert preview["dry_run"] is True
    by = {o["symbol"]: o for o in preview["orders"]}
    assert by["BND"]["shares"] == "120.5"
    assert by["SPY"]["first_limit_price"] is not None
    assert not (home / "sim-account.json").exists()
    assert not (home / "ledger.sqlite3").exists() or _plans(home) == []


def _plans(home: Path) -> list[str]:
    with SqlLedger(default_ledger_url(home)) as ledger:
        return [p.plan_id for p in ledger.list_plans()]


def test_unfilled_orders_exit_1(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "tight.toml"
    config.write_text(
        "[execution]\nsell_phase_timeout = 2\nbuy_phase_timeout = 2\nplan_timeout = 10\n"
        'default_urgency = "LOW"\n'
    )
    account = tmp_path / "big.json"
    account.write_text('{"cash": "0", "positions": {"AAA": "900000"}}')
    plan = tmp_path / "plan.json"
    plan.write_text(
        '{"plan_id": "tight", "items": [{"symbol": "AAA", "action": "SELL", "target_weight": 0}]}'
    )
    code, out, _ = cli(home, "run", str(plan), "--account", str(account), "--config", str(config), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["status"] in ("PARTIAL_SUCCESS", "FAILURE")
    assert "timed out" in result["message"]


def test_a_plan_held_by_another_live_process_is_refused_with_exit_3(home: Path) -> None:
    home.mkdir(parents=True)
    from trimtab.domain.planfile import parse_plan_text

    the_plan = parse_plan_text(PLAN.read_text(), "json")
    with SqlLedger(default_ledger_url(home)) as ledger:
        claim = ledger.begin_plan(
            the_plan.plan_id,
            the_plan.content_hash(),
            the_plan.model_dump_json(),
            None,
            "elsewhere:1",
            now=datetime.now(UTC),
            lease_ttl=timedelta(hours=1),
        )
        assert claim.owned
    code, _, err = cli(home, "run", str(PLAN), "--account", str(ACCOUNT))
    assert code == 3
    assert "another process" in err
    assert not (home / "sim-account.json").exists() or "TQQQ" not in (home / "sim-account.json").read_text()


def test_a_second_process_returns_the_stored_result(home: Path) -> None:
    env = {**os.environ, "TRIMTAB_HOME": str(home)}
    command = [sys.executable, "-m", "trimtab", "run", str(PLAN), "--json"]
    first = subprocess.run(
        [*command, "--account", str(ACCOUNT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert b["already_executed"] is True
    assert a["orders"] == b["orders"]


def test_ledger_lists_shows_and_exports(home: Path, tmp_path: Path) -> None:
    assert cli(home, "run", str(PLAN), "--account", str(ACCOUNT))[0] == 0
    code, out, _ = cli(home, "ledger", "--json")
    assert code == 0
    plans = json.loads(out)
    assert [p["plan_id"] for p in plans] == ["example-daily-1"]
    assert plans[0]["state"] == "DONE"
    assert plans[0]["status"] == "SUCCESS"
    assert plans[0]["fills"] >= 4
    code, out, _ = cli(home, "ledger", "example-daily-1", "--json")
    assert code == 0
    shown = json.loads(out)
    assert {i["symbol"] for i in shown["intents"]} == {"SPY", "BND", "TQQQ", "IBM"}
    assert all(i["status"] == "filled" for i in shown["intents"] if i["symbol"] != "GLD")
    sold = sum(Decimal(f["qty"]) for f in shown["fills"] if f["symbol"] == "BND")
    assert sold == Decimal("120.5")
    code, out, _ = cli(home, "ledger", "example-daily-1")
    assert code == 0
    assert "Fills" in out
    target = tmp_path / "out" / "ledger.jsonl"
    code, out, _ = cli(home, "ledger", "export", str(target))
    assert code == 0
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert {r["type"] for r in records} >= {"plan", "intent", "event", "fill"}
    assert cli(home, "ledger", "no-such-plan")[0] == 2
    assert cli(home, "ledger", "export")[0] == 2


def test_the_simulated_account_is_one_process_at_a_time(home: Path) -> None:
    import fcntl

    assert cli(home, "run", str(EXAMPLES / "plan.yaml"), "--account", str(ACCOUNT))[0] == 0
    before = (home / "sim-account.json").read_bytes()
    with (home / "sim-account.lock").open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        code, _, err = cli(home, "run", str(PLAN))
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert code == 3
    assert "in use by another trimtab process" in err
    assert (home / "sim-account.json").read_bytes() == before
    assert cli(home, "run", str(PLAN))[0] == 0


REPLAY = Path(__file__).resolve().parents[3] / "shared" / "data" / "lean-2013-10"


def test_run_on_a_replay_of_recorded_quotes_and_trades(home: Path, tmp_path: Path) -> None:
    if not (REPLAY / "tick_ibm_20131007_quote.zip").exists():
        pytest.skip(f"replay data not found: {REPLAY}")
    plan = tmp_path / "plan.json"
    plan.write_text(
        '{"plan_id": "replay", "items": [{"symbol": "IBM", "action": "BUY", "trade_amount": "20000"}]}'
    )
    code, out, err = cli(
        home, "run", str(plan), "--market", f"replay:{REPLAY}", "--start", "11:00", "--fresh", "--json"
    )
    assert code == 0, err
    order = json.loads(out)["orders"][0]
    assert Decimal("170") < Decimal(order["arrival_mid"]) < Decimal("195")  # IBM on 2013-10-07
    assert order["attempts"][0]["time"].startswith("2013-10-07T15:00")  # 11:00 New York
    assert not (home / "sim-account.json").exists()  # a replay does not touch the saved account
    assert cli(home, "run", str(plan), "--market", "replay:/no/such/folder", "--fresh")[0] == 2


def _markout_coverage(home: Path, plan_id: str) -> dict[int, Decimal | None]:
    from trimtab.tca import analyze, load_execution

    with SqlLedger(default_ledger_url(home)) as ledger:
        return analyze(load_execution(ledger, plan_id)).total.markout_coverage


def test_run_records_the_markouts_of_its_last_fills_on_virtual_time(tmp_path: Path) -> None:
    plan_id = json.loads(PLAN.read_text())["plan_id"]
    waited, hurried = tmp_path / "waited", tmp_path / "hurried"
    code, _, _ = cli(waited, "run", str(PLAN), "--account", str(ACCOUNT), "--json", "--seed", "3")
    assert code == 0
    code, _, _ = cli(hurried, "run", str(PLAN), "--account", str(ACCOUNT), "--json", "--seed", "3",
                     "--no-markouts")
    assert code == 0
    # The default on the simulated exchange waits (virtual time: no wall time) until the
    # market a minute after every fill is on record.
    assert _markout_coverage(waited, plan_id) == {1: Decimal(1), 10: Decimal(1), 60: Decimal(1)}
    # Ending with the plan leaves the last fills without their 60 s markouts.
    coverage = _markout_coverage(hurried, plan_id)[60]
    assert coverage is None or coverage < Decimal(1)

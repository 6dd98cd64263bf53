"""`trimtab plan` and `trimtab rebalance` on the simulated exchange, through the Typer app."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trimtab.cli import app
from trimtab.cli.common import read_plan
from trimtab.cli.planning import confirm_execution, load_planner_config
from trimtab.domain.errors import ConfigurationError, SafetyRefusalError
from trimtab.domain.plan import Action
from trimtab.domain.targets import TargetWeights
from trimtab.engine.planner import PlannerConfig, compute_plan

D = Decimal
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRIMTAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def account_file(tmp_path: Path) -> Path:
    path = tmp_path / "account.json"
    path.write_text(json.dumps({
        "cash": "10000",
        "positions": {"SPY": "20", "BND": "100", "OLD": "5"},
        "prices": {"SPY": "450.00", "BND": "72.10", "GLD": "185.30", "OLD": "20.00"},
    }))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_plan_writes_the_plan_json_to_stdout(home: Path, account_file: Path) -> None:
    code, out, err = invoke("plan", str(EXAMPLES / "targets.csv"), "--account", str(account_file))
    assert code == 0, err
    data = json.loads(out)
    assert data["plan_id"].startswith("plan-")
    items = {item["symbol"]: item for item in data["items"]}
    assert set(items) == {"SPY", "BND", "GLD", "OLD"}
    assert items["OLD"] == {"symbol": "OLD", "action": "SELL", "target_weight": "0"}
    assert items["GLD"]["action"] == "BUY"
    assert isinstance(items["GLD"]["trade_amount"], str)  # decimals as strings
    assert not (home / "sim-account.json").exists()  # planning changes nothing


def test_plan_to_a_file_round_trips_through_the_plan_reader(
    home: Path, account_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "plan.json"
    code, out, err = invoke(
        "plan", str(EXAMPLES / "targets.yaml"), "--account", str(account_file),
        "-o", str(output), "--plan-id", "daily-1", "--correlation-id", "run 7",
        "--cash-reserve", "0.05", "--drift-band", "0.01", "--whole-shares",
    )
    assert code == 0, err
    assert out == ""
    assert "wrote plan daily-1" in err
    plan = read_plan(output)
    assert plan.plan_id == "daily-1"
    assert plan.correlation_id == "run 7"
    buys = [item for item in plan.items if item.action is Action.BUY]
    assert buys
    for item in plan.items:
        assert item.trade_amount is None or item.trade_amount.as_tuple().exponent == -2


def test_same_account_same_targets_same_default_plan_id(home: Path, account_file: Path) -> None:
    first = json.loads(invoke("plan", str(EXAMPLES / "targets.csv"), "--account",
                              str(account_file))[1])
    second = json.loads(invoke("plan", str(EXAMPLES / "targets.csv"), "--account",
                               str(account_file))[1])
    assert first["plan_id"] == second["plan_id"]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("symbol,weight\nSPY,0.7\nBND,0.4\n", ".csv", "weights sum to 1.1"),
        ("symbol,weight\nSPY,abc\n", ".csv", "line 2 (symbol SPY): weight: not a number"),
        ('{"targets": {"SPY": NaN}}', ".json", "targets.SPY: weight: must be a number, got NaN"),
        ("targets: {SPY: 0.1}\n", ".txt", "cannot tell the format"),
    ],
)
def test_plan_refuses_a_bad_targets_file_with_exit_2(
    home: Path, tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"targets{suffix}"
    path.write_text(content)
    code, out, err = invoke("plan", str(path))
    assert code == 2
    assert out == ""
    # One message; the console may wrap it at its width, so compare the words.
    assert " ".join(message.split()) in " ".join(err.split())
    assert err.startswith("error: ")
    assert err.count("error:") == 1


def test_plan_refuses_a_missing_file(home: Path, tmp_path: Path) -> None:
    code, _, err = invoke("plan", str(tmp_path / "nope.csv"))
    assert code == 2
    assert "targets file not found" in err


def test_plan_refuses_a_bad_option(home: Path) -> None:
    code, _, err = invoke("plan", str(EXAMPLES / "targets.csv"), "--cash-reserve", "1.5")
    assert code == 2
    assert "cash_reserve" in err


def test_rebalance_dry_run_previews_and_sends_nothing(home: Path, account_file: Path) -> None:
    code, out, err = invoke("rebalance", str(EXAMPLES / "targets.csv"), "--account",
                            str(account_file), "--dry-run", "--cash-reserve", "0.02")
    assert code == 0, err
    words = " ".join(out.split())
    for text in ("SPY", "BND", "GLD", "OLD", "SELL", "turnover", "estimated cost", "reserve",
                 "dry run: nothing sent"):
        assert text in words
    assert not (home / "sim-account.json").exists()


def test_rebalance_executes_on_the_simulated_exchange(home: Path, account_file: Path) -> None:
    code, out, err = invoke("rebalance", str(EXAMPLES / "targets.csv"), "--account",
                            str(account_file), "--cash-reserve", "0.02", "--drift-band", "0.01")
    assert code == 0, err
    assert "SUCCESS" in out
    code, out, err = invoke("account", "--json")
    assert code == 0, err
    account = json.loads(out)
    assert "OLD" not in account["positions"] or D(account["positions"]["OLD"]) == 0
    assert D(account["cash"]) >= D("0.02") * D(account["portfolio_value"]) - D("0.01")
    # A second rebalance right after finds every weight inside its band.
    code, out, err = invoke("rebalance", str(EXAMPLES / "targets.csv"), "--cash-reserve", "0.02",
                            "--drift-band", "0.01")
    assert code == 0, err
    assert "nothing to trade" in out


def test_rebalance_json_prints_the_result_on_stdout(home: Path, account_file: Path) -> None:
    code, out, err = invoke("rebalance", str(EXAMPLES / "targets.csv"), "--account",
                            str(account_file), "--json", "--plan-id", "json-1")
    assert code == 0, err
    result = json.loads(out)
    assert result["plan_id"] == "json-1"
    assert result["status"] == "SUCCESS"
    assert "estimated cost" in err  # the preview went to stderr


def test_planner_config_comes_from_the_planner_table_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "trimtab.toml"
    config.write_text(
        '[execution]\nalgo = "market"\n\n[planner]\ncash_reserve = "0.03"\n'
        'drift_band_absolute = 0.02\nwhole_shares = true\n'
    )
    planner = load_planner_config(config, {"min_trade_notional": "5", "whole_shares": None})
    assert planner == PlannerConfig(cash_reserve=D("0.03"), drift_band_absolute=D("0.02"),
                                    whole_shares=True, min_trade_notional=D("5"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[planner]\ncash_reserve = 2\n")
    with pytest.raises(ConfigurationError, match="cash_reserve"):
        load_planner_config(bad)


def test_confirmation_is_needed_only_on_a_real_broker_without_yes() -> None:
    proposal = compute_plan(TargetWeights.from_mapping({"SPY": "0.5"}), {}, {"SPY": D("100")},
                            D("10000"), PlannerConfig(), "confirm-1")
    asked: list[str] = []

    def answer(value: bool) -> Callable[[str], bool]:
        def confirm(question: str) -> bool:
            asked.append(question)
            return value
        return confirm

    confirm_execution(proposal, "sim", yes=False, confirm=answer(False))
    confirm_execution(proposal, "alpaca", yes=True, confirm=answer(False))
    assert asked == []
    confirm_execution(proposal, "alpaca", yes=False, confirm=answer(True))
    assert "confirm-1" in asked[0]
    with pytest.raises(SafetyRefusalError, match="not confirmed"):
        confirm_execution(proposal, "alpaca", yes=False, confirm=answer(False))


def test_rebalance_dry_run_json_prints_the_plan(home: Path, account_file: Path) -> None:
    code, out, err = invoke("rebalance", str(EXAMPLES / "targets.csv"), "--account",
                            str(account_file), "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["plan_id"].startswith("rebalance-")
    assert "dry run: nothing sent" in err


def test_rebalance_json_with_nothing_to_trade_still_prints_a_result(
    home: Path, tmp_path: Path
) -> None:
    account = tmp_path / "cash.json"
    account.write_text(json.dumps({"cash": "5000", "prices": {"SPY": "450.00"}}))
    targets = tmp_path / "zero.csv"
    targets.write_text("symbol,weight\nSPY,0\n")
    code, out, err = invoke("rebalance", str(targets), "--account", str(account), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["orders_placed"] == 0
    assert "nothing to trade" in err

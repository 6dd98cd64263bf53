"""`trimtab run --broker alpaca` and `trimtab account --broker alpaca` against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.contract.venues import KEY_ID, SECRET, sandbox_for
from trimtab.adapters.sandbox import SandboxHandle
from trimtab.cli import app

PLAN = {
    "plan_id": "cli-alpaca-1",
    "items": [
        {"symbol": "SPY", "action": "SELL", "trade_amount": "-1000"},
        {"symbol": "AAPL", "action": "BUY", "trade_amount": "1500"},
    ],
}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHandle]:
    with sandbox_for({"cash": "5000", "positions": {"SPY": "40"}}) as handle:
        monkeypatch.setenv("TRIMTAB_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("APCA_API_BASE_URL", handle.url)
        monkeypatch.delenv("APCA_API_DATA_URL", raising=False)
        yield handle


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if "unknown broker" in result.stderr:
        pytest.skip("the command line does not offer --broker alpaca yet")
    return result.exit_code, result.stdout, result.stderr


def test_run_with_the_alpaca_broker(sandbox: SandboxHandle, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN), encoding="utf-8")
    code, out, err = invoke("run", str(plan), "--broker", "alpaca", "--algo", "market", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "SUCCESS"
    assert result["orders_placed"] == 2
    assert SECRET not in out + err
    code, out, err = invoke("account", "--broker", "alpaca", "--json")
    assert code == 0, err
    account = json.loads(out)
    assert Decimal(account["positions"]["AAPL"]) > 0
    assert Decimal(account["positions"]["SPY"]) < 40


def test_live_endpoint_is_refused_without_live(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_BASE_URL", "https://api.alpaca.markets")
    code, _, err = invoke("account", "--broker", "alpaca")
    assert code == 3, err
    assert SECRET not in err

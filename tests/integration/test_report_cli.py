"""trimtab report PLAN_ID: the terminal summary, --json and --html, on a real ledger."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.simkit import broker, buy, plan, sell
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.cli import report
from trimtab.domain.results import ExecutionResult
from trimtab.engine.executor import Executor
from trimtab.engine.quotes import MARKOUT_LINGER

PLAN_ID = "report-demo"


def make_app() -> typer.Typer:
    """An app with the report command, as trimtab.cli registers it."""
    app = typer.Typer(add_completion=False)

    @app.callback()
    def root() -> None:
        """trimtab (the report command only)."""

    report.register(app)
    return app


def record_plan(home: Path, plan_id: str = PLAN_ID, *, markouts: bool = True) -> ExecutionResult:
    """Run a plan on the simulated exchange into the ledger under home."""
    sim = broker(cash="40000", positions={"IBM": "300", "XOM": "500"}, seed=21)
    the_plan = plan(plan_id, sell("IBM"), sell("XOM", "-4000"), buy("MSFT", "15000"),
                    buy("AAPL", "9000", urgency="HIGH"), {"symbol": "GLD", "action": "HOLD"})
    ledger = SqlLedger(default_ledger_url(home))

    async def main() -> ExecutionResult:
        async with Executor(sim, ledger=ledger) as executor:
            result = await executor.execute_rebalance_plan(the_plan)
            if markouts:
                await asyncio.sleep(MARKOUT_LINGER)  # virtual time: free
            return result

    try:
        return run_virtual(main())
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "home"
    result = record_plan(path)
    assert result.success
    return path


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(make_app(), ["report", *args],
                                env={"TRIMTAB_HOME": str(home), "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_the_terminal_summary(home: Path) -> None:
    code, out, _ = cli(home, PLAN_ID)
    assert code == 0
    assert f"plan {PLAN_ID}: SUCCESS" in out
    for text in ("arrival cost", "shortfall", "spread capture", "markout 60 s", "time to fill p95",
                 "IBM", "XOM", "MSFT", "AAPL", "GLD not traded: HOLD: nothing to trade"):
        assert text in out, text


def test_json_has_every_metric(home: Path) -> None:
    code, out, _ = cli(home, PLAN_ID, "--json")
    assert code == 0
    payload = json.loads(out)
    total = payload["total"]
    for key in ("arrival_cost_bps", "shortfall_bps", "delay_bps", "execution_bps", "opportunity_bps",
                "spread_capture", "markouts_bps", "fill_rate", "passive_share", "time_to_fill_p50",
                "time_to_fill_p95", "orders_sent"):
        assert key in total, key
    assert total["fill_rate"] == "1.0000"
    assert set(total["markouts_bps"]) == {"1", "10", "60"}
    assert all(v is not None for v in total["markouts_bps"].values())
    assert payload["requests"] > 0
    assert {o["symbol"] for o in payload["orders"]} == {"IBM", "XOM", "MSFT", "AAPL"}
    assert [s["symbol"] for s in payload["skipped"]] == ["GLD"]


def test_html_report_is_written_and_self_contained(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    code, out, _ = cli(home, PLAN_ID, "--html", str(target))
    assert code == 0
    assert f"HTML report written to {target}" in out
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<svg class="chart"') >= 4 + 3  # one per order, plus the cost charts
    for needle in ("http://", "https://", "<link", "src="):
        occurrences = page.count(needle)
        # The only URL is the SVG namespace, which is a name, not a request.
        allowed = page.count("http://www.w3.org/2000/svg") if needle == "http://" else 0
        assert occurrences == allowed, needle
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left


def test_an_unknown_plan_is_a_usage_error(home: Path) -> None:
    code, _, err = cli(home, "no-such-plan")
    assert code == 2
    assert "no plan 'no-such-plan'" in err


def test_an_unwritable_html_path_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    code, _, err = cli(home, PLAN_ID, "--html", str(tmp_path / "missing-dir" / "r.html"))
    assert code == 2
    assert "cannot write the HTML report" in err


def test_markouts_without_recorded_quotes_are_reported_missing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    record_plan(home, "no-markouts", markouts=False)
    code, out, _ = cli(home, "no-markouts")
    assert code == 0
    assert "no quotes were recorded that long after the fills" in out

"""Crash recovery and unknown order outcomes: nothing is ever traded twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.exc import SQLAlchemyError

from tests.simkit import D, EventLog, broker, execute, plan, sell
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.errors import BrokerUnavailableError, UnknownOrderOutcomeError
from trimtab.domain.orders import OrderEventKind
from trimtab.engine.config import ExecutionConfig
from trimtab.ports.ledger import PlanState

PLAN = {
    "plan_id": "crash-1",
    "default_urgency": "LOW",
    "items": [
        {"symbol": "AAA", "action": "SELL", "target_weight": "0"},
        {"symbol": "BBB", "action": "SELL", "target_weight": "0"},
        {"symbol": "CCC", "action": "BUY", "trade_amount": "3000"},
    ],
}
ACCOUNT = {
    "cash": "1000",
    "positions": {"AAA": "6000", "BBB": "5000"},
    "assets": {"CCC": {"fractionable": False}},
}


def _start(home: Path, files: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TRIMTAB_HOME": str(home), "TRIMTAB_LEASE_TTL": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "trimtab", "run", str(files / "plan.json"), "--json", "--seed", "5", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(home: Path, files: Path, *extra: str) -> tuple[int, str, str]:
    process = _start(home, files, *extra)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _positions(home: Path) -> dict[str, str]:
    state = json.loads((home / "sim-account.json").read_text())
    return {k: v["qty"] for k, v in state["positions"].items() if Decimal(v["qty"]) != 0}


def _wait_for_sell_fills(home: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if (home / "ledger.sqlite3").exists():
            with SqlLedger(default_ledger_url(home), migrate=False) as ledger:
                try:
                    state = ledger.plan_state("crash-1")
                    fills = ledger.fills("crash-1") if state is PlanState.SELLING else []
                except SQLAlchemyError:  # the schema may not exist yet
                    state, fills = None, []
            if state is PlanState.SELLING and fills:
                return
        time.sleep(0.02)
    raise AssertionError("the sell phase never showed a fill")


@pytest.mark.slow
def test_sigkill_mid_sell_phase_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "plan.json").write_text(json.dumps(PLAN))
    (files / "account.json").write_text(json.dumps(ACCOUNT))

    clean = tmp_path / "clean"
    code, _, err = _run(clean, files, "--account", str(files / "account.json"))
    assert code == 0, err
    expected = _positions(clean)

    crashed = tmp_path / "crashed"
    victim = _start(crashed, files, "--account", str(files / "account.json"), "--speed", "8")
    try:
        _wait_for_sell_fills(crashed, victim)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    with SqlLedger(default_ledger_url(crashed)) as ledger:
        assert ledger.plan_state("crash-1") is PlanState.SELLING
        intents_before = len(ledger.intents("crash-1"))
    assert intents_before >= 1
    interrupted = _positions(crashed)
    assert interrupted != expected  # it really stopped half-way

    time.sleep(1.2)  # the dead process's lease runs out
    code, out, err = _run(crashed, files)
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "SUCCESS"
    assert _positions(crashed) == expected

    with SqlLedger(default_ledger_url(crashed)) as ledger:
        intents = ledger.intents("crash-1")
        fills = ledger.fills("crash-1")
        assert ledger.plan_state("crash-1") is PlanState.DONE
    cids = [i.client_order_id for i in intents]
    assert len(cids) == len(set(cids))
    broker_cids = Counter(
        o["client_order_id"] for o in json.loads((crashed / "sim-account.json").read_text())["orders"]
    )
    assert all(count == 1 for count in broker_cids.values()), broker_cids
    first_qty: dict[str, Decimal] = {}
    for intent in intents:
        first_qty.setdefault(intent.symbol, intent.qty)
    filled: Counter[str] = Counter()
    for fill in fills:
        filled[fill.symbol] += fill.qty  # type: ignore[assignment]
    for symbol, qty in filled.items():
        assert qty <= first_qty[symbol], (symbol, qty, first_qty[symbol])
    by = {o["symbol"]: o for o in result["orders"]}
    assert by["AAA"]["filled_shares"] == "6000"
    assert by["BBB"]["filled_shares"] == "5000"


@pytest.mark.parametrize("error", [UnknownOrderOutcomeError("timed out"), BrokerUnavailableError("504")])
def test_a_submission_whose_answer_is_lost_is_adopted_not_duplicated(error: Exception) -> None:
    sim = broker(positions={"AAA": "40"})
    log = EventLog(sim)
    sim.fail_next("submit_order", error, applied=True)  # type: ignore[arg-type]
    result = execute(sim, plan("lost", sell("AAA")), ExecutionConfig(algo="market"))
    order = result.orders[0]
    assert order.success
    assert order.filled_shares == D(40)
    accepted = [e for e in log.events if e.kind is OrderEventKind.ACCEPTED]
    assert len(accepted) == 1
    assert len(order.attempts) == 1


def test_a_submission_that_never_reached_the_broker_is_resent_under_the_same_id() -> None:
    sim = broker(positions={"AAA": "40"})
    sim.fail_next("submit_order", BrokerUnavailableError("connection reset"), applied=False)
    result = execute(sim, plan("resend", sell("AAA")), ExecutionConfig(algo="market"))
    order = result.orders[0]
    assert order.success
    assert order.client_order_id is not None
    assert order.client_order_id.endswith("-AAA-0")


def test_resume_in_process_after_an_interruption(tmp_path: Path) -> None:
    """A run cancelled mid-sell leaves its lease released; the next executor resumes it."""
    url = default_ledger_url(tmp_path)
    sim = broker(positions={"AAA": "3000"})
    the_plan = plan("resume", sell("AAA"), default_urgency="LOW")

    async def interrupted() -> None:
        import asyncio

        from trimtab.engine.executor import Executor

        with SqlLedger(url) as ledger:
            executor = Executor(sim, ExecutionConfig(), ledger=ledger, owner="first")
            await executor.start()
            sim.force_quote("AAA", D("30.00"), D("30.02"), D(500), D(500))
            run = asyncio.create_task(executor.execute_rebalance_plan(the_plan))
            await asyncio.sleep(2)
            sim.inject_trade("AAA", 700, at="ask")
            await asyncio.sleep(2)
            await executor.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await run

    state = tmp_path / "sim.json"

    async def save_after() -> None:
        await interrupted()
        sim.save(state)

    run_virtual(save_after())
    with SqlLedger(url) as ledger:
        assert ledger.plan_state("resume") is PlanState.SELLING
        assert sum(f.qty for f in ledger.fills("resume")) > 0

    again = SimBroker.load(state, seed=11)
    result = execute(again, the_plan, ExecutionConfig(), ledger=SqlLedger(url), owner="second")
    order = result.orders[0]
    assert order.success
    assert order.filled_shares == D(3000)
    assert order.attempts[0].filled_qty > 0  # the interrupted run's fill is counted
    cids = [a.client_order_id for a in order.attempts]
    assert len(cids) == len(set(cids))


def test_fills_learned_by_rest_are_in_the_ledger_too(tmp_path: Path) -> None:
    """With the order stream silent the executor learns the fill from a REST answer; the
    ledger must still hold it (the daily cap and reports count the ledger's fills)."""
    sim = broker(positions={"AAA": "40"})
    sim.silence_order_stream()
    ledger = SqlLedger(default_ledger_url(tmp_path))
    config = ExecutionConfig(algo="market", market_order_timeout=5, order_ack_timeout=2)
    result = execute(sim, plan("silent", sell("AAA")), config, ledger=ledger)
    order = result.orders[0]
    assert order.filled_shares == D(40)
    fills = ledger.fills("silent")
    assert sum((f.qty for f in fills), D(0)) == D(40)
    ledger.close()

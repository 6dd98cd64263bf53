"""trimtab report PLAN_ID: what an execution cost, in the terminal, as JSON or as an HTML page."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from trimtab.cli.common import ExitCode, console, fail, guard, open_ledger
from trimtab.tca import HORIZONS, PlanCosts, analyze, load_execution
from trimtab.tca.html import fmt_bps, fmt_money, fmt_pct, fmt_price, fmt_qty, fmt_seconds, render_html


def register(app: typer.Typer) -> None:
    """Add the report command to the app."""

    @app.command("report")
    def report_command(
        plan_id: Annotated[str, typer.Argument(help="The plan_id to report on.")],
        html: Annotated[
            Path | None,
            typer.Option("--html", help="Also write a self-contained HTML report (charts included) to FILE."),
        ] = None,
        json_output: Annotated[
            bool, typer.Option("--json", help="Print the cost metrics as JSON on stdout.")
        ] = False,
        ledger_url: Annotated[str | None, typer.Option("--ledger", help="Ledger database URL.")] = None,
    ) -> None:
        """Show what a plan's execution cost: arrival cost, shortfall, spread capture, markouts, fills."""

        def body() -> ExitCode:
            ledger = open_ledger(ledger_url)
            try:
                try:
                    record = load_execution(ledger, plan_id)
                except LookupError:
                    return fail(f"no plan {plan_id!r} in the ledger", ExitCode.INVALID)
            finally:
                ledger.close()
            costs = analyze(record)
            if html is not None:
                try:
                    _write_atomic(html, render_html(record, costs))
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    return fail(f"cannot write the HTML report to {html}: {reason}", ExitCode.INVALID)
            if json_output:
                sys.stdout.write(json.dumps(costs.to_json(), indent=2) + "\n")
                return ExitCode.OK
            _print_summary(costs)
            if html is not None:
                console.print(f"HTML report written to {html}", markup=False, highlight=False)
            return ExitCode.OK

        raise typer.Exit(int(guard(body)))


def _write_atomic(path: Path, text: str) -> None:
    """Write text to path whole or not at all (temporary file, then rename)."""
    target = path.expanduser()
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _print_summary(costs: PlanCosts) -> None:
    when = ""
    if costs.started_at is not None:
        when = f", started {costs.started_at.isoformat(timespec='seconds')}"
        if costs.duration_seconds is not None:
            when += f", took {fmt_seconds(costs.duration_seconds)}"
    console.print(
        f"plan {costs.plan_id}: {costs.status or 'unfinished'}{when}; "
        f"{costs.total.orders_sent} orders sent"
        + (f", {costs.requests} broker requests" if costs.requests is not None else ""),
        markup=False,
        highlight=False,
    )
    summary = Table(title="Costs (notional-weighted; positive bp is a cost)", title_justify="left")
    summary.add_column("metric")
    for name in ("all", "sells", "buys"):
        summary.add_column(name, justify="right")
    groups = (costs.total, costs.sells, costs.buys)
    rows: list[tuple[str, list[str]]] = [
        ("orders (completed)", [f"{g.orders} ({g.completed})" for g in groups]),
        ("filled notional", [fmt_money(g.filled_notional) for g in groups]),
        ("fill rate", [fmt_pct(g.fill_rate) for g in groups]),
        ("arrival cost", [fmt_bps(g.arrival_cost_bps) for g in groups]),
        ("arrival cost $", [fmt_money(g.arrival_cost) for g in groups]),
        ("shortfall", [fmt_bps(g.shortfall_bps) for g in groups]),
        ("  delay", [fmt_bps(g.delay_bps) for g in groups]),
        ("  execution", [fmt_bps(g.execution_bps) for g in groups]),
        ("  opportunity", [fmt_bps(g.opportunity_bps) for g in groups]),
        ("spread capture", [fmt_pct(g.spread_capture) for g in groups]),
        ("passive share", [fmt_pct(g.passive_share) for g in groups]),
        *((f"markout {h} s", [fmt_bps(g.markouts_bps.get(h)) for g in groups]) for h in HORIZONS),
        ("time to fill p50", [fmt_seconds(g.time_to_fill_p50) for g in groups]),
        ("time to fill p95", [fmt_seconds(g.time_to_fill_p95) for g in groups]),
    ]
    for label, values in rows:
        summary.add_row(label, *values)
    console.print(summary)
    orders = Table(title="Orders", title_justify="left")
    for column in (
        "symbol",
        "side",
        "status",
        "filled",
        "avg price",
        "arrival cost",
        "shortfall",
        "capture",
        *(f"mo {h}s" for h in HORIZONS),
        "to fill",
        "sent",
    ):
        orders.add_column(column, justify="left" if column in ("symbol", "side", "status") else "right")
    for o in costs.orders:
        orders.add_row(
            o.symbol,
            o.side.value,
            o.status,
            f"{fmt_qty(o.filled_qty)}/{fmt_qty(o.requested_qty)}",
            fmt_price(o.avg_price),
            fmt_bps(o.arrival_cost_bps),
            fmt_bps(o.shortfall_bps),
            fmt_pct(o.spread_capture),
            *(fmt_bps(o.markouts_bps.get(h)) for h in HORIZONS),
            fmt_seconds(o.time_to_fill),
            str(o.orders_sent),
        )
    console.print(orders)
    for item in costs.skipped:
        console.print(f"{item.symbol} not traded: {item.reason}", markup=False, highlight=False)
    missing = [h for h in HORIZONS if costs.total.markouts_bps.get(h) is None and costs.total.filled_notional]
    if missing:
        console.print(
            "markouts at "
            + ", ".join(f"{h} s" for h in missing)
            + ": no quotes were recorded that long after the fills (shown as -)",
            markup=False,
            highlight=False,
        )

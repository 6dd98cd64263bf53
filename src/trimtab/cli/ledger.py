"""trimtab ledger: list plans, show one plan's orders, attempts and fills, export JSON Lines."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from trimtab.adapters.ledger import export_jsonl
from trimtab.cli.common import ExitCode, console, fail, guard, open_ledger
from trimtab.domain.errors import PlanValidationError
from trimtab.ports.ledger import Ledger

_CENT = Decimal("0.01")


def register(app: typer.Typer) -> None:
    """Add the ledger command to the app."""

    @app.command("ledger")
    def ledger_command(
        args: Annotated[
            list[str] | None,
            typer.Argument(help="Nothing to list plans; PLAN_ID to show one; 'export DEST' to export."),
        ] = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
        limit: Annotated[int, typer.Option("--limit", help="How many plans to list (newest first).")] = 50,
        plan: Annotated[
            list[str] | None, typer.Option("--plan", help="Export (or show) only this plan_id; repeatable.")
        ] = None,
        ledger_url: Annotated[str | None, typer.Option("--ledger", help="Ledger database URL.")] = None,
    ) -> None:
        """Show what happened: plans with state and totals, one plan's orders and fills, or export."""

        def body() -> ExitCode:
            words = list(args or [])
            ledger = open_ledger(ledger_url)
            try:
                if words[:1] == ["export"]:
                    if len(words) != 2:
                        raise PlanValidationError(
                            "usage: trimtab ledger export DEST (a file or s3://bucket/prefix)"
                        )
                    return _export(ledger, words[1], plan)
                if len(words) > 1:
                    raise PlanValidationError("usage: trimtab ledger [PLAN_ID] | trimtab ledger export DEST")
                plan_id = words[0] if words else (plan[0] if plan else None)
                if plan_id is None:
                    return _list(ledger, limit, json_output)
                return _show(ledger, plan_id, json_output)
            finally:
                ledger.close()

        raise typer.Exit(int(guard(body)))


def _list(ledger: Ledger, limit: int, json_output: bool) -> ExitCode:
    plans = ledger.list_plans(limit)
    if json_output:
        rows = [
            {
                "plan_id": p.plan_id,
                "correlation_id": p.correlation_id,
                "state": p.state.value,
                "status": p.status,
                "created_at": p.created_at.isoformat(),
                "updated_at": p.updated_at.isoformat(),
                "orders": p.orders,
                "fills": p.fills,
                "filled_notional": str(p.filled_notional),
            }
            for p in plans
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return ExitCode.OK
    table = Table(title="Plans in the ledger (newest first)", title_justify="left")
    for column in ("plan_id", "state", "status", "updated", "orders", "fills", "filled notional"):
        table.add_column(
            column, justify="right" if column in ("orders", "fills", "filled notional") else "left"
        )
    for p in plans:
        table.add_row(
            p.plan_id,
            p.state.value,
            p.status or "-",
            p.updated_at.isoformat(timespec="seconds"),
            str(p.orders),
            str(p.fills),
            str(p.filled_notional.quantize(_CENT)),
        )
    console.print(table)
    if not plans:
        console.print("no plans yet", markup=False)
    return ExitCode.OK


def _show(ledger: Ledger, plan_id: str, json_output: bool) -> ExitCode:
    record = ledger.get_plan(plan_id)
    if record is None:
        return fail(f"no plan {plan_id!r} in the ledger", ExitCode.INVALID)
    intents = ledger.intents(plan_id)
    fills = ledger.fills(plan_id)
    orders = {o.client_order_id: o for o in ledger.orders(plan_id)}
    for event in ledger.events(plan_id):  # the latest state of each order
        orders[event.order.client_order_id] = event.order
    if json_output:
        payload: dict[str, Any] = {
            "plan_id": record.plan_id,
            "state": record.state.value,
            "status": record.status,
            "owner": record.owner,
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "intents": [
                {
                    "client_order_id": i.client_order_id,
                    "symbol": i.symbol,
                    "side": i.side.value,
                    "qty": str(i.qty),
                    "order_type": i.order_type.value,
                    "limit_price": None if i.limit_price is None else str(i.limit_price),
                    "step": i.step,
                    "time": i.time.isoformat(),
                    "bid": None if i.quote is None else str(i.quote.bid),
                    "ask": None if i.quote is None else str(i.quote.ask),
                    "status": orders[i.client_order_id].status.value if i.client_order_id in orders else None,
                }
                for i in intents
            ],
            "fills": [
                {
                    "client_order_id": f.client_order_id,
                    "symbol": f.symbol,
                    "side": f.side.value,
                    "qty": str(f.qty),
                    "price": str(f.price),
                    "time": f.time.isoformat(),
                }
                for f in fills
            ],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return ExitCode.OK
    console.print(
        f"plan {record.plan_id}: state {record.state.value}, status {record.status or '-'}, "
        f"updated {record.updated_at.isoformat(timespec='seconds')}",
        markup=False,
    )
    attempts = Table(title="Orders sent (attempts)", title_justify="left")
    for column in (
        "time",
        "symbol",
        "side",
        "step",
        "type",
        "qty",
        "limit",
        "bid",
        "ask",
        "client order id",
        "status",
    ):
        attempts.add_column(column, no_wrap=column != "client order id")
    for i in intents:
        snapshot = orders.get(i.client_order_id)
        attempts.add_row(
            i.time.isoformat(timespec="seconds"),
            i.symbol,
            i.side.value,
            str(i.step),
            i.order_type.value,
            str(i.qty),
            "-" if i.limit_price is None else str(i.limit_price),
            "-" if i.quote is None else str(i.quote.bid),
            "-" if i.quote is None else str(i.quote.ask),
            i.client_order_id,
            snapshot.status.value if snapshot else "-",
        )
    console.print(attempts)
    fill_table = Table(title="Fills", title_justify="left")
    for column in ("time", "symbol", "side", "qty", "price", "client order id"):
        fill_table.add_column(column)
    for f in fills:
        fill_table.add_row(
            f.time.isoformat(timespec="seconds"),
            f.symbol,
            f.side.value,
            str(f.qty),
            str(f.price),
            f.client_order_id,
        )
    console.print(fill_table)
    return ExitCode.OK


def _export(ledger: Ledger, destination: str, plan_ids: list[str] | None) -> ExitCode:
    try:
        summary = export_jsonl(ledger, destination, plan_ids=plan_ids)
    except (ValueError, LookupError) as exc:
        raise PlanValidationError(f"cannot export to {destination}: {exc}") from None
    except OSError as exc:
        return fail(f"export to {destination} failed: {exc}", ExitCode.INCOMPLETE)
    console.print(f"exported {summary.total} records to {summary.destination}", markup=False, highlight=False)
    return ExitCode.OK

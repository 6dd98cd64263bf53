"""Rich tables for results, previews and accounts."""

from __future__ import annotations

from decimal import Decimal

from rich.table import Table

from trimtab.domain.account import Account, Position
from trimtab.domain.results import ExecutionResult, OrderResult, PreviewResult


def _d(value: Decimal | None, places: str = "0.01") -> str:
    if value is None:
        return "-"
    return str(value.quantize(Decimal(places)))


def _qty(value: Decimal) -> str:
    if value != value.to_integral_value():
        value = value.quantize(Decimal("0.0001")) if abs(value) >= 1 else value
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _status(order: OrderResult) -> str:
    if order.action.value == "HOLD":
        return "hold"
    if order.skipped:
        return f"skipped: {order.skip_reason}"
    if order.success:
        return "filled"
    return f"failed: {order.error_message}"


def result_table(result: ExecutionResult) -> Table:
    table = Table(title=f"Plan {result.plan_id}: {result.status.value}", title_justify="left")
    for column in ("symbol", "side", "requested", "filled", "avg price", "arrival mid", "cost bps"):
        if column in ("symbol", "side"):
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=12)
    for order in result.orders:
        table.add_row(
            order.symbol,
            order.side or order.action.value.lower(),
            _qty(order.shares),
            _qty(order.filled_shares),
            _d(order.avg_fill_price),
            _d(order.arrival_mid, "0.0001"),
            _d(order.cost_bps),
            _status(order),
        )
    return table


def result_summary(result: ExecutionResult) -> str:
    lines = [
        f"status {result.status.value}; orders placed {result.orders_placed}, succeeded "
        f"{result.orders_succeeded}; traded value {result.total_trade_value}",
    ]
    if result.already_executed:
        lines.insert(0, f"plan {result.plan_id} was already executed; nothing was sent")
    if result.stats.buy_scale_factor is not None and result.stats.buy_scale_factor < 1:
        lines.append(f"buys scaled to {result.stats.buy_scale_factor} of plan to fit the buying power")
    if result.message:
        lines.append(result.message)
    lines.extend(result.warnings)
    return "\n".join(lines)


def preview_table(preview: PreviewResult) -> Table:
    table = Table(title=f"Dry run of plan {preview.plan_id} (nothing sent)", title_justify="left")
    for column in ("symbol", "side", "shares", "reference", "first limit", "notional"):
        if column in ("symbol", "side"):
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    table.add_column("note", overflow="fold", min_width=12)
    for order in preview.orders:
        note = order.skip_reason or "; ".join(order.notes) or ""
        table.add_row(
            order.symbol,
            order.side or order.action.value.lower(),
            _qty(order.shares),
            _d(order.reference_price),
            _d(order.first_limit_price),
            _d(order.estimated_notional),
            note,
        )
    return table


def account_table(account: Account, positions: dict[str, Position]) -> Table:
    table = Table(title="Account", title_justify="left")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("cash", _d(account.cash))
    table.add_row("buying power", _d(account.buying_power))
    table.add_row("portfolio value", _d(account.portfolio_value))
    for symbol in sorted(positions):
        table.add_row(f"position {symbol}", _qty(positions[symbol].qty))
    return table

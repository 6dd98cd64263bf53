"""The trimtab command line: parses, wires adapters to the engine, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, Progress, TextColumn

from trimtab.adapters.clock import SystemClock
from trimtab.adapters.sandbox import DEFAULT_PORT, sandbox_command
from trimtab.cli import ledger as ledger_commands
from trimtab.cli import planning, scale
from trimtab.cli import report as report_commands
from trimtab.cli.common import (
    AccountOpt,
    BrokerOpt,
    BrokerOptions,
    ExitCode,
    FreshOpt,
    JsonOpt,
    LedgerOpt,
    LiveOpt,
    MarkoutsOpt,
    SeedOpt,
    VerboseOpt,
    console,
    execute_plan,
    exit_code_of,
    guard,
    load_execution_config,
    open_broker,
    open_ledger,
    read_plan,
    run_async,
    setup_logging,
    trimtab_home,
    wait_for_markouts,
)
from trimtab.cli.render import account_table, preview_table, result_summary, result_table
from trimtab.domain.errors import ConfigurationError
from trimtab.domain.orders import OrderEvent
from trimtab.domain.results import ExecutionResult
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor
from trimtab.engine.risk import HALT_FLAG, RiskConfig

T = TypeVar("T")

app = typer.Typer(
    name="trimtab",
    help="Execute portfolio rebalance plans: sells first, fill-gated buys, smart limit orders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def run(
    plan: Annotated[Path, typer.Argument(help="The plan file: JSON, YAML or CSV.")],
    broker: BrokerOpt = "sim",
    json_output: JsonOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, size and price; send nothing.")
    ] = False,
    algo: Annotated[str | None, typer.Option("--algo", help="smart (default) or market.")] = None,
    urgency: Annotated[
        str | None, typer.Option("--urgency", help="Default urgency: LOW, NORMAL or HIGH.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="ExecutionConfig from a TOML file.")] = None,
    seed: SeedOpt = 0,
    account: AccountOpt = None,
    fresh: FreshOpt = False,
    ledger: LedgerOpt = None,
    live: LiveOpt = False,
    market: Annotated[
        str,
        typer.Option("--market", help="synthetic (default) or replay:PATH of recorded quotes and trades."),
    ] = "synthetic",
    start: Annotated[
        str | None, typer.Option("--start", help="HH:MM of the recorded day a replay starts at (09:45).")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", help="Pace the simulated market at N times real time (default: flat out)."),
    ] = None,
    markouts: MarkoutsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Execute a rebalance plan: sells, then buys sized from what the sells raised."""
    setup_logging(verbose)

    def body() -> ExitCode:
        if speed is not None and (speed <= 0 or broker != "sim"):
            raise ConfigurationError("--speed must be positive and applies to the simulated broker only")
        rebalance_plan = read_plan(plan)
        execution_config = load_execution_config(config, algo, urgency)
        risk_config = RiskConfig.load(config)
        options = BrokerOptions(
            broker=broker,
            seed=seed,
            account_file=account,
            fresh=fresh,
            persist=not dry_run,
            live=live,
            market=market,
            start=start,
        )
        if dry_run:
            preview = run_async(broker, lambda: _preview(options, execution_config, rebalance_plan))
            if json_output:
                sys.stdout.write(preview.model_dump_json(indent=2) + "\n")
            else:
                console.print(preview_table(preview))
            return ExitCode.OK
        result = run_async(
            broker,
            lambda: _execute(
                options,
                execution_config,
                rebalance_plan,
                show_progress=not json_output,
                ledger=ledger,
                risk=risk_config,
                markouts=wait_for_markouts(markouts, broker, speed),
            ),
            speed=speed,
        )
        if json_output:
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        else:
            console.print(result_table(result))
            console.print(result_summary(result), markup=False, highlight=False)
        return exit_code_of(result)

    raise typer.Exit(int(guard(body)))


async def _preview(options: BrokerOptions, config: ExecutionConfig, plan: Any) -> Any:
    async with open_broker(options) as broker, Executor(broker, config) as executor:
        return await executor.preview_rebalance_plan(plan)


async def _execute(
    options: BrokerOptions,
    config: ExecutionConfig,
    plan: Any,
    show_progress: bool,
    ledger: str | None,
    risk: RiskConfig,
    markouts: bool,
) -> ExecutionResult:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} events"),
        console=console,
        transient=True,
        disable=not (show_progress and console.is_terminal),
    )
    task = progress.add_task("executing", total=None)

    def on_event(event: OrderEvent) -> None:
        progress.update(task, advance=1, description=f"{event.order.symbol} {event.kind.value}")

    with progress:
        return await execute_plan(
            options, config, plan, ledger_option=ledger, on_event=on_event, risk=risk, markouts=markouts
        )


@app.command()
def account(
    broker: BrokerOpt = "sim",
    json_output: JsonOpt = False,
    seed: SeedOpt = 0,
    account_file: AccountOpt = None,
    fresh: FreshOpt = False,
    live: LiveOpt = False,
) -> None:
    """Show the broker's cash, buying power and positions."""

    def body() -> ExitCode:
        options = BrokerOptions(
            broker=broker, seed=seed, account_file=account_file, fresh=fresh, persist=False, live=live
        )

        async def fetch() -> tuple[Any, Any]:
            async with open_broker(options) as opened:
                await opened.start()
                try:
                    return await opened.get_account(), dict(await opened.get_positions())
                finally:
                    await opened.close()

        info, positions = run_async(broker, fetch)
        if json_output:
            payload = {
                "cash": str(info.cash),
                "buying_power": str(info.buying_power),
                "portfolio_value": str(info.portfolio_value),
                "positions": {s: str(p.qty) for s, p in sorted(positions.items())},
            }
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        else:
            console.print(account_table(info, positions))
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


@app.command()
def halt(
    reason: Annotated[str, typer.Option("--reason", help="Why trading stops (shown to every executor).")] = (
        "halted by an operator"
    ),
    ledger: LedgerOpt = None,
) -> None:
    """Kill switch: every executor on this ledger stops sending and cancels its open orders."""

    def body() -> ExitCode:
        store = open_ledger(ledger)
        try:
            store.set_flag(HALT_FLAG, reason.strip() or "halted by an operator", now=SystemClock().now())
        finally:
            store.close()
        console.print(f"trading halted: {reason}", markup=False, highlight=False)
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


@app.command()
def resume(ledger: LedgerOpt = None) -> None:
    """Clear the kill switch set by `trimtab halt`."""

    def body() -> ExitCode:
        store = open_ledger(ledger)
        try:
            was = store.get_flag(HALT_FLAG)
            store.clear_flag(HALT_FLAG)
        finally:
            store.close()
        console.print("trading resumed" if was is not None else "trading was not halted", markup=False)
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


@app.command()
def sandbox(
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (127.0.0.1 unless you mean otherwise).")
    ] = "127.0.0.1",
    accounts: Annotated[
        Path | None, typer.Option("--accounts", help="YAML/JSON file of accounts, one key pair each.")
    ] = None,
    account_file: AccountOpt = None,
    speed: Annotated[float, typer.Option("--speed", help="Market time runs N times faster.")] = 1.0,
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help="Inject a fault: submit-504:N, 429-burst:N, stream-silent, ..."),
    ] = None,
    seed: SeedOpt = 0,
    requests_per_minute: Annotated[
        int, typer.Option("--requests-per-minute", help="Request budget per account.")
    ] = 200,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the simulated exchange as an Alpaca-compatible API on localhost."""
    setup_logging(verbose)

    def body() -> ExitCode:
        sandbox_command(
            host=host,
            port=port,
            accounts_file=accounts,
            account_file=account_file,
            speed=speed,
            faults=fault or [],
            seed=seed,
            requests_per_minute=requests_per_minute,
            on_started=lambda url: console.print(f"sandbox listening on {url}", markup=False),
        )
        return ExitCode.OK

    raise typer.Exit(int(guard(body)))


@app.command()
def home() -> None:
    """Print the folder where trimtab keeps its state ($TRIMTAB_HOME)."""
    console.print(str(trimtab_home()), markup=False, highlight=False)


planning.register(app)
ledger_commands.register(app)
report_commands.register(app)
scale.register(app)


def main() -> None:
    """Entry point of the trimtab console script."""
    app()

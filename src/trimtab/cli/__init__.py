"""The trimtab command line: parses, wires adapters to the engine, prints."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, Progress, TextColumn

from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.cli import planning
from trimtab.cli.common import (
    BrokerOptions,
    ExitCode,
    console,
    fail,
    open_broker,
    read_plan,
    setup_logging,
    trimtab_home,
)
from trimtab.cli.render import account_table, preview_table, result_summary, result_table
from trimtab.domain.errors import (
    ConfigurationError,
    PlanValidationError,
    SafetyRefusalError,
)
from trimtab.domain.orders import OrderEvent
from trimtab.domain.plan import Urgency
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor

T = TypeVar("T")

app = typer.Typer(
    name="trimtab",
    help="Execute portfolio rebalance plans: sells first, fill-gated buys, smart limit orders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BrokerOpt = Annotated[str, typer.Option("--broker", help="sim (the simulated exchange) or alpaca.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the simulated market's random path.")]
AccountOpt = Annotated[
    Path | None, typer.Option("--account", help="Start the simulated account afresh from this JSON file.")
]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Start a fresh default simulated account.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log every state change on stderr.")]


def run_async(broker: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on virtual time for the simulated exchange, in real time otherwise."""
    if broker == "sim":
        return run_virtual(make())
    return asyncio.run(make())


def exit_code_of(result: ExecutionResult) -> ExitCode:
    if result.status in (ExecutionStatus.SUCCESS, ExecutionStatus.SUCCESS_WITH_SKIPS):
        return ExitCode.OK
    return ExitCode.INCOMPLETE


def guarded(action: Callable[[], ExitCode]) -> None:
    """Run a command body, mapping trimtab's errors to exit codes and one clear line."""
    try:
        code = action()
    except (PlanValidationError, ConfigurationError) as exc:
        code = fail(str(exc), ExitCode.INVALID)
    except SafetyRefusalError as exc:
        code = fail(str(exc), ExitCode.REFUSED)
    raise typer.Exit(int(code))


def load_config(config: Path | None, algo: str | None, urgency: str | None) -> ExecutionConfig:
    overrides: dict[str, Any] = {}
    if algo is not None:
        if algo not in ("smart", "market"):
            raise ConfigurationError(f"--algo must be smart or market, got {algo!r}")
        overrides["algo"] = algo
    if urgency is not None:
        try:
            overrides["default_urgency"] = Urgency(urgency.upper())
        except ValueError:
            raise ConfigurationError(f"--urgency must be LOW, NORMAL or HIGH, got {urgency!r}") from None
    return ExecutionConfig.load(config, overrides=overrides)


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
    verbose: VerboseOpt = False,
) -> None:
    """Execute a rebalance plan: sells, then buys sized from what the sells raised."""
    setup_logging(verbose)

    def body() -> ExitCode:
        rebalance_plan = read_plan(plan)
        execution_config = load_config(config, algo, urgency)
        options = BrokerOptions(
            broker=broker, seed=seed, account_file=account, fresh=fresh, persist=not dry_run
        )
        if dry_run:
            preview = run_async(broker, lambda: _preview(options, execution_config, rebalance_plan))
            if json_output:
                sys.stdout.write(preview.model_dump_json(indent=2) + "\n")
            else:
                console.print(preview_table(preview))
            return ExitCode.OK
        result = run_async(
            broker, lambda: _execute(options, execution_config, rebalance_plan, show_progress=not json_output)
        )
        if json_output:
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        else:
            console.print(result_table(result))
            console.print(result_summary(result), markup=False, highlight=False)
        return exit_code_of(result)

    guarded(body)


async def _preview(options: BrokerOptions, config: ExecutionConfig, plan: Any) -> Any:
    async with open_broker(options) as broker, Executor(broker, config) as executor:
        return await executor.preview_rebalance_plan(plan)


async def _execute(
    options: BrokerOptions, config: ExecutionConfig, plan: Any, show_progress: bool
) -> ExecutionResult:
    async with open_broker(options) as broker, Executor(broker, config) as executor:
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

        remove = broker.add_order_listener(on_event)
        try:
            with progress:
                return await executor.execute_rebalance_plan(plan)
        finally:
            remove()


@app.command()
def account(
    broker: BrokerOpt = "sim",
    json_output: JsonOpt = False,
    seed: SeedOpt = 0,
    account_file: AccountOpt = None,
    fresh: FreshOpt = False,
) -> None:
    """Show the broker's cash, buying power and positions."""

    def body() -> ExitCode:
        options = BrokerOptions(
            broker=broker, seed=seed, account_file=account_file, fresh=fresh, persist=False
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

    guarded(body)


@app.command()
def home() -> None:
    """Print the folder where trimtab keeps its state ($TRIMTAB_HOME)."""
    console.print(str(trimtab_home()), markup=False, highlight=False)


planning.register(app)


def main() -> None:
    """Entry point of the trimtab console script."""
    app()

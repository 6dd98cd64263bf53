"""`trimtab plan` and `trimtab rebalance`: from target weights to a plan, and to trades.

``trimtab plan TARGETS [-o plan.json] [--plan-id ID]`` reads the account and quotes from
the selected broker, computes the plan and writes it as JSON (decimals as strings) to
the file or to stdout; ``trimtab run`` executes such a file.

``trimtab rebalance TARGETS [--yes] [--dry-run] [--json]`` computes the plan the same
way, shows a preview (current and target weight, trade per symbol, totals, estimated
cost), asks for confirmation on a real broker (``--yes`` skips it; the simulated
exchange needs none) and executes it with the Executor, which is told to keep the
planner's cash reserve too. ``--dry-run`` stops after the preview (with ``--json`` it
prints the plan on stdout); ``--json`` prints the ExecutionResult on stdout and the
preview on stderr. Orders still open at the broker for the plan's symbols make
rebalance refuse (exit 3): a plan computed from positions cannot see them.

Planner options come from the ``[planner]`` table of ``--config FILE`` (the same TOML
file whose ``[execution]`` table configures the execution), overridden by flags.
Without ``--plan-id`` the plan id is ``plan-`` or ``rebalance-``, the trading day and a
digest of the trades, so running the same rebalance twice in a day is recognized by the
Executor as the same plan instead of trading twice.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from trimtab.cli.common import (
    AccountOpt,
    BrokerOpt,
    BrokerOptions,
    ExitCode,
    FreshOpt,
    MarkoutsOpt,
    SeedOpt,
    VerboseOpt,
    console,
    err_console,
    execute_plan,
    exit_code_of,
    guard,
    load_execution_config,
    open_broker,
    read_text,
    run_async,
    setup_logging,
    wait_for_markouts,
)
from trimtab.domain.errors import (
    ConfigurationError,
    PlanValidationError,
    SafetyRefusalError,
)
from trimtab.domain.money import ZERO, money
from trimtab.domain.plan import Action, RebalancePlan
from trimtab.domain.results import ExecutionResult
from trimtab.domain.targets import TargetWeights, parse_targets, targets_format_for
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.planner import (
    PlannerConfig,
    PlanningInputs,
    PlanProposal,
    gather_planning_inputs,
    plan_from_inputs,
)
from trimtab.engine.risk import RiskConfig
from trimtab.ports.quotes import QuoteFeed

T = TypeVar("T")

_PENDING_PLAN_ID = "pending"


# -- pieces ---------------------------------------------------------------------------


def read_targets(path: Path) -> TargetWeights:
    """Read and validate a targets file (CSV, JSON or YAML, by suffix)."""
    fmt = targets_format_for(path.name)
    return parse_targets(read_text(path, "targets"), fmt)


def load_planner_config(path: Path | None, overrides: dict[str, Any] | None = None) -> PlannerConfig:
    """PlannerConfig from the [planner] table of a TOML file, then flag overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigurationError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
        section = document.get("planner", {})
        if not isinstance(section, dict):
            raise ConfigurationError(f"config file {path}: [planner] must be a table")
        data.update(section)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    source = f"planner config in {path}" if path is not None else "planner config"
    return PlannerConfig.from_mapping(data, source=source)


def plan_json(plan: RebalancePlan) -> str:
    """The plan as the JSON of a plan file: decimals as strings, absent fields left out."""
    return json.dumps(plan.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


@dataclass(frozen=True, slots=True)
class Planned:
    """A proposal and the inputs it was computed from."""

    proposal: PlanProposal
    inputs: PlanningInputs
    planned_at: datetime


async def propose(
    options: BrokerOptions,
    targets: TargetWeights,
    config: PlannerConfig,
    *,
    plan_id: str | None,
    correlation_id: str | None,
    id_prefix: str,
    allow_open_orders: bool,
    home: Path | None = None,
) -> Planned:
    """Open the broker, read the account and quotes, and compute the plan."""
    async with open_broker(options, home) as broker:
        if not isinstance(broker, QuoteFeed):
            raise ConfigurationError(f"broker {options.broker} provides no quotes to plan from")
        await broker.start()
        try:
            inputs = await gather_planning_inputs(broker, broker, targets.weights, config)
            planned_at = broker.clock.now()
        finally:
            await broker.close()
    proposal = plan_from_inputs(
        targets,
        inputs,
        config,
        plan_id or _PENDING_PLAN_ID,
        correlation_id,
        allow_open_orders=allow_open_orders,
    )
    if plan_id is None:
        digest = proposal.content_digest()[:10]
        proposal = proposal.with_plan_id(f"{id_prefix}-{planned_at:%Y%m%d}-{digest}")
    return Planned(proposal, inputs, planned_at)


def _percent(weight: Decimal) -> str:
    return f"{weight * 100:.2f}%"


def _dollars(amount: Decimal) -> str:
    return f"{money(amount):,}"


def _signed(amount: Decimal) -> str:
    if amount == ZERO:
        return "0"
    return f"{'+' if amount > ZERO else '-'}{money(abs(amount)):,}"


def proposal_table(proposal: PlanProposal) -> Table:
    """The preview: per symbol, current and target weight, trade and action, with totals."""
    value = proposal.portfolio_value
    table = Table(
        title=f"Plan {proposal.plan_id}: portfolio {_dollars(value)}",
        title_justify="left",
    )
    for column in ("symbol", "price", "current", "target", "after", "trade", "action", "reason"):
        if column in ("symbol", "action", "reason"):
            table.add_column(column, justify="left", overflow="fold")
        else:
            table.add_column(column, justify="right", overflow="fold")
    for item in proposal.items:
        table.add_row(
            item.symbol,
            "-" if item.price is None else str(item.price),
            _percent(item.current_weight),
            _percent(item.target_portfolio_weight),
            _percent(item.projected_value / value),
            _signed(item.trade_amount),
            item.action.value,
            item.reason,
        )
    cash_after = proposal.projected_cash
    table.add_section()
    table.add_row(
        "cash",
        "",
        _percent(proposal.cash / value),
        f">={_percent(proposal.config.cash_reserve)}",
        _percent(cash_after / value),
        _signed(cash_after - proposal.cash),
        "",
        "",
    )
    return table


def proposal_summary(proposal: PlanProposal) -> str:
    """Totals, the estimated cost and the reserve, as plain lines."""
    config = proposal.config
    lines = [
        f"buys {_dollars(proposal.total_buys)}, sells {_dollars(proposal.total_sells)}, "
        f"turnover {_dollars(proposal.turnover)} ({_percent(proposal.turnover_fraction)} "
        "of the portfolio)",
        f"estimated cost {_dollars(proposal.estimated_cost)} "
        f"({proposal.estimated_cost_bps} bps of turnover, half the quoted spread)",
        f"cash {_dollars(proposal.cash)} -> {_dollars(proposal.projected_cash)}, "
        f"reserve {_dollars(proposal.reserve_amount)}",
    ]
    if config.cash_reserve > ZERO:
        lines.append(
            f"target weights are of the investable {_percent(1 - config.cash_reserve)}: "
            "the target column shows them as weights of the whole portfolio"
        )
    lines.extend(f"warning: {warning}" for warning in proposal.warnings)
    return "\n".join(lines)


def _print_plain(text: str, *, stderr: bool = False) -> None:
    (err_console if stderr else console).print(text, markup=False, highlight=False, soft_wrap=True)


# -- the commands as functions --------------------------------------------------------


def plan_command(
    targets: Path,
    *,
    output: Path | None = None,
    plan_id: str | None = None,
    correlation_id: str | None = None,
    broker_options: BrokerOptions | None = None,
    planner_config: PlannerConfig | None = None,
    home: Path | None = None,
) -> ExitCode:
    """Compute a plan from a targets file and write it as JSON to output or stdout."""

    def body() -> ExitCode:
        target_weights = read_targets(targets)
        options = broker_options or BrokerOptions(persist=False)
        config = planner_config or PlannerConfig()
        planned = run_async(
            options.broker,
            lambda: propose(
                options,
                target_weights,
                config,
                plan_id=plan_id,
                correlation_id=correlation_id,
                id_prefix="plan",
                allow_open_orders=True,
                home=home,
            ),
        )
        proposal = planned.proposal
        text = plan_json(proposal.plan)
        if output is None:
            sys.stdout.write(text)
        else:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise PlanValidationError(f"cannot write the plan to {output}: {exc.strerror}") from None
            _print_plain(
                f"wrote plan {proposal.plan_id} to {output}: {len(proposal.trading_items)} "
                f"trades, turnover {_dollars(proposal.turnover)}",
                stderr=True,
            )
        if planned.inputs.open_orders:
            symbols = sorted({order.symbol for order in planned.inputs.open_orders})
            _print_plain(
                "warning: orders are still open at the broker for "
                + ", ".join(symbols)
                + "; the plan does not account for them",
                stderr=True,
            )
        for warning in proposal.warnings:
            _print_plain(f"warning: {warning}", stderr=True)
        return ExitCode.OK

    return guard(body)


def rebalance_command(
    targets: Path,
    *,
    yes: bool = False,
    dry_run: bool = False,
    json_output: bool = False,
    plan_id: str | None = None,
    correlation_id: str | None = None,
    broker_options: BrokerOptions | None = None,
    planner_config: PlannerConfig | None = None,
    execution_config: ExecutionConfig | None = None,
    risk_config: RiskConfig | None = None,
    home: Path | None = None,
    confirm: Callable[[str], bool] | None = None,
    markouts: bool | None = None,
) -> ExitCode:
    """Compute the plan, preview it, confirm on a real broker, and execute it."""

    def body() -> ExitCode:
        target_weights = read_targets(targets)
        options = broker_options or BrokerOptions()
        config = planner_config or PlannerConfig()
        exec_config = execution_config or ExecutionConfig()
        planning_options = BrokerOptions(
            broker=options.broker,
            seed=options.seed,
            account_file=options.account_file,
            fresh=options.fresh,
            persist=False,
            live=options.live,
        )
        planned = run_async(
            options.broker,
            lambda: propose(
                planning_options,
                target_weights,
                config,
                plan_id=plan_id,
                correlation_id=correlation_id,
                id_prefix="rebalance",
                allow_open_orders=False,
                home=home,
            ),
        )
        proposal = planned.proposal
        stderr = json_output
        (err_console if stderr else console).print(proposal_table(proposal))
        _print_plain(proposal_summary(proposal), stderr=stderr)
        if dry_run:
            _print_plain("dry run: nothing sent", stderr=stderr)
            if json_output:
                sys.stdout.write(plan_json(proposal.plan))
            return ExitCode.OK
        if not proposal.trading_items:
            _print_plain("nothing to trade", stderr=stderr)
            if not json_output:
                return ExitCode.OK
            # With --json, run the all-HOLD plan anyway (it sends nothing) for its result.
        else:
            confirm_execution(proposal, options.broker, yes=yes, confirm=confirm)
        # The executor sizes buys from the buying power it really finds after the sells;
        # hand it the planner's reserve so that it, too, keeps that much cash.
        reserve = money(proposal.reserve_amount)
        if reserve > exec_config.cash_reserve:
            exec_config = exec_config.model_copy(update={"cash_reserve": reserve})
        wait = wait_for_markouts(markouts, options.broker, None)
        result = run_async(
            options.broker, lambda: _execute(options, exec_config, proposal.plan, home, risk_config, wait)
        )
        if json_output:
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        else:
            _print_plain(_result_line(result))
        return exit_code_of(result)

    return guard(body)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise SafetyRefusalError(
            "trading on a real broker needs confirmation: run in a terminal or pass --yes"
        )
    return typer.confirm(question, default=False, err=True)


def confirm_execution(
    proposal: PlanProposal,
    broker: str,
    *,
    yes: bool,
    confirm: Callable[[str], bool] | None = None,
) -> None:
    """Ask before trading on a real broker (not the simulated one, not with --yes).

    Raises SafetyRefusalError when the answer is no or nobody can answer (no terminal).
    """
    if broker == "sim" or yes:
        return
    question = (
        f"Execute plan {proposal.plan_id} on {broker}: {len(proposal.trading_items)} trades, "
        f"turnover {_dollars(proposal.turnover)}?"
    )
    if not (confirm or _ask)(question):
        raise SafetyRefusalError("not confirmed: nothing was sent")


async def _execute(
    options: BrokerOptions,
    config: ExecutionConfig,
    plan: RebalancePlan,
    home: Path | None,
    risk: RiskConfig | None,
    markouts: bool,
) -> ExecutionResult:
    return await execute_plan(options, config, plan, home=home, risk=risk, markouts=markouts)


def _result_line(result: ExecutionResult) -> str:
    filled = sum(
        1
        for order in result.orders
        if order.action is not Action.HOLD and order.success and not order.skipped
    )
    lines = [
        f"plan {result.plan_id}: {result.status.value}; {filled} of "
        f"{sum(1 for o in result.orders if o.action is not Action.HOLD)} trades filled, "
        f"traded value {_dollars(result.total_trade_value)}"
    ]
    if result.already_executed:
        lines.insert(0, f"plan {result.plan_id} was already executed; nothing was sent")
    for order in result.orders:
        if order.action is Action.HOLD:
            continue
        if order.skipped:
            lines.append(f"  {order.symbol}: skipped: {order.skip_reason}")
        elif not order.success:
            lines.append(f"  {order.symbol}: failed: {order.error_message}")
    if result.message:
        lines.append(result.message)
    lines.extend(result.warnings)
    return "\n".join(lines)


# -- Typer wiring ---------------------------------------------------------------------

TargetsArg = Annotated[Path, typer.Argument(help="Target weights: a .csv, .json or .yaml file.")]
PlanIdOpt = Annotated[
    str | None, typer.Option("--plan-id", help="The plan id (default: derived from day and trades).")
]
CorrelationOpt = Annotated[str | None, typer.Option("--correlation-id", help="Free text kept with the plan.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file with planner and execution tables."),
]
ReserveOpt = Annotated[
    str | None, typer.Option("--cash-reserve", help="Fraction of the portfolio kept in cash (0.02).")
]
BandOpt = Annotated[
    str | None, typer.Option("--drift-band", help="Absolute drift band in weight points (0.05).")
]
RelBandOpt = Annotated[
    str | None,
    typer.Option("--drift-band-relative", help="Drift band as a fraction of the target (0.25)."),
]
MinTradeOpt = Annotated[
    str | None, typer.Option("--min-trade", help="Smallest trade in dollars; smaller ones HOLD.")
]
WholeOpt = Annotated[
    bool | None,
    typer.Option("--whole-shares/--fractional-shares", help="Round trades to whole shares."),
]


def _overrides(
    cash_reserve: str | None,
    drift_band: str | None,
    drift_band_relative: str | None,
    min_trade: str | None,
    whole_shares: bool | None,
) -> dict[str, Any]:
    return {
        "cash_reserve": cash_reserve,
        "drift_band_absolute": drift_band,
        "drift_band_relative": drift_band_relative,
        "min_trade_notional": min_trade,
        "whole_shares": whole_shares,
    }


def register(app: typer.Typer) -> None:
    """Add the plan and rebalance commands to the trimtab app."""

    @app.command("plan")
    def plan(
        targets: TargetsArg,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write the plan here (default: stdout).")
        ] = None,
        plan_id: PlanIdOpt = None,
        correlation_id: CorrelationOpt = None,
        broker: BrokerOpt = "sim",
        seed: SeedOpt = 0,
        account: AccountOpt = None,
        fresh: FreshOpt = False,
        config: ConfigOpt = None,
        cash_reserve: ReserveOpt = None,
        drift_band: BandOpt = None,
        drift_band_relative: RelBandOpt = None,
        min_trade: MinTradeOpt = None,
        whole_shares: WholeOpt = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """Compute a plan from target weights and the account; write it as JSON."""
        setup_logging(verbose)

        def body() -> ExitCode:
            planner_config = load_planner_config(
                config,
                _overrides(cash_reserve, drift_band, drift_band_relative, min_trade, whole_shares),
            )
            return plan_command(
                targets,
                output=output,
                plan_id=plan_id,
                correlation_id=correlation_id,
                broker_options=BrokerOptions(
                    broker=broker, seed=seed, account_file=account, fresh=fresh, persist=False
                ),
                planner_config=planner_config,
            )

        raise typer.Exit(int(guard(body)))

    @app.command("rebalance")
    def rebalance(
        targets: TargetsArg,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Stop after the preview; send nothing.")
        ] = False,
        json_output: Annotated[
            bool, typer.Option("--json", help="Print the ExecutionResult as JSON on stdout.")
        ] = False,
        plan_id: PlanIdOpt = None,
        correlation_id: CorrelationOpt = None,
        broker: BrokerOpt = "sim",
        seed: SeedOpt = 0,
        account: AccountOpt = None,
        fresh: FreshOpt = False,
        config: ConfigOpt = None,
        live: Annotated[
            bool, typer.Option("--live", help="Trade the live Alpaca account (paper is the default).")
        ] = False,
        algo: Annotated[str | None, typer.Option("--algo", help="smart (default) or market.")] = None,
        urgency: Annotated[
            str | None, typer.Option("--urgency", help="Default urgency: LOW, NORMAL or HIGH.")
        ] = None,
        cash_reserve: ReserveOpt = None,
        drift_band: BandOpt = None,
        drift_band_relative: RelBandOpt = None,
        min_trade: MinTradeOpt = None,
        whole_shares: WholeOpt = None,
        markouts: MarkoutsOpt = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """Compute a plan from target weights, preview it, confirm, and execute it."""
        setup_logging(verbose)

        def body() -> ExitCode:
            planner_config = load_planner_config(
                config,
                _overrides(cash_reserve, drift_band, drift_band_relative, min_trade, whole_shares),
            )
            execution_config = load_execution_config(config, algo, urgency)
            return rebalance_command(
                targets,
                yes=yes,
                dry_run=dry_run,
                json_output=json_output,
                plan_id=plan_id,
                correlation_id=correlation_id,
                broker_options=BrokerOptions(
                    broker=broker,
                    seed=seed,
                    account_file=account,
                    fresh=fresh,
                    persist=not dry_run,
                    live=live,
                ),
                planner_config=planner_config,
                execution_config=execution_config,
                risk_config=RiskConfig.load(config),
                markouts=markouts,
            )

        raise typer.Exit(int(guard(body)))

"""Shared pieces of the command line: home folder, exit codes, files, brokers, output."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console

from trimtab.adapters.alpaca import AlpacaBroker
from trimtab.adapters.clock import SystemClock
from trimtab.adapters.ledger import SqlLedger, default_ledger_url
from trimtab.adapters.sim import SimBroker
from trimtab.adapters.sim.replay import replay_market
from trimtab.adapters.sim.virtual_loop import run_virtual
from trimtab.domain.errors import ConfigurationError, LeaseLostError, PlanValidationError, SafetyRefusalError
from trimtab.domain.orders import OrderEvent, OrderEventKind
from trimtab.domain.plan import RebalancePlan, Urgency
from trimtab.domain.planfile import format_of, parse_plan_text
from trimtab.domain.results import ExecutionResult, ExecutionStatus
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.executor import Executor
from trimtab.engine.risk import RiskConfig
from trimtab.ports.broker import Broker

T = TypeVar("T")

# Options shared by the commands.
BrokerOpt = Annotated[str, typer.Option("--broker", help="sim (the simulated exchange) or alpaca.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the simulated market's random path.")]
AccountOpt = Annotated[
    Path | None, typer.Option("--account", help="Start the simulated account afresh from this JSON file.")
]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Start a fresh default simulated account.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger", help="Ledger database URL (default: SQLite under $TRIMTAB_HOME; or $TRIMTAB_LEDGER_URL)."
    ),
]
LiveOpt = Annotated[
    bool, typer.Option("--live", help="Trade the live Alpaca account (paper is the default).")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log every state change on stderr.")]
MarkoutsOpt = Annotated[
    bool | None,
    typer.Option(
        "--markouts/--no-markouts",
        help="After the plan, record the market a minute past its last fills for the report's "
        "markouts (default: on for the simulated exchange on virtual time, off on real time).",
    ),
]


def _console(stderr: bool) -> Console:
    # Tables stay readable when output goes to a file or a pipe: no 80-column wrap.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, width=width)


console = _console(stderr=False)
err_console = _console(stderr=True)


class ExitCode(IntEnum):
    OK = 0
    INCOMPLETE = 1
    INVALID = 2
    REFUSED = 3


def trimtab_home() -> Path:
    """$TRIMTAB_HOME, else the user's data directory (XDG_DATA_HOME or ~/.local/share)."""
    configured = os.environ.get("TRIMTAB_HOME")
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "trimtab"


def sim_state_path(home: Path) -> Path:
    return home / "sim-account.json"


def read_text(path: Path, what: str) -> str:
    """Read a user file, turning every failure into one clear PlanValidationError line."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanValidationError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise PlanValidationError(f"{what} path is a directory, not a file: {path}") from None
    except UnicodeDecodeError:
        raise PlanValidationError(f"{what} file is not UTF-8 text: {path}") from None
    except OSError as exc:
        raise PlanValidationError(f"cannot read {what} file {path}: {exc.strerror}") from None


def read_plan(path: Path) -> RebalancePlan:
    """Read and validate a plan file (JSON, YAML or CSV, by extension)."""
    fmt = format_of(path.name)
    return parse_plan_text(read_text(path, "plan"), fmt)


@dataclass(frozen=True)
class BrokerOptions:
    broker: str = "sim"
    seed: int = 0
    account_file: Path | None = None
    fresh: bool = False
    persist: bool = True
    live: bool = False
    market: str = "synthetic"
    start: str | None = None


def sim_market_date() -> date:
    """The simulated market's trading day: today's date by the system clock."""
    return SystemClock().now().date()


def make_sim_broker(options: BrokerOptions, home: Path) -> SimBroker:
    """The simulated broker: from --account, fresh, or the account persisted under home."""
    state = sim_state_path(home)
    try:
        replay = replay_market(options.market, options.start)
    except (ValueError, OSError) as exc:
        raise PlanValidationError(f"--market {options.market}: {exc}") from None
    if replay is not None:
        # A replay is a recorded day: it starts from --account (or a fresh account) and is
        # not saved into the persistent simulated account.
        if options.account_file is None:
            return SimBroker(seed=options.seed, replay=replay)
        try:
            return SimBroker.from_account_text(
                read_text(options.account_file, "account"), seed=options.seed, replay=replay
            )
        except ValueError as exc:
            raise PlanValidationError(f"invalid account file {options.account_file}: {exc}") from None
    day = sim_market_date()
    if options.account_file is not None:
        text = read_text(options.account_file, "account")
        try:
            return SimBroker.from_account_text(text, seed=options.seed, market_date=day)
        except ValueError as exc:
            raise PlanValidationError(f"invalid account file {options.account_file}: {exc}") from None
    if options.fresh or not state.exists():
        return SimBroker(seed=options.seed, market_date=day)
    try:
        return SimBroker.load(state, seed=options.seed, market_date=day)
    except ValueError as exc:
        raise ConfigurationError(
            f"the simulated account in {state} is unreadable ({exc}); start afresh with --fresh"
        ) from None


@asynccontextmanager
async def open_broker(options: BrokerOptions, home: Path | None = None) -> AsyncIterator[Broker]:
    """Open the selected broker.

    The simulated account is one process's at a time (a lock file beside it; another
    process is refused), saved as its orders fill and when the block ends.
    """
    home = home or trimtab_home()
    if options.broker == "alpaca":
        # Credentials come from APCA_* variables; paper unless --live. No I/O here: the
        # Executor (or the caller) starts and closes it.
        yield AlpacaBroker.from_environment(live=options.live)
        return
    if options.broker != "sim":
        raise ConfigurationError(f"unknown broker {options.broker!r}: choose sim or alpaca")
    if options.live:
        raise ConfigurationError("--live applies to --broker alpaca only")
    if not options.persist or options.market != "synthetic":
        yield make_sim_broker(options, home)
        return
    with sim_account_lock(home):
        broker = make_sim_broker(options, home)
        state = sim_state_path(home)
        changed = options.fresh or options.account_file is not None or not state.exists()

        def save_on_change(event: OrderEvent) -> None:
            # The simulated account is the broker's own record: keep it as durable as a real
            # broker's, so a process killed mid-plan leaves the account as it really is.
            nonlocal changed
            changed = True
            if event.kind in _DURABLE_EVENTS:
                broker.save(state)

        remove = broker.add_order_listener(save_on_change)
        try:
            yield broker
        finally:
            remove()
            if changed:
                broker.save(state)


@contextmanager
def sim_account_lock(home: Path) -> Iterator[None]:
    """Hold the simulated account for this process, or refuse if another one holds it."""
    home.mkdir(parents=True, exist_ok=True)
    handle = (home / "sim-account.lock").open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SafetyRefusalError(
                f"the simulated account in {home} is in use by another trimtab process; nothing was sent"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


_DURABLE_EVENTS = frozenset(
    {
        OrderEventKind.FILL,
        OrderEventKind.PARTIAL_FILL,
        OrderEventKind.CANCELED,
        OrderEventKind.REJECTED,
        OrderEventKind.EXPIRED,
        OrderEventKind.REPLACED,
    }
)


def ledger_url(option: str | None, home: Path) -> str:
    """--ledger, else $TRIMTAB_LEDGER_URL, else SQLite under the home folder."""
    return option or os.environ.get("TRIMTAB_LEDGER_URL") or default_ledger_url(home)


def open_ledger(option: str | None, home: Path | None = None) -> SqlLedger:
    """The ledger the CLI records into (created and migrated on first use)."""
    home = home or trimtab_home()
    url = ledger_url(option, home)
    if url.startswith("sqlite"):
        home.mkdir(parents=True, exist_ok=True)
    return SqlLedger(url)


def process_owner() -> str:
    """This process's name in the ledger's leases: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class CliHandler(logging.StreamHandler[TextIO]):
    """The command line's log handler (a distinct class so it is installed once).

    It writes to whatever sys.stderr is when a line is logged, not the one it was made
    with: a command run in-process (a test's runner swapping the streams) never writes to a
    stream closed since.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current sys.stderr."""


def setup_logging(verbose: bool) -> None:
    """Plain one-line logs on stderr; INFO with --verbose, WARNING otherwise."""
    root = logging.getLogger("trimtab")
    if not any(isinstance(h, CliHandler) for h in root.handlers):
        handler = CliHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def fail(message: str, code: ExitCode) -> ExitCode:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return code


async def execute_plan(
    options: BrokerOptions,
    config: ExecutionConfig,
    plan: RebalancePlan,
    *,
    home: Path | None = None,
    ledger_option: str | None = None,
    on_event: Callable[[OrderEvent], None] | None = None,
    risk: RiskConfig | None = None,
    markouts: bool = False,
) -> ExecutionResult:
    """Execute a plan on the selected broker, recorded in the ledger (idempotent, resumable).

    risk defaults to the TRIMTAB_RISK_* environment variables. markouts: after the plan,
    wait until the market a minute after its last fills is recorded (see
    Executor.finish_markouts).
    """
    home = home or trimtab_home()
    risk = risk if risk is not None else RiskConfig.load()
    ledger = open_ledger(ledger_option, home)
    try:
        async with (
            open_broker(options, home) as broker,
            Executor(
                broker, config, ledger=ledger, owner=process_owner(), lease_clock=SystemClock(), risk=risk
            ) as executor,
        ):
            remove = broker.add_order_listener(on_event) if on_event is not None else None
            try:
                result = await executor.execute_rebalance_plan(plan)
            finally:
                if remove is not None:
                    remove()
            if markouts and not result.already_executed:
                await executor.finish_markouts()
            return result
    finally:
        ledger.close()


def wait_for_markouts(choice: bool | None, broker: str, speed: float | None) -> bool:
    """--markouts/--no-markouts, by default on for the simulated exchange on virtual time
    (where the wait costs no time) and off on real time (a minute after the result)."""
    if choice is not None:
        return choice
    return broker == "sim" and speed is None


def run_async(broker: str, make: Callable[[], Coroutine[Any, Any, T]], speed: float | None = None) -> T:
    """Run on virtual time for the simulated exchange (paced by speed if given), else real time."""
    if broker == "sim":
        return run_virtual(make(), speed=speed)
    return asyncio.run(make())


def exit_code_of(result: ExecutionResult) -> ExitCode:
    """0 when the plan completed (skips allowed), 1 when orders failed or stayed unfilled."""
    if result.status in (ExecutionStatus.SUCCESS, ExecutionStatus.SUCCESS_WITH_SKIPS):
        return ExitCode.OK
    return ExitCode.INCOMPLETE


def guard(action: Callable[[], ExitCode]) -> ExitCode:
    """Run a command body, mapping trimtab's errors to exit codes and one clear line."""
    try:
        return action()
    except (PlanValidationError, ConfigurationError) as exc:
        return fail(str(exc), ExitCode.INVALID)
    except SafetyRefusalError as exc:
        return fail(str(exc), ExitCode.REFUSED)
    except LeaseLostError as exc:
        return fail(str(exc), ExitCode.INCOMPLETE)


def load_execution_config(path: Path | None, algo: str | None, urgency: str | None) -> ExecutionConfig:
    """ExecutionConfig from --config, TRIMTAB_* variables and the --algo/--urgency options."""
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
    return ExecutionConfig.load(path, overrides=overrides)

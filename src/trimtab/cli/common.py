"""Shared pieces of the command line: home folder, exit codes, files, brokers, output."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from pathlib import Path
from typing import TextIO

from rich.console import Console

from trimtab.adapters.clock import SystemClock
from trimtab.adapters.sim import SimBroker
from trimtab.domain.errors import ConfigurationError, PlanValidationError
from trimtab.domain.plan import RebalancePlan
from trimtab.domain.planfile import format_of, parse_plan_text
from trimtab.ports.broker import Broker

console = Console()
err_console = Console(stderr=True)


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


def sim_market_date() -> date:
    """The simulated market's trading day: today's date by the system clock."""
    return SystemClock().now().date()


def make_sim_broker(options: BrokerOptions, home: Path) -> SimBroker:
    """The simulated broker: from --account, fresh, or the account persisted under home."""
    state = sim_state_path(home)
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
    """Open the selected broker; the simulated account is saved back when the block ends."""
    home = home or trimtab_home()
    if options.broker != "sim":
        raise ConfigurationError(f"unknown broker {options.broker!r}: this version supports sim")
    broker = make_sim_broker(options, home)
    try:
        yield broker
    finally:
        if options.persist:
            home.mkdir(parents=True, exist_ok=True)
            broker.save(sim_state_path(home))


class _CliHandler(logging.StreamHandler[TextIO]):
    """The command line's log handler (a distinct class so it is installed once)."""


def setup_logging(verbose: bool) -> None:
    """Plain one-line logs on stderr; INFO with --verbose, WARNING otherwise."""
    root = logging.getLogger("trimtab")
    if not any(isinstance(h, _CliHandler) for h in root.handlers):
        handler = _CliHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def fail(message: str, code: ExitCode) -> ExitCode:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return code

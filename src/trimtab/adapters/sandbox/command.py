"""What `trimtab sandbox` does, as one function the command line calls.

Bad input raises ConfigurationError (exit code 2 at the command line) with a message that
names the option; the key pairs never appear in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path

from trimtab.adapters.sandbox.accounts import AccountConfig, accounts_from_environment, load_accounts
from trimtab.adapters.sandbox.faults import Faults, parse_fault
from trimtab.adapters.sandbox.server import DEFAULT_PORT, serve
from trimtab.domain.errors import ConfigurationError


def sandbox_accounts(
    accounts_file: Path | None, environ: Mapping[str, str] | None = None, account_file: Path | None = None
) -> list[AccountConfig]:
    """The accounts of --accounts FILE, else the APCA_API_* key pair as one account.

    account_file (the simulated account JSON of --account) sets up the env pair's account.
    """
    try:
        if accounts_file is not None:
            return load_accounts(accounts_file)
        account: dict[str, object] = {}
        if account_file is not None:
            parsed = json.loads(account_file.read_text(encoding="utf-8"))
            if not isinstance(parsed, dict):
                raise ValueError(f"{account_file}: expected a JSON object")
            account = parsed
        return accounts_from_environment(os.environ if environ is None else environ, account)
    except (ValueError, OSError) as exc:
        raise ConfigurationError(f"sandbox accounts: {exc}") from None


def sandbox_faults(specs: Sequence[str]) -> Faults:
    """Faults from --fault options (see trimtab.adapters.sandbox.faults)."""
    faults = Faults()
    for spec in specs:
        try:
            faults = parse_fault(spec, faults)
        except ValueError as exc:
            raise ConfigurationError(f"--fault: {exc}") from None
    return faults


def sandbox_command(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    accounts_file: Path | None = None,
    account_file: Path | None = None,
    speed: float = 1.0,
    faults: Sequence[str] = (),
    seed: int = 0,
    requests_per_minute: int = 200,
    market_date: date | None = None,
    environ: Mapping[str, str] | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve the sandbox in the foreground until Ctrl-C (or SIGTERM)."""
    if not speed > 0:
        raise ConfigurationError(f"--speed must be positive, got {speed}")
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"--port must be in 0..65535, got {port}")
    if requests_per_minute < 1:
        raise ConfigurationError("--requests-per-minute must be at least 1")
    accounts = sandbox_accounts(accounts_file, environ, account_file)
    fault_state = sandbox_faults(faults)
    try:
        serve(
            host,
            port,
            accounts,
            speed=speed,
            faults=fault_state,
            seed=seed,
            on_started=on_started,
            requests_per_minute=requests_per_minute,
            market_date=market_date,
        )
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

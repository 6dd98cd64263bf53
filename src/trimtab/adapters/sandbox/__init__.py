"""The sandbox: the simulated exchange served as an Alpaca-compatible HTTP + WebSocket API.

``serve()`` runs it in the foreground (``trimtab sandbox``); ``start_sandbox()`` runs it
on a background thread (tests, benchmarks) and returns a handle with its URL and stop().
"""

from trimtab.adapters.sandbox.accounts import (
    AccountConfig,
    accounts_from_data,
    accounts_from_environment,
    load_accounts,
)
from trimtab.adapters.sandbox.command import sandbox_accounts, sandbox_command, sandbox_faults
from trimtab.adapters.sandbox.faults import Faults, parse_fault
from trimtab.adapters.sandbox.server import (
    DEFAULT_PORT,
    SandboxConfig,
    SandboxHandle,
    running_sandbox,
    serve,
    start_sandbox,
)

__all__ = [
    "DEFAULT_PORT",
    "AccountConfig",
    "Faults",
    "SandboxConfig",
    "SandboxHandle",
    "accounts_from_data",
    "accounts_from_environment",
    "load_accounts",
    "parse_fault",
    "running_sandbox",
    "sandbox_accounts",
    "sandbox_command",
    "sandbox_faults",
    "serve",
    "start_sandbox",
]

"""The accounts file: which broker each account trades through, and its settings.

A YAML file (JSON is YAML too)::

    defaults:                      # optional, merged under every account's own settings
      execution: {lease_ttl: 30}
      risk: {max_order_notional: "50000"}
    accounts:
      - name: alice                # 1 to 64 letters, digits, '_', '.', '-' or '@'
        broker: sim                # the simulated exchange, its state kept in state_dir
        state_dir: sim/alice       # relative paths start at the accounts file's folder
        seed: 7
        initial: {cash: "100000", positions: {SPY: "50"}}   # used while state_dir is empty
        speed: 60                  # optional: pace the market at 60x real time
      - name: bob
        broker: alpaca             # Alpaca, paper unless live: true
        key_id_env: BOB_APCA_API_KEY_ID          # the NAMES of environment variables
        secret_key_env: BOB_APCA_API_SECRET_KEY  # holding the key pair, never the keys
        base_url: https://paper-api.alpaca.markets
        live: false
      - name: carol
        broker: sandbox            # a local `trimtab sandbox` (127.0.0.1 only)
        url: http://127.0.0.1:8473
        key_id_env: CAROL_KEY_ID
        secret_key_env: CAROL_SECRET
        execution: {ladders: {NORMAL: {fill_wait: 5}}}

`execution` holds ExecutionConfig fields and `risk` RiskConfig fields. Key pairs are read
from the environment when a job opens the account; they never appear in the file, the
jobs, the ledger, log lines or error messages. Errors name the account and the field,
never a field's value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimtab.adapters.alpaca.config import (
    DATA_URL,
    LIVE_URL,
    PAPER_URL,
    AlpacaConfig,
    is_known_paper_or_local,
    is_loopback,
)
from trimtab.adapters.sim.state import parse_account, parse_json
from trimtab.domain.errors import ConfigurationError
from trimtab.engine.config import ExecutionConfig
from trimtab.engine.risk import RiskConfig

ACCOUNTS_ENV = "TRIMTAB_ACCOUNTS"
"""The environment variable naming the accounts file (when --accounts is not given)."""
ACCOUNTS_FILE_NAME = "accounts.yaml"
SIM_STATE_FILE = "sim-account.json"

ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
BROKERS = ("sim", "alpaca", "sandbox")
_SECRET_FIELDS = ("key_id", "secret_key", "api_key", "api_secret", "secret", "password", "token")
_TOP_FIELDS = ("accounts", "defaults")
_DEFAULT_FIELDS = ("execution", "risk")


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    execution: dict[str, Any] = Field(default_factory=dict)
    risk: dict[str, Any] = Field(default_factory=dict)


def _env_name(value: object) -> str:
    # The message never repeats the value: a key pasted here by mistake must not leak.
    if not isinstance(value, str) or not ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable (letters, digits and _), not the key itself"
        )
    return value


def _http_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an http(s) URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    if parts.username or parts.password:
        raise ValueError(
            "must not carry credentials; name environment variables in key_id_env and secret_key_env"
        )
    return value.strip().rstrip("/")


class _SimEntry(_Entry):
    broker: Literal["sim"]
    state_dir: Path
    seed: int = 0
    initial: dict[str, Any] | None = None
    speed: float | None = Field(default=None, gt=0)


class _KeyedEntry(_Entry):
    key_id_env: str
    secret_key_env: str

    @field_validator("key_id_env", "secret_key_env", mode="before")
    @classmethod
    def _names(cls, value: object) -> str:
        return _env_name(value)


class _AlpacaEntry(_KeyedEntry):
    broker: Literal["alpaca"]
    base_url: str | None = None
    data_url: str | None = None
    live: bool = False
    feed: Literal["iex", "sip"] = "iex"

    @field_validator("base_url", "data_url", mode="before")
    @classmethod
    def _urls(cls, value: object) -> str | None:
        return None if value is None else _http_url(value)


class _SandboxEntry(_KeyedEntry):
    broker: Literal["sandbox"]
    url: str

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: object) -> str:
        url = _http_url(value)
        if not is_loopback(url):
            raise ValueError(
                "must point at a local sandbox (127.0.0.1, localhost or ::1); "
                "for any other endpoint use broker: alpaca"
            )
        return url


_ENTRY_MODELS: dict[str, type[_Entry]] = {
    "sim": _SimEntry,
    "alpaca": _AlpacaEntry,
    "sandbox": _SandboxEntry,
}


@dataclass(frozen=True, slots=True)
class SimSettings:
    """A simulated account: its saved state lives in state_dir (one account per folder)."""

    state_dir: Path
    seed: int = 0
    initial: Mapping[str, Any] | None = None
    """The simulated account file's fields (cash, positions, assets, prices), used while
    state_dir holds no saved account."""
    speed: float | None = None
    """Pace the simulated market at this many times real time; None runs it flat out."""

    @property
    def state_file(self) -> Path:
        return self.state_dir / SIM_STATE_FILE


@dataclass(frozen=True, slots=True)
class AlpacaSettings:
    """An Alpaca (or local sandbox) account. Holds the NAMES of the key variables only."""

    key_id_env: str
    secret_key_env: str
    base_url: str
    data_url: str
    live: bool = False
    feed: Literal["iex", "sip"] = "iex"

    def config(self, account: str, environ: Mapping[str, str] | None = None) -> AlpacaConfig:
        """The adapter's settings, with the key pair read from the environment now."""
        env = os.environ if environ is None else environ
        missing = [name for name in (self.key_id_env, self.secret_key_env) if not env.get(name, "").strip()]
        if missing:
            raise ConfigurationError(
                f"account {account!r}: the environment variable {' and '.join(missing)} "
                "holding its key pair is not set"
            )
        return AlpacaConfig(
            env[self.key_id_env].strip(),
            env[self.secret_key_env].strip(),
            base_url=self.base_url,
            data_url=self.data_url,
            feed=self.feed,
            live=self.live,
        )


@dataclass(frozen=True, slots=True)
class Account:
    """One account of the accounts file, validated."""

    name: str
    broker: Literal["sim", "alpaca", "sandbox"]
    execution: ExecutionConfig
    risk: RiskConfig
    sim: SimSettings | None = None
    alpaca: AlpacaSettings | None = None
    """Set for alpaca and sandbox accounts (a sandbox is an Alpaca endpoint on 127.0.0.1)."""

    def __repr__(self) -> str:
        return f"Account(name={self.name!r}, broker={self.broker!r})"


class Accounts(Mapping[str, Account]):
    """The accounts of a file, by name, in file order."""

    def __init__(self, accounts: list[Account], source: str = "accounts") -> None:
        self._accounts = {account.name: account for account in accounts}
        self.source = source

    def __getitem__(self, name: str) -> Account:
        return self._accounts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)

    def __repr__(self) -> str:
        return f"Accounts({list(self._accounts)!r}, source={self.source!r})"

    def require(self, name: str) -> Account:
        """The account called name; ConfigurationError listing the known ones otherwise."""
        account = self._accounts.get(name)
        if account is None:
            known = ", ".join(sorted(self._accounts)) or "none"
            raise ConfigurationError(f"unknown account {name!r}: {self.source} defines {known}")
        return account


def default_accounts_path(home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """$TRIMTAB_ACCOUNTS, else accounts.yaml in the trimtab home folder."""
    env = os.environ if environ is None else environ
    configured = env.get(ACCOUNTS_ENV, "").strip()
    return Path(configured).expanduser() if configured else home / ACCOUNTS_FILE_NAME


def load_accounts(path: Path) -> Accounts:
    """Read and validate an accounts file. Raises ConfigurationError naming account and field."""
    source = f"accounts file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{source}: not found") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{source}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{source}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "could not parse"
        raise ConfigurationError(f"{source}: malformed YAML{where}: {problem}") from None
    return accounts_from_data(data, source=source, base_dir=Path(path).parent)


def accounts_from_data(data: object, *, source: str = "accounts", base_dir: Path | None = None) -> Accounts:
    """Validate parsed accounts data (see the module docstring for the layout)."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: the top level must be a mapping with an 'accounts' list")
    for key in data:
        if key not in _TOP_FIELDS:
            raise ConfigurationError(f"{source}: {key}: unknown field (expected accounts, defaults)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigurationError(f"{source}: defaults: must be a mapping with execution and risk")
    for key, value in defaults.items():
        if key not in _DEFAULT_FIELDS:
            raise ConfigurationError(f"{source}: defaults.{key}: unknown field (expected execution, risk)")
        if value is not None and not isinstance(value, dict):
            raise ConfigurationError(f"{source}: defaults.{key}: must be a mapping")
    entries = data.get("accounts")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source}: accounts: must be a non-empty list of accounts")
    base = base_dir if base_dir is not None else Path.cwd()
    accounts: list[Account] = []
    state_dirs: dict[Path, str] = {}
    for index, entry in enumerate(entries):
        account = _account(entry, index, defaults, source, base)
        if account.name in {a.name for a in accounts}:
            raise ConfigurationError(f"{source}: accounts[{index}]: name: {account.name!r} is used twice")
        if account.sim is not None:
            folder = account.sim.state_dir
            other = state_dirs.get(folder)
            if other is not None:
                raise ConfigurationError(
                    f"{source}: account {account.name!r}: state_dir: already used by account {other!r} "
                    "(each simulated account needs a folder of its own)"
                )
            state_dirs[folder] = account.name
        accounts.append(account)
    return Accounts(accounts, source)


def _account(entry: object, index: int, defaults: Mapping[str, Any], source: str, base: Path) -> Account:
    where = f"{source}: accounts[{index}]"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: must be a mapping with name and broker")
    name = entry.get("name")
    if not isinstance(name, str) or not ACCOUNT_NAME.match(name):
        raise ConfigurationError(
            f"{where}: name: "
            + ("missing" if name is None else "must be 1 to 64 letters, digits, '_', '.', '-' or '@'")
        )
    where = f"{source}: account {name!r}"
    for key in _SECRET_FIELDS:
        if key in entry:
            raise ConfigurationError(
                f"{where}: {key}: keys never go in the accounts file; put the key in an environment "
                "variable and give its name in key_id_env or secret_key_env"
            )
    broker = entry.get("broker")
    if broker is None:
        raise ConfigurationError(f"{where}: broker: missing (sim, alpaca or sandbox)")
    if broker not in BROKERS:
        raise ConfigurationError(f"{where}: broker: must be sim, alpaca or sandbox")
    merged = dict(entry)
    for key in _DEFAULT_FIELDS:
        own = entry.get(key)
        if own is not None and not isinstance(own, dict):
            raise ConfigurationError(f"{where}: {key}: must be a mapping")
        merged[key] = _merge(defaults.get(key) or {}, own or {})
    try:
        model = _ENTRY_MODELS[broker].model_validate(merged)
    except ValidationError as exc:
        raise ConfigurationError(f"{where}: {_describe(exc)}") from None
    execution = _execution(model.execution, where)
    risk = _risk(model.risk, where)
    if isinstance(model, _SimEntry):
        return Account(model.name, "sim", execution, risk, sim=_sim_settings(model, where, base))
    if isinstance(model, _AlpacaEntry):
        return Account(model.name, "alpaca", execution, risk, alpaca=_alpaca_settings(model, where))
    assert isinstance(model, _SandboxEntry)
    settings = AlpacaSettings(
        key_id_env=model.key_id_env,
        secret_key_env=model.secret_key_env,
        base_url=model.url,
        data_url=model.url,
    )
    return Account(model.name, "sandbox", execution, risk, alpaca=settings)


def _merge(base: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """own over base; ladders are merged per urgency, so a default ladder survives an override of another."""
    merged = {**base, **own}
    if isinstance(base.get("ladders"), dict) and isinstance(own.get("ladders"), dict):
        merged["ladders"] = {**base["ladders"], **own["ladders"]}
    return merged


def _execution(data: Mapping[str, Any], where: str) -> ExecutionConfig:
    try:
        return ExecutionConfig.from_mapping(data, source="execution settings")
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _risk(data: Mapping[str, Any], where: str) -> RiskConfig:
    try:
        return RiskConfig.from_mapping(data, source="risk settings")
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _sim_settings(model: _SimEntry, where: str, base: Path) -> SimSettings:
    folder = model.state_dir.expanduser()
    if not folder.is_absolute():
        folder = base / folder
    folder = Path(os.path.normpath(folder.absolute()))
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"{where}: state_dir: exists and is not a folder")
    if model.initial is not None:
        try:
            # Through JSON so numbers keep their digits (parse_json reads them as Decimal).
            parse_account(parse_json(json.dumps(model.initial, default=str)))
        except ValueError as exc:
            raise ConfigurationError(f"{where}: initial: {exc}") from None
    return SimSettings(state_dir=folder, seed=model.seed, initial=model.initial, speed=model.speed)


def _alpaca_settings(model: _AlpacaEntry, where: str) -> AlpacaSettings:
    base_url = model.base_url or (LIVE_URL if model.live else PAPER_URL)
    host = urlsplit(base_url).hostname
    if not model.live and not is_known_paper_or_local(base_url):
        raise ConfigurationError(
            f"{where}: base_url: {host} is not a paper or local endpoint; trading real money needs live: true"
        )
    if model.live and is_known_paper_or_local(base_url):
        raise ConfigurationError(f"{where}: live: true, but base_url {host} is a paper or local endpoint")
    data_url = model.data_url or (base_url if is_loopback(base_url) else DATA_URL)
    return AlpacaSettings(
        key_id_env=model.key_id_env,
        secret_key_env=model.secret_key_env,
        base_url=base_url,
        data_url=data_url,
        live=model.live,
        feed=model.feed,
    )


def _describe(error: ValidationError) -> str:
    """Each problem as `field: message`. Values are never repeated (they could be keys)."""
    problems = []
    for detail in error.errors():
        field = ".".join(str(part) for part in detail["loc"])
        kind = detail["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "missing"
        else:
            message = str(detail["msg"]).removeprefix("Value error, ")
        problems.append(f"{field}: {message}" if field else message)
    return "; ".join(problems)

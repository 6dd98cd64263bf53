"""The accounts file of the workers: a corpus of bad files, each refused naming account and
field (never a value), and the pieces of the queue that need no database."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
import yaml
from procrastinate.jobs import Job

from trimtab.adapters.alpaca.config import DATA_URL, LIVE_URL, PAPER_URL
from trimtab.domain.errors import BrokerUnavailableError, ConfigurationError, SafetyRefusalError
from trimtab.engine.config import ExecutionConfig
from trimtab.worker import (
    Database,
    LedgerPool,
    PlanBusyError,
    PlanRetry,
    WorkerSettings,
    WorkerStoppedError,
    accounts_from_data,
    load_accounts,
)

SECRET = "Zx9/very+secret=key"
VALID: dict[str, Any] = {
    "defaults": {
        "execution": {"lease_ttl": 10, "ladders": {"LOW": {"fill_wait": 30}}},
        "risk": {"max_order_notional": "50000"},
    },
    "accounts": [
        {
            "name": "alice",
            "broker": "sim",
            "state_dir": "sim/alice",
            "seed": 7,
            "initial": {"cash": "100000", "positions": {"SPY": "50"}},
            "speed": 60,
        },
        {
            "name": "bob",
            "broker": "alpaca",
            "key_id_env": "BOB_KEY_ID",
            "secret_key_env": "BOB_SECRET",
            "execution": {"ladders": {"NORMAL": {"fill_wait": 5}}},
        },
        {
            "name": "carol.fund-2",
            "broker": "sandbox",
            "url": "http://127.0.0.1:8473/",
            "key_id_env": "CAROL_KEY",
            "secret_key_env": "CAROL_SECRET",
            "risk": {"max_order_notional": "1000"},
        },
        {
            "name": "dave",
            "broker": "alpaca",
            "key_id_env": "DAVE_KEY",
            "secret_key_env": "DAVE_SECRET",
            "live": True,
        },
    ],
}


def with_changes(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """VALID with the field at path set to value (a value of DELETE removes it)."""
    data = copy.deepcopy(VALID)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


DELETE = object()
ALICE = ("accounts", 0)
BOB = ("accounts", 1)
CAROL = ("accounts", 2)
DAVE = ("accounts", 3)

CORPUS: list[tuple[str, Any, str]] = [
    ("top level is a list", [], "the top level must be a mapping"),
    ("unknown top field", {**VALID, "colour": "blue"}, "colour: unknown field"),
    ("no accounts", {"accounts": []}, "accounts: must be a non-empty list"),
    ("accounts not a list", {"accounts": {"alice": {}}}, "accounts: must be a non-empty list"),
    ("defaults unknown field", with_changes(("defaults", "colour"), {}), "defaults.colour: unknown field"),
    ("defaults not a mapping", with_changes(("defaults",), ["x"]), "defaults: must be a mapping"),
    ("entry not a mapping", with_changes(("accounts",), ["alice"]), "accounts[0]: must be a mapping"),
    ("name missing", with_changes((*ALICE, "name"), DELETE), "accounts[0]: name: missing"),
    ("name with a space", with_changes((*ALICE, "name"), "al ice"), "accounts[0]: name: must be 1 to 64"),
    ("name too long", with_changes((*ALICE, "name"), "a" * 65), "accounts[0]: name: must be 1 to 64"),
    ("name twice", with_changes((*BOB, "name"), "alice"), "accounts[1]: name: 'alice' is used twice"),
    ("broker missing", with_changes((*ALICE, "broker"), DELETE), "account 'alice': broker: missing"),
    (
        "broker unknown",
        with_changes((*ALICE, "broker"), "ibkr"),
        "account 'alice': broker: must be sim, alpaca or sandbox",
    ),
    (
        "sim without state_dir",
        with_changes((*ALICE, "state_dir"), DELETE),
        "account 'alice': state_dir: missing",
    ),
    ("sim unknown field", with_changes((*ALICE, "colour"), "x"), "account 'alice': colour: unknown field"),
    (
        "sim speed zero",
        with_changes((*ALICE, "speed"), 0),
        "account 'alice': speed: Input should be greater than 0",
    ),
    ("sim seed not a number", with_changes((*ALICE, "seed"), "lucky"), "account 'alice': seed:"),
    (
        "sim initial cash",
        with_changes((*ALICE, "initial"), {"cash": "lots"}),
        "account 'alice': initial: cash",
    ),
    (
        "sim initial unknown",
        with_changes((*ALICE, "initial"), {"margin": "1"}),
        "account 'alice': initial: unknown field 'margin'",
    ),
    (
        "alpaca fields on sim",
        with_changes((*ALICE, "key_id_env"), "K"),
        "account 'alice': key_id_env: unknown field",
    ),
    (
        "alpaca key env missing",
        with_changes((*BOB, "key_id_env"), DELETE),
        "account 'bob': key_id_env: missing",
    ),
    (
        "alpaca secret env missing",
        with_changes((*BOB, "secret_key_env"), DELETE),
        "account 'bob': secret_key_env: missing",
    ),
    (
        "alpaca key pasted",
        with_changes((*BOB, "secret_key_env"), SECRET),
        "account 'bob': secret_key_env: must be the NAME",
    ),
    (
        "alpaca secret inline",
        with_changes((*BOB, "secret_key"), SECRET),
        "account 'bob': secret_key: keys never go",
    ),
    ("alpaca key inline", with_changes((*BOB, "key_id"), SECRET), "account 'bob': key_id: keys never go"),
    (
        "alpaca live url, paper",
        with_changes((*BOB, "base_url"), LIVE_URL),
        "account 'bob': base_url: api.alpaca.markets is not a paper",
    ),
    (
        "alpaca unknown host",
        with_changes((*BOB, "base_url"), "https://broker.example"),
        "base_url: broker.example is not a paper",
    ),
    (
        "alpaca live, paper url",
        with_changes((*DAVE, "base_url"), PAPER_URL),
        "account 'dave': live: true, but base_url",
    ),
    (
        "alpaca url not http",
        with_changes((*BOB, "base_url"), "ftp://x"),
        "account 'bob': base_url: must be an http(s) URL",
    ),
    (
        "alpaca url credentials",
        with_changes((*BOB, "base_url"), "https://me:hunter2@paper-api.alpaca.markets"),
        "base_url: must not carry credentials",
    ),
    ("alpaca feed", with_changes((*BOB, "feed"), "bats"), "account 'bob': feed:"),
    ("alpaca live not a flag", with_changes((*BOB, "live"), "maybe"), "account 'bob': live:"),
    ("sandbox url missing", with_changes((*CAROL, "url"), DELETE), "account 'carol.fund-2': url: missing"),
    (
        "sandbox remote",
        with_changes((*CAROL, "url"), "http://10.0.0.5:8473"),
        "url: must point at a local sandbox",
    ),
    (
        "sandbox on sim",
        with_changes((*CAROL, "state_dir"), "x"),
        "account 'carol.fund-2': state_dir: unknown field",
    ),
    (
        "execution field",
        with_changes((*BOB, "execution"), {"lease_ttl": 0}),
        "account 'bob': invalid execution settings: lease_ttl",
    ),
    (
        "execution unknown",
        with_changes((*BOB, "execution"), {"fill_wait": 3}),
        "account 'bob': invalid execution settings: fill_wait: unknown field",
    ),
    (
        "execution ladder",
        with_changes((*BOB, "execution"), {"ladders": {"NORMAL": {"steps": ["2"]}}}),
        "account 'bob': invalid execution settings",
    ),
    (
        "execution not a mapping",
        with_changes((*BOB, "execution"), "fast"),
        "account 'bob': execution: must be a mapping",
    ),
    (
        "risk field",
        with_changes((*CAROL, "risk"), {"max_order_fraction": "2"}),
        "account 'carol.fund-2': invalid risk settings: max_order_fraction",
    ),
    (
        "risk unknown",
        with_changes((*CAROL, "risk"), {"max_leverage": "2"}),
        "invalid risk settings: max_leverage: unknown field",
    ),
    (
        "default execution",
        with_changes(("defaults", "execution", "plan_timeout"), 1),
        "account 'alice': invalid execution settings: plan_timeout",
    ),
]


@pytest.mark.parametrize(("data", "expect"), [(d, e) for _, d, e in CORPUS], ids=[c[0] for c in CORPUS])
def test_a_bad_accounts_file_is_refused_naming_the_account_and_field(data: Any, expect: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        accounts_from_data(data, source="accounts file f.yaml", base_dir=Path("/srv"))
    message = str(caught.value)
    assert expect in message
    assert message.startswith("accounts file f.yaml: ")
    assert SECRET not in message
    assert "hunter2" not in message


def test_a_state_folder_serves_one_simulated_account(tmp_path: Path) -> None:
    data = copy.deepcopy(VALID)
    data["accounts"].append({"name": "erin", "broker": "sim", "state_dir": "./sim/../sim/alice"})
    with pytest.raises(
        ConfigurationError, match="account 'erin': state_dir: already used by account 'alice'"
    ):
        accounts_from_data(data, base_dir=tmp_path)


def test_a_valid_file_resolves_brokers_urls_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "accounts.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(VALID))
    accounts = load_accounts(path)
    assert list(accounts) == ["alice", "bob", "carol.fund-2", "dave"]
    alice, bob, carol, dave = (accounts[name] for name in accounts)
    assert alice.broker == "sim"
    assert alice.sim is not None
    assert alice.sim.state_dir == tmp_path / "conf" / "sim" / "alice"
    assert alice.sim.state_file == alice.sim.state_dir / "sim-account.json"
    assert (alice.sim.seed, alice.sim.speed) == (7, 60)
    assert bob.alpaca is not None
    assert (bob.alpaca.base_url, bob.alpaca.data_url, bob.alpaca.live) == (PAPER_URL, DATA_URL, False)
    assert carol.broker == "sandbox"
    assert carol.alpaca is not None
    assert carol.alpaca.base_url == carol.alpaca.data_url == "http://127.0.0.1:8473"
    assert dave.alpaca is not None
    assert (dave.alpaca.base_url, dave.alpaca.live) == (LIVE_URL, True)
    # Defaults under each account; an account's own ladder leaves the default ones in place.
    assert bob.execution.lease_ttl == 10
    assert bob.execution.ladders["NORMAL"].fill_wait == 5  # type: ignore[index]
    assert bob.execution.ladders["LOW"].fill_wait == 30  # type: ignore[index]
    assert alice.execution.ladders["NORMAL"] == ExecutionConfig().ladders["NORMAL"]  # type: ignore[index]
    assert str(alice.risk.max_order_notional) == "50000"
    assert str(carol.risk.max_order_notional) == "1000"
    assert "BOB" not in repr(bob)
    with pytest.raises(
        ConfigurationError, match=r"unknown account 'erin': accounts file .* defines alice, bob"
    ):
        accounts.require("erin")


def test_keys_are_read_from_the_named_variables_when_the_account_is_opened(tmp_path: Path) -> None:
    accounts = accounts_from_data(VALID, base_dir=tmp_path)
    settings = accounts["bob"].alpaca
    assert settings is not None
    config = settings.config("bob", {"BOB_KEY_ID": "PKBOB", "BOB_SECRET": SECRET})
    assert (config.key_id, config.secret_key, config.base_url) == ("PKBOB", SECRET, PAPER_URL)
    assert SECRET not in repr(config)
    with pytest.raises(ConfigurationError) as caught:
        settings.config("bob", {"BOB_KEY_ID": "PKBOB"})
    assert "account 'bob': the environment variable BOB_SECRET" in str(caught.value)
    live = accounts["dave"].alpaca
    assert live is not None
    assert live.config("dave", {"DAVE_KEY": "k", "DAVE_SECRET": "s"}).live


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("accounts: [\n  - name: a\n   broker: sim", "malformed YAML at line 2"),
        ("", "the top level must be a mapping"),
    ],
)
def test_an_unreadable_accounts_file_is_refused(tmp_path: Path, text: str, expect: str) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=expect):
        load_accounts(path)
    with pytest.raises(ConfigurationError, match="not found"):
        load_accounts(tmp_path / "missing.yaml")
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_accounts(tmp_path)


# --- the database URL ---


def test_one_url_gives_the_ledger_and_the_queue_their_forms() -> None:
    database = Database.from_url("postgres://trader:pw@db.internal:5433/firm?options=-csearch_path%3Dtt")
    assert database.ledger_url.startswith("postgresql+psycopg://trader:pw@db.internal:5433/firm?options=")
    assert database.conninfo.startswith("postgresql://trader:pw@db.internal:5433/firm?options=")
    assert database.display == "postgresql://trader:***@db.internal:5433/firm?options=-csearch_path%3Dtt"
    assert "pw" not in repr(database)
    assert (
        Database.resolve(None, {"TRIMTAB_DATABASE_URL": "postgresql://u@h/d"}).display == "postgresql://u@h/d"
    )


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("sqlite:///ledger.sqlite3", "the queue needs PostgreSQL"),
        ("not a url", "not a valid URL"),
        ("postgresql://u@h", "names no database"),
    ],
)
def test_a_database_that_cannot_hold_the_queue_is_refused(url: str, expect: str) -> None:
    with pytest.raises(ConfigurationError, match=expect):
        Database.from_url(url)


def test_a_database_is_required() -> None:
    with pytest.raises(ConfigurationError, match="give --database URL or set TRIMTAB_DATABASE_URL"):
        Database.resolve(None, {})


# --- retries and worker settings ---


def _job(attempts: int) -> Job:
    return Job(id=1, queue="trimtab", lock=None, queueing_lock=None, task_name="t", attempts=attempts)


def _delay(decision: Any) -> float:
    assert decision is not None
    assert decision.retry_at is not None
    delay: float = (decision.retry_at - datetime.now(UTC)) / timedelta(seconds=1)
    return delay


def test_plan_jobs_are_retried_only_when_trying_again_can_help() -> None:
    retry = PlanRetry(max_busy_attempts=50, max_retryable_attempts=3, backoff_cap=5)
    busy = retry.get_retry_decision(exception=PlanBusyError("held", retry_in=2.5), job=_job(4))
    assert 2.0 < _delay(busy) <= 2.5
    stopped = retry.get_retry_decision(exception=WorkerStoppedError("stopped"), job=_job(0))
    assert _delay(stopped) <= 0
    down = retry.get_retry_decision(exception=BrokerUnavailableError("down"), job=_job(1))
    assert 1.5 < _delay(down) <= 2
    capped = retry.get_retry_decision(exception=BrokerUnavailableError("down"), job=_job(2))
    assert 3.5 < _delay(capped) <= 4
    assert retry.get_retry_decision(exception=BrokerUnavailableError("down"), job=_job(3)) is None
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed"))
    assert 0.5 < _delay(retry.get_retry_decision(exception=lost, job=_job(0))) <= 1
    assert retry.get_retry_decision(exception=PlanBusyError("held", retry_in=1), job=_job(50)) is None
    assert retry.get_retry_decision(exception=SafetyRefusalError("halted"), job=_job(0)) is None
    assert retry.get_retry_decision(exception=ConfigurationError("bad"), job=_job(0)) is None


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"concurrency": 0}, "--concurrency must be at least 1"),
        ({"heartbeat_interval": 5, "stalled_after": 10}, "more than twice the heartbeat"),
        ({"poll_interval": 0}, "poll_interval must be positive"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ],
)
def test_worker_settings_are_checked(changes: dict[str, Any], expect: str) -> None:
    with pytest.raises(ConfigurationError, match=expect):
        WorkerSettings(**changes)


def test_the_ledger_pool_reuses_ledgers_and_never_closes_one_in_use() -> None:
    pool = LedgerPool(Database.from_url("postgresql://nobody@127.0.0.1:1/none"), size=1)
    with pool.ledger("a") as first:
        with pool.ledger("a") as again:
            assert again is first
        with pool.ledger("b") as other:
            assert other.account == "b"
        # b went idle beyond the pool's size and was closed; a, in use, stays.
        with pool.ledger("b") as other_again:
            assert other_again is not other
    with pool.ledger("a") as reused:
        assert reused is first
    pool.close()

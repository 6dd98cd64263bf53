"""The one PostgreSQL database that holds the queue (procrastinate) and the ledger.

The same URL serves both: SQLAlchemy (the ledger) wants postgresql+psycopg://, psycopg
(procrastinate) a libpq URI. Query parameters pass through to both, so
``?options=-csearch_path%3Dtrimtab`` keeps trimtab's tables in a schema of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trimtab.adapters.ledger import SqlLedger
from trimtab.domain.errors import ConfigurationError
from trimtab.logs import get_logger

log = get_logger(__name__)

DATABASE_ENV = "TRIMTAB_DATABASE_URL"
# Any constant works, as long as every trimtab process uses the same one.
_QUEUE_SCHEMA_LOCK = 0x7472696D74616271  # "trimtabq"


@dataclass(frozen=True, slots=True)
class Database:
    """A PostgreSQL database URL in the forms the ledger and the queue need."""

    ledger_url: str = field(repr=False)
    """For SqlLedger (SQLAlchemy, postgresql+psycopg://)."""
    conninfo: str = field(repr=False)
    """For psycopg and procrastinate (a libpq URI, postgresql://)."""
    display: str
    """The URL with any password masked: the only form that goes into logs and messages."""

    @classmethod
    def from_url(cls, url: str) -> Database:
        """Parse a PostgreSQL URL (postgresql://, postgres:// or postgresql+psycopg://)."""
        try:
            parsed = make_url(url.strip())
        except (ArgumentError, ValueError):
            raise ConfigurationError(
                "the database URL is not a valid URL (postgresql://user@host/db)"
            ) from None
        if parsed.get_backend_name() not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"the queue needs PostgreSQL, got a {parsed.get_backend_name()} URL "
                "(postgresql://user@host:5432/db)"
            )
        if not parsed.database:
            raise ConfigurationError("the database URL names no database (postgresql://user@host:5432/db)")
        return cls(
            ledger_url=parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False),
            conninfo=parsed.set(drivername="postgresql").render_as_string(hide_password=False),
            display=parsed.set(drivername="postgresql").render_as_string(hide_password=True),
        )

    @classmethod
    def resolve(cls, option: str | None, environ: Mapping[str, str] | None = None) -> Database:
        """--database, else $TRIMTAB_DATABASE_URL."""
        env = os.environ if environ is None else environ
        url = option or env.get(DATABASE_ENV, "").strip()
        if not url:
            raise ConfigurationError(f"no database: give --database URL or set {DATABASE_ENV}")
        return cls.from_url(url)

    def ledger(self, account: str, *, migrate: bool = True) -> SqlLedger:
        """The ledger of one account in this database (connects on first use).

        migrate False skips the schema check on first use, for callers that ran
        ensure_ledger_schema already (a worker does at start).
        """
        return SqlLedger(self.ledger_url, account=account, migrate=migrate)


QUEUE_SCHEMA_TABLE = "trimtab_queue_schema"
"""The one-row table that says which of procrastinate's migrations the queue's schema is at."""


def installed_queue_schema() -> str:
    """The newest of procrastinate's migrations this installation carries (e.g. 03.04.00):
    the version of the schema it expects."""
    return max(version for version, _ in _migrations())


def _migrations() -> list[tuple[str, str]]:
    """(version, file name) of procrastinate's migration scripts, in the order to apply them."""
    folder = resources.files("procrastinate.sql.migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.split("_", 1)[0], name) for name in names]


def _migration_sql(name: str) -> str:
    return resources.files("procrastinate.sql.migrations").joinpath(name).read_text(encoding="utf-8")


async def ensure_queue_schema(database: Database) -> bool:
    """Create procrastinate's schema, or bring it to this installation's version. True when
    this call changed it.

    The version is recorded beside the schema (QUEUE_SCHEMA_TABLE). A schema from an older
    procrastinate is upgraded with procrastinate's own migration scripts, each in a
    transaction of its own; one from a newer one is refused (ConfigurationError: upgrade
    trimtab). Safe when several workers start at once: one does the work under an advisory lock, the
    others find it done.
    """
    installed = installed_queue_schema()
    try:
        async with await psycopg.AsyncConnection.connect(database.conninfo, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_QUEUE_SCHEMA_LOCK,))
            try:
                return await _bring_queue_schema_to(conn, installed, database)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_QUEUE_SCHEMA_LOCK,))
    except psycopg.OperationalError as exc:
        raise ConfigurationError(
            f"cannot reach the database {database.display}: {_first_line(exc)}"
        ) from None


async def _bring_queue_schema_to(
    conn: psycopg.AsyncConnection[Any], installed: str, database: Database
) -> bool:
    has_jobs = bool(await _scalar(conn, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"))
    has_record = bool(await _scalar(conn, f"SELECT to_regclass('{QUEUE_SCHEMA_TABLE}') IS NOT NULL"))
    if not has_jobs:
        async with conn.transaction():
            await conn.execute(SchemaManager.get_schema())
            await _record(conn, installed, has_record)
        log.info("queue schema applied database=%s version=%s", database.display, installed)
        return True
    recorded = await _scalar(conn, f"SELECT version FROM {QUEUE_SCHEMA_TABLE}") if has_record else None
    if recorded is None:
        # Made before versions were recorded: by this same range of procrastinate releases
        # (every one carries this schema), so it is taken to be this one.
        async with conn.transaction():
            await _record(conn, installed, has_record)
        log.info("queue schema version recorded database=%s version=%s", database.display, installed)
        return False
    recorded = str(recorded)
    if recorded == installed:
        return False
    if recorded > installed:
        raise ConfigurationError(
            f"the queue schema in {database.display} is at procrastinate migration {recorded}, "
            f"newer than this installation knows ({installed}): upgrade trimtab on this machine"
        )
    pending = [(version, name) for version, name in _migrations() if version > recorded]
    for version, name in pending:
        async with conn.transaction():
            await conn.execute(_migration_sql(name))
            await conn.execute(f"UPDATE {QUEUE_SCHEMA_TABLE} SET version = %s", (version,))
        log.info("queue schema migrated database=%s migration=%s", database.display, name)
    return True


async def _scalar(conn: psycopg.AsyncConnection[Any], sql: str) -> object:
    cursor = await conn.execute(sql)
    row = await cursor.fetchone()
    return None if row is None else row[0]


async def _record(conn: psycopg.AsyncConnection[Any], version: str, table_exists: bool) -> None:
    if not table_exists:
        await conn.execute(f"CREATE TABLE {QUEUE_SCHEMA_TABLE} (version text NOT NULL)")
    await conn.execute(f"DELETE FROM {QUEUE_SCHEMA_TABLE}")
    await conn.execute(f"INSERT INTO {QUEUE_SCHEMA_TABLE} (version) VALUES (%s)", (version,))


def ensure_ledger_schema(database: Database) -> None:
    """Create or upgrade the ledger's tables (idempotent, safe from several processes)."""
    ledger = SqlLedger(database.ledger_url)
    try:
        ledger.migrate()
    finally:
        ledger.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

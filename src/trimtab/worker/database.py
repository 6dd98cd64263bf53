"""The one PostgreSQL database that holds the queue (procrastinate) and the ledger.

The same URL serves both: SQLAlchemy (the ledger) wants postgresql+psycopg://, psycopg
(procrastinate) a libpq URI. Query parameters pass through to both, so
``?options=-csearch_path%3Dtrimtab`` keeps trimtab's tables in a schema of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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


async def ensure_queue_schema(database: Database) -> bool:
    """Apply procrastinate's schema unless it is there. True when this call applied it.

    Safe when several workers start at once on an empty database: the check and the
    creation run in one transaction under an advisory lock, so one applies it and the
    others find it done.
    """
    try:
        async with await psycopg.AsyncConnection.connect(database.conninfo) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_QUEUE_SCHEMA_LOCK,))
            cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return False
            await conn.execute(SchemaManager.get_schema())
    except psycopg.OperationalError as exc:
        raise ConfigurationError(
            f"cannot reach the database {database.display}: {_first_line(exc)}"
        ) from None
    log.info("queue schema applied database=%s", database.display)
    return True


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

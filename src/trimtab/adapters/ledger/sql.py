"""SqlLedger: the Ledger port on SQLAlchemy 2, for SQLite (the embedded default) and PostgreSQL.

Concurrency:
- SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
  BEGIN IMMEDIATE, so several processes serialize their writes instead of failing with
  "database is locked" halfway through a transaction.
- PostgreSQL: claims lock the plan's row (SELECT ... FOR UPDATE) and insert with
  ON CONFLICT DO NOTHING, so racing workers see one winner; migrations hold an advisory
  lock, so workers starting together on an empty database migrate it once.

The constructor does no I/O. The first call connects and, unless migrate=False, brings
the schema to the newest migration.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Row,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import PoolProxiedConnection, StaticPool

from trimtab.adapters.ledger import schema
from trimtab.domain.errors import (
    ConfigurationError,
    IllegalTransitionError,
    PlanValidationError,
)
from trimtab.domain.orders import (
    BrokerOrderId,
    ClientOrderId,
    OrderEvent,
    OrderEventKind,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trimtab.domain.quotes import Quote
from trimtab.domain.results import ExecutionResult
from trimtab.ports.ledger import (
    ClaimOutcome,
    FillRecord,
    IntentRecord,
    NewIntent,
    PlanClaim,
    PlanRecord,
    PlanState,
    PlanSummary,
    StateChange,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LEDGER_FILE_NAME = "ledger.sqlite3"
DEFAULT_ACCOUNT = "default"
# Any constant works: it only has to be the same in every trimtab process.
_PG_MIGRATION_LOCK = 0x7472696D746162  # "trimtab"
_FILL_KINDS = frozenset({OrderEventKind.FILL, OrderEventKind.PARTIAL_FILL})
QUOTE_BATCH = 1024
"""Recorded quotes wait in memory for the next commit point, or until this many wait."""
_INSERT_HISTORY = schema.plan_history.insert()


def default_ledger_url(home: Path) -> str:
    """The SQLite ledger under a trimtab home directory (usually $TRIMTAB_HOME)."""
    path = Path(home).expanduser().absolute() / LEDGER_FILE_NAME
    return URL.create("sqlite", database=str(path)).render_as_string()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the ledger's migrations, built in code (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of trimtab."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _is_known_revision(revision: str) -> bool:
    scripts = ScriptDirectory.from_config(alembic_config())
    return any(script.revision == revision for script in scripts.walk_revisions())


def _canonical_decimal(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is not UTC and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got {value}")


class SqlLedger:
    """The Ledger port on a SQL database: SQLite file or memory, or PostgreSQL.

    url: a SQLAlchemy URL, e.g. default_ledger_url(home) or
    postgresql+psycopg://user@host:5432/db. account: the namespace of every row, so
    several accounts can share one database (one SqlLedger per account). migrate: bring
    the schema to the newest migration on first use. max_pending: how many order
    snapshots and events may wait in memory for the next commit point; 0 commits each
    as it arrives. sqlite_synchronous: SQLite's synchronous pragma; NORMAL in WAL mode
    survives a killed process, FULL also a power cut, at several times the cost.

    The SqlLedgers of one process on the same database (several accounts) share its
    connections: one pool and one held connection for the frequent writes, closed with the
    last of them; what one has waiting for a commit point, they all commit.
    share_connections False gives this one connections of its own, as another process has
    (an in-memory SQLite database is never shared: each SqlLedger on one is its own).

    One SqlLedger may be shared by threads (writes are serialized by a lock); each
    process opens its own.
    """

    def __init__(
        self,
        url: str,
        *,
        account: str = DEFAULT_ACCOUNT,
        migrate: bool = True,
        busy_timeout_seconds: float = 30.0,
        sqlite_synchronous: str = "NORMAL",
        max_pending: int = 256,
        share_connections: bool = True,
    ) -> None:
        if not account or len(account) > schema.ACCOUNT_LENGTH:
            raise ConfigurationError(
                f"ledger account must be 1 to {schema.ACCOUNT_LENGTH} characters"
            )
        if max_pending < 0:
            raise ConfigurationError("max_pending must be >= 0")
        if sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"sqlite_synchronous: unknown value {sqlite_synchronous!r}")
        try:
            self._url = make_url(url)
        except (ArgumentError, ValueError) as exc:
            raise ConfigurationError(f"ledger URL is not a database URL: {exc}") from None
        if self._url.drivername in ("postgresql", "postgres"):
            # The driver trimtab installs; SQLAlchemy's default for plain postgresql:// is psycopg2.
            self._url = self._url.set(drivername="postgresql+psycopg")
        self._account = account
        self._auto_migrate = migrate
        self._busy_timeout = busy_timeout_seconds
        self._sqlite_synchronous = sqlite_synchronous.upper()
        self._share_connections = share_connections
        self._shared: _Shared | None = None
        self._statements: dict[tuple[str, str, str], Insert] = {}
        self._plan_refs: dict[str, int] = {}
        self._max_pending = max_pending
        self._ready = False
        self._closed = False

    # --- lifecycle ---

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._url.render_as_string(hide_password=True)

    @property
    def account(self) -> str:
        return self._account

    @property
    def dialect(self) -> str:
        """sqlite or postgresql."""
        return self._url.get_backend_name()

    def __repr__(self) -> str:
        return f"SqlLedger({self.url!r}, account={self._account!r})"

    def __enter__(self) -> SqlLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit pending orders and events, then let go of the connections (closed with the
        last SqlLedger of this database in the process). Safe to call twice."""
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.release()

    def open(self) -> None:
        """Connect and migrate now, instead of on the first call."""
        self._ensure_ready()

    def migrate(self) -> str:
        """Upgrade the schema to the newest migration; returns the revision now current.

        Safe to call from several processes at once: the first migrates, the others wait
        and find nothing to do.
        """
        engine = self._get_engine()
        with self._write(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            current = MigrationContext.configure(conn).get_current_revision()
            head = head_revision()
            if current is not None and not _is_known_revision(current):
                raise ConfigurationError(
                    f"the ledger database is at schema revision {current}, newer than this "
                    f"version of trimtab knows (newest {head}): upgrade trimtab"
                )
            if current != head:
                logger.info("ledger migrate from=%s to=%s url=%s", current, head, self.url)
                command.upgrade(alembic_config(conn), "head")
        self._ready = True
        if self._shared is not None:
            self._shared.migrated = True
        return head

    def current_revision(self) -> str | None:
        """The schema revision of the database, None for an empty one."""
        engine = self._get_engine()
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _get_engine(self) -> Engine:
        return self._connections().engine

    def _connections(self) -> _Shared:
        if self._closed:
            raise RuntimeError("this SqlLedger is closed")
        if self._shared is None:
            self._shared = _Shared.acquire(self._share_key(), self._create_engine)
        return self._shared

    def _share_key(self) -> tuple[object, ...] | None:
        """What makes two SqlLedgers of this process use the same connections: the same
        database with the same settings. Never an in-memory SQLite database (each is its own)."""
        if not self._share_connections or (self.dialect == "sqlite" and _sqlite_in_memory(self._url)):
            return None
        return (self._url.render_as_string(hide_password=False), self._busy_timeout, self._sqlite_synchronous)

    def _ensure_ready(self) -> Engine:
        shared = self._connections()
        if not self._ready:
            if self._auto_migrate and not shared.migrated:
                self.migrate()
            self._ready = True
        return shared.engine

    @property
    def _lock(self) -> threading.RLock:
        """Serializes the use of the held connection, which is shared."""
        return self._connections().lock

    def _create_engine(self) -> Engine:
        url = self._url
        backend = url.get_backend_name()
        if backend == "sqlite":
            return self._create_sqlite_engine(url)
        if backend == "postgresql":
            return create_engine(url, pool_pre_ping=True)
        raise ConfigurationError(
            f"ledger URL: unsupported database {backend!r} (use sqlite or postgresql)"
        )

    def _create_sqlite_engine(self, url: URL) -> Engine:
        database = url.database or ""
        in_memory = _sqlite_in_memory(url)
        if not in_memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The pool and the held write connection (behind a lock) may be used from any thread.
        connect_args: dict[str, Any] = {"timeout": self._busy_timeout, "check_same_thread": False}
        if in_memory:
            # One shared connection, or every checkout would see its own empty database.
            engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
        else:
            engine = create_engine(url, connect_args=connect_args)
        busy_ms = int(self._busy_timeout * 1000)
        synchronous = self._sqlite_synchronous

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take over transaction control from the sqlite3 module (see _on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                if not in_memory:
                    cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA synchronous = {synchronous}")
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A write transaction takes the write lock up front: a deferred one that reads
            # first could not upgrade to a writer once another process committed.
            if conn.get_execution_options().get("trimtab_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine

    @contextmanager
    def _write(self, engine: Engine | None = None) -> Iterator[Connection]:
        """A write transaction: committed at the end, rolled back on an exception.

        Pending orders and events are committed first, so the record keeps its order.
        """
        if engine is None:
            engine = self._ensure_ready()
            self.flush()
        with engine.connect() as conn:
            conn.execution_options(trimtab_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self, *, flush: bool = True) -> Iterator[Connection]:
        """A read transaction that sees every write of this ledger (pending ones committed)."""
        engine = self._ensure_ready()
        if flush:
            self.flush()
        with engine.connect() as conn, conn.begin():
            yield conn

    def _insert_ignore(
        self, conn: Connection, table: Table, values: dict[str, Any], unique: Sequence[str]
    ) -> int | None:
        """INSERT that writes nothing when the row would break the unique key `unique`.

        Returns the new row's id, or None when nothing was inserted. (RETURNING tells,
        where the rowcount of an INSERT is not reliable across drivers.)
        """
        key = ("ignore", table.name, conn.dialect.name)
        stmt = self._statements.get(key)
        if stmt is None:
            dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = (
                dialect_insert(table)
                .on_conflict_do_nothing(index_elements=list(unique))
                .returning(table.c.id)
            )
            self._statements[key] = stmt
        row = conn.execute(stmt, values).first()
        return int(row[0]) if row is not None else None

    def _upsert(
        self,
        conn: Connection,
        table: Table,
        values: dict[str, Any],
        unique: Sequence[str],
        update_columns: Sequence[str],
    ) -> None:
        """INSERT that updates update_columns of the row already holding the unique key."""
        stmt: Insert
        if conn.dialect.name == "postgresql":
            pg = postgresql.insert(table)
            stmt = pg.on_conflict_do_update(
                index_elements=list(unique),
                set_={name: pg.excluded[name] for name in update_columns},
            )
        else:
            lite = sqlite.insert(table)
            stmt = lite.on_conflict_do_update(
                index_elements=list(unique),
                set_={name: lite.excluded[name] for name in update_columns},
            )
        conn.execute(stmt, values)

    # --- plans ---

    def _plan_key(self, plan_id: str) -> Any:
        return (schema.plans.c.account == self._account) & (schema.plans.c.plan_id == plan_id)

    def _lock_plan(self, conn: Connection, plan_id: str) -> Row[Any] | None:
        stmt = select(schema.plans).where(self._plan_key(plan_id)).with_for_update()
        return conn.execute(stmt).first()

    def _plan_ref(self, conn: Connection, plan_id: str) -> int | None:
        """The plan's integer key, or None for an unknown plan. Plans are never deleted."""
        ref = self._plan_refs.get(plan_id)
        if ref is None:
            ref = conn.execute(
                select(schema.plans.c.id).where(self._plan_key(plan_id))
            ).scalar_one_or_none()
            if ref is not None:
                self._plan_refs[plan_id] = ref
        return ref

    def _require_plan_ref(self, conn: Connection, plan_id: str) -> int:
        ref = self._plan_ref(conn, plan_id)
        if ref is None:
            raise LookupError(f"no plan {plan_id!r} in the ledger")
        return ref

    def _log_state(
        self,
        conn: Connection,
        plan_ref: int,
        from_state: PlanState | None,
        to_state: PlanState,
        owner: str | None,
        now: datetime,
        note: str,
    ) -> None:
        conn.execute(
            _INSERT_HISTORY,
            {
                "plan_ref": plan_ref,
                "from_state": from_state.value if from_state is not None else None,
                "to_state": to_state.value,
                "owner": owner,
                "time": now,
                "note": note,
            },
        )

    def begin_plan(
        self,
        plan_id: str,
        content_hash: str,
        plan_json: str,
        correlation_id: str | None,
        owner: str,
        *,
        now: datetime,
        lease_ttl: timedelta,
    ) -> PlanClaim:
        """Claim a plan atomically: NEW, ALREADY_DONE, RESUME or BUSY (see ClaimOutcome)."""
        _require_aware(now, "now")
        if lease_ttl <= timedelta(0):
            raise ValueError("lease_ttl must be positive")
        if not owner or len(owner) > schema.OWNER_LENGTH:
            raise ValueError(f"owner must be 1 to {schema.OWNER_LENGTH} characters")
        if not plan_id or len(plan_id) > schema.PLAN_ID_LENGTH:
            raise PlanValidationError(f"plan_id must be 1 to {schema.PLAN_ID_LENGTH} characters")
        expires = now + lease_ttl
        with self._write() as conn:
            row = self._lock_plan(conn, plan_id)
            if row is None:
                values = {
                    "account": self._account,
                    "plan_id": plan_id,
                    "content_hash": content_hash,
                    "plan_json": plan_json,
                    "correlation_id": correlation_id,
                    "state": PlanState.RECEIVED.value,
                    "owner": owner,
                    "lease_expires_at": expires,
                    "created_at": now,
                    "updated_at": now,
                }
                ref = self._insert_ignore(conn, schema.plans, values, ("account", "plan_id"))
                if ref is not None:
                    self._log_state(conn, ref, None, PlanState.RECEIVED, owner, now, "new")
                    claim = PlanClaim(ClaimOutcome.NEW, plan_id, PlanState.RECEIVED, owner, expires)
                else:
                    # Another process inserted it between our read and our insert.
                    row = self._lock_plan(conn, plan_id)
                    assert row is not None
            if row is not None:
                claim = self._claim_existing(conn, row, content_hash, owner, now, expires)
        logger.info(
            "ledger plan claimed outcome=%s plan_id=%s owner=%s state=%s",
            claim.outcome.value, plan_id, owner, claim.state.value,
        )
        return claim

    def _claim_existing(
        self,
        conn: Connection,
        row: Row[Any],
        content_hash: str,
        owner: str,
        now: datetime,
        expires: datetime,
    ) -> PlanClaim:
        plan_id: str = row.plan_id
        if row.content_hash != content_hash:
            raise PlanValidationError(
                f"plan_id {plan_id} was already used for a different plan "
                "(its content differs from the stored one); use a new plan_id"
            )
        state = PlanState(row.state)
        if row.result_json is not None or state.is_terminal:
            result = (
                ExecutionResult.model_validate_json(row.result_json)
                if row.result_json is not None
                else None
            )
            return PlanClaim(
                ClaimOutcome.ALREADY_DONE, plan_id, state, row.owner, row.lease_expires_at, result
            )
        lease_live = row.lease_expires_at is not None and row.lease_expires_at > now
        if row.owner is not None and row.owner != owner and lease_live:
            return PlanClaim(ClaimOutcome.BUSY, plan_id, state, row.owner, row.lease_expires_at)
        conn.execute(
            update(schema.plans)
            .where(schema.plans.c.id == row.id)
            .values(owner=owner, lease_expires_at=expires, updated_at=now)
        )
        if row.owner == owner:
            note = "resumed by its owner"
        elif row.owner is None:
            note = "resumed (lease released)"
        else:
            note = f"resumed (lease of {row.owner} expired)"
        self._log_state(conn, row.id, state, state, owner, now, note)
        return PlanClaim(ClaimOutcome.RESUME, plan_id, state, owner, expires)

    def renew_lease(self, plan_id: str, owner: str, *, now: datetime, lease_ttl: timedelta) -> bool:
        """Extend owner's lease to now + lease_ttl; False when owner no longer holds the plan.

        Called every few seconds of a run: one statement on the held connection, committed
        with what waits for the next commit point.
        """
        _require_aware(now, "now")
        if lease_ttl <= timedelta(0):
            raise ValueError("lease_ttl must be positive")
        writer = self._writer()
        with self._lock:
            return writer.renew_lease(self._account, plan_id, owner, now, now + lease_ttl)

    def release_lease(self, plan_id: str, owner: str, *, now: datetime, note: str | None = None) -> bool:
        """Give up owner's lease so another process may resume the plan at once."""
        _require_aware(now, "now")
        with self._write() as conn:
            row = self._lock_plan(conn, plan_id)
            if row is None or row.owner != owner:
                return False
            conn.execute(
                update(schema.plans)
                .where(schema.plans.c.id == row.id)
                .values(owner=None, lease_expires_at=None, updated_at=now)
            )
            state = PlanState(row.state)
            why = f"released by {owner}" + (f": {note}" if note else "")
            self._log_state(conn, row.id, state, state, None, now, why)
            return True

    def set_plan_state(self, plan_id: str, state: PlanState, *, now: datetime) -> None:
        """Move the plan to state; IllegalTransitionError if the state machine forbids it.

        A few times per run: prepared statements on the held connection, committed with
        what waits for the next commit point.
        """
        _require_aware(now, "now")
        state = PlanState(state)
        writer = self._writer()
        with self._lock:
            current = writer.change_state(self._account, plan_id, state, now)
        if current is not state:
            logger.info(
                "ledger plan state plan_id=%s from=%s to=%s", plan_id, current.value, state.value
            )

    def plan_state(self, plan_id: str) -> PlanState | None:
        with self._read() as conn:
            value = conn.execute(
                select(schema.plans.c.state).where(self._plan_key(plan_id))
            ).scalar_one_or_none()
        return PlanState(value) if value is not None else None

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        with self._read() as conn:
            row = conn.execute(select(schema.plans).where(self._plan_key(plan_id))).first()
        if row is None:
            return None
        return PlanRecord(
            plan_id=row.plan_id,
            content_hash=row.content_hash,
            plan_json=row.plan_json,
            correlation_id=row.correlation_id,
            state=PlanState(row.state),
            owner=row.owner,
            lease_expires_at=row.lease_expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            status=row.status,
        )

    def finish_plan(
        self,
        plan_id: str,
        result: ExecutionResult,
        state: PlanState = PlanState.DONE,
        *,
        now: datetime,
    ) -> None:
        """Store the result, move to DONE or FAILED, release the lease."""
        _require_aware(now, "now")
        state = PlanState(state)
        if not state.is_terminal:
            raise IllegalTransitionError(f"finish_plan needs DONE or FAILED, got {state.value}")
        if result.plan_id != plan_id:
            raise ValueError(f"the result is for plan {result.plan_id!r}, not {plan_id!r}")
        finished = (result.status.value, result.model_dump_json())
        writer = self._writer()
        with self._lock:
            writer.change_state(self._account, plan_id, state, now, finished=finished)
        logger.info(
            "ledger plan finished plan_id=%s state=%s status=%s",
            plan_id, state.value, result.status.value,
        )

    def stored_result(self, plan_id: str) -> ExecutionResult | None:
        with self._read() as conn:
            text = conn.execute(
                select(schema.plans.c.result_json).where(self._plan_key(plan_id))
            ).scalar_one_or_none()
        return ExecutionResult.model_validate_json(text) if text is not None else None

    def list_plans(self, limit: int | None = 50) -> list[PlanSummary]:
        """Plans, newest first, with order and fill totals."""
        p = schema.plans
        stmt = (
            select(
                p.c.id, p.c.plan_id, p.c.correlation_id, p.c.state, p.c.status,
                p.c.created_at, p.c.updated_at,
            )
            .where(p.c.account == self._account)
            .order_by(p.c.created_at.desc(), p.c.plan_id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            refs = [int(row.id) for row in rows]
            order_counts: dict[int, int] = {}
            fill_totals: dict[int, tuple[int, Decimal]] = {}
            i, f = schema.intents, schema.fills
            for chunk in _chunks(refs, 500):
                counted = conn.execute(
                    select(i.c.plan_ref, func.count())
                    .where(i.c.plan_ref.in_(chunk))
                    .group_by(i.c.plan_ref)
                )
                order_counts.update({int(ref): int(count) for ref, count in counted})
                # Decimal text cannot be summed in SQL exactly on every backend: sum here.
                for fill in conn.execute(
                    select(f.c.plan_ref, f.c.qty, f.c.price).where(f.c.plan_ref.in_(chunk))
                ):
                    count, notional = fill_totals.get(fill.plan_ref, (0, Decimal(0)))
                    fill_totals[fill.plan_ref] = (count + 1, notional + fill.qty * fill.price)
        summaries = []
        for row in rows:
            count, notional = fill_totals.get(row.id, (0, Decimal(0)))
            summaries.append(
                PlanSummary(
                    plan_id=row.plan_id,
                    correlation_id=row.correlation_id,
                    state=PlanState(row.state),
                    status=row.status,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                    orders=order_counts.get(row.id, 0),
                    fills=count,
                    filled_notional=notional,
                )
            )
        return summaries

    def _plan_rows(self, table: Table, plan_id: str) -> tuple[int | None, list[Row[Any]]]:
        """The plan's rows of table, oldest first ([] for an unknown plan)."""
        with self._read() as conn:
            ref = self._plan_ref(conn, plan_id)
            if ref is None:
                return None, []
            rows = conn.execute(
                select(table).where(table.c.plan_ref == ref).order_by(table.c.id)
            ).all()
        return ref, list(rows)

    def history(self, plan_id: str) -> list[StateChange]:
        _, rows = self._plan_rows(schema.plan_history, plan_id)
        return [
            StateChange(
                plan_id=plan_id,
                from_state=PlanState(row.from_state) if row.from_state is not None else None,
                to_state=PlanState(row.to_state),
                owner=row.owner,
                time=row.time,
                note=row.note,
            )
            for row in rows
        ]

    # --- intents, orders, events, fills ---

    def record_intent(
        self,
        plan_id: str,
        request: OrderRequest,
        *,
        step: int,
        quote: Quote | None,
        time: datetime,
    ) -> bool:
        """Record an order about to be sent, durably, with everything recorded before it.

        False, writing nothing, when this plan already has an intent with this client
        order id.
        """
        return self.record_intents(plan_id, [NewIntent(request, step, quote, time)])[0]

    def record_intents(self, plan_id: str, intents: Sequence[NewIntent]) -> list[bool]:
        """Record orders about to be sent, durably, in one commit with everything recorded
        before them; for each, False when the plan already had an intent with its id."""
        for intent in intents:
            _require_aware(intent.time, "time")
        writer, ref = self._hot_writer(plan_id)
        rows = []
        for intent in intents:
            request, quote = intent.request, intent.quote
            values: dict[str, Any] = {
                "plan_ref": ref,
                "client_order_id": request.client_order_id,
                "symbol": request.symbol,
                "side": request.side.value,
                "qty": request.qty,
                "order_type": request.order_type.value,
                "limit_price": request.limit_price,
                "time_in_force": request.time_in_force.value,
                "step": intent.step,
                "quote_bid": quote.bid if quote is not None else None,
                "quote_ask": quote.ask if quote is not None else None,
                "quote_bid_size": quote.bid_size if quote is not None else None,
                "quote_ask_size": quote.ask_size if quote is not None else None,
                "quote_time": quote.timestamp if quote is not None else None,
                "time": intent.time,
            }
            rows.append(writer.row("intent", values))
        with self._lock:
            return [row_id is not None for row_id in writer.commit(rows)]

    def record_order(self, plan_id: str, order: OrderSnapshot) -> None:
        """Record the broker's view of an order (durable at the next commit point)."""
        writer, ref = self._hot_writer(plan_id)
        values = {"plan_ref": ref, **_snapshot_values(order)}
        with self._lock:
            writer.add(_PendingRow(writer.row("order", values)))
            self._commit_if_full(writer)

    def record_event(self, plan_id: str, event: OrderEvent) -> None:
        """Record an order event, and a fill row for a fill (durable at the next commit point)."""
        _require_aware(event.timestamp, "event.timestamp")
        writer, ref = self._hot_writer(plan_id)
        order = event.order
        values = {
            "plan_ref": ref,
            "kind": event.kind.value,
            "time": event.timestamp,
            "fill_qty": event.fill_qty,
            "fill_price": event.fill_price,
            "reason": event.reason,
            "extra_json": json.dumps(event.extra, sort_keys=True) if event.extra else None,
            **_snapshot_values(order),
        }
        is_fill = (
            event.kind in _FILL_KINDS
            and event.fill_qty is not None
            and event.fill_price is not None
            and event.fill_qty > 0
        )
        with self._lock:
            fill_row = None
            if is_fill:
                fill_row = writer.row(
                    "fill",
                    {
                        "plan_ref": ref,
                        "event_id": 0,  # the event's id, set when both are written
                        "account": self._account,
                        "client_order_id": order.client_order_id,
                        "broker_order_id": order.broker_order_id,
                        "symbol": order.symbol,
                        "side": order.side.value,
                        "qty": event.fill_qty,
                        "price": event.fill_price,
                        "time": event.timestamp,
                        "cum_qty_key": _canonical_decimal(order.filled_qty),
                    },
                )
            writer.add(_PendingRow(writer.row("event", values), fill_row))
            self._commit_if_full(writer)

    def record_quote(self, plan_id: str, quote: Quote) -> None:
        """Record a quote of a symbol the plan works (durable at the next commit point).

        Quotes are written in batches (executemany) at the commit points of orders and
        events, or when QUOTE_BATCH of them wait.
        """
        _require_aware(quote.timestamp, "quote.timestamp")
        shared = self._shared
        ref = self._plan_refs.get(plan_id)
        if shared is None or ref is None or not self._ready:
            writer, ref = self._hot_writer(plan_id)
        else:
            writer = shared.hot
        with self._lock:
            writer.add_quote(ref, quote)
            if len(writer.quotes) >= QUOTE_BATCH:
                writer.commit()

    def flush(self) -> None:
        """Commit the order snapshots, events and quotes waiting in memory."""
        shared = self._shared
        if shared is not None:
            shared.flush()

    # Orders and events arrive many times per order, so they skip SQLAlchemy's per-statement
    # machinery: statements compiled once and run on one held DBAPI connection, with
    # SQLAlchemy's own bind processors (the same conversions as every other path). They
    # wait in memory for the next commit point: the next intent (so all of them are durable
    # before the next order is sent), any change to a plan, any read, flush() and close(),
    # or max_pending rows.

    def _hot_writer(self, plan_id: str) -> tuple[_HotWriter, int]:
        ref = self._plan_refs.get(plan_id)
        if ref is None:
            with self._read(flush=False) as conn:
                ref = self._require_plan_ref(conn, plan_id)
        return self._writer(), ref

    def _writer(self) -> _HotWriter:
        self._ensure_ready()
        return self._connections().hot

    def _commit_if_full(self, writer: _HotWriter) -> None:
        if len(writer.pending) > self._max_pending:
            writer.commit()

    def intents(self, plan_id: str) -> list[IntentRecord]:
        _, rows = self._plan_rows(schema.intents, plan_id)
        return [_intent_from_row(plan_id, row) for row in rows]

    def client_order_ids(self, plan_id: str) -> list[ClientOrderId]:
        return [intent.client_order_id for intent in self.intents(plan_id)]

    def orders(self, plan_id: str) -> list[OrderSnapshot]:
        _, rows = self._plan_rows(schema.orders, plan_id)
        return [_snapshot_from_row(row) for row in rows]

    def events(self, plan_id: str) -> list[OrderEvent]:
        _, rows = self._plan_rows(schema.events, plan_id)
        return [
            OrderEvent(
                kind=OrderEventKind(row.kind),
                order=_snapshot_from_row(row),
                timestamp=row.time,
                fill_qty=row.fill_qty,
                fill_price=row.fill_price,
                reason=row.reason,
                extra=dict(json.loads(row.extra_json)) if row.extra_json else {},
            )
            for row in rows
        ]

    def fills(self, plan_id: str) -> list[FillRecord]:
        _, rows = self._plan_rows(schema.fills, plan_id)
        return [
            FillRecord(
                plan_id=plan_id,
                client_order_id=ClientOrderId(row.client_order_id),
                broker_order_id=BrokerOrderId(row.broker_order_id),
                symbol=row.symbol,
                side=Side(row.side),
                qty=row.qty,
                price=row.price,
                time=row.time,
            )
            for row in rows
        ]

    def quotes(self, plan_id: str) -> list[Quote]:
        _, rows = self._plan_rows(schema.quotes, plan_id)
        return [
            Quote(
                symbol=row.symbol,
                bid=row.bid,
                ask=row.ask,
                bid_size=row.bid_size,
                ask_size=row.ask_size,
                timestamp=row.time,
            )
            for row in rows
        ]

    def traded_notional_since(self, since: datetime) -> Decimal:
        """Sum of qty * price of every fill of this account at or after since."""
        _require_aware(since, "since")
        t = schema.fills
        total = Decimal(0)
        with self._read() as conn:
            rows = conn.execute(
                select(t.c.qty, t.c.price)
                .where(t.c.account == self._account)
                .where(t.c.time >= since)
            )
            for row in rows:
                total += row.qty * row.price
        return total

    # --- flags ---

    def set_flag(self, name: str, value: str, *, now: datetime) -> None:
        _require_aware(now, "now")
        with self._write() as conn:
            values = {"account": self._account, "name": name, "value": value, "updated_at": now}
            self._upsert(conn, schema.flags, values, ("account", "name"), ("value", "updated_at"))
        logger.info("ledger flag set name=%s account=%s", name, self._account)

    def get_flag(self, name: str) -> str | None:
        """A flag's value (read often: the kill switch is checked every second of a run)."""
        writer = self._writer()
        with self._lock:
            return writer.read_flag(self._account, name)

    def clear_flag(self, name: str) -> None:
        t = schema.flags
        with self._write() as conn:
            conn.execute(
                sql_delete(t).where(t.c.account == self._account).where(t.c.name == name)
            )
        logger.info("ledger flag cleared name=%s account=%s", name, self._account)


class _Prepared:
    """An INSERT compiled once for one dialect, with the bind processors of its columns."""

    __slots__ = ("columns", "processors", "sql")

    def __init__(
        self, table: Table, dialect: Dialect, unique: Sequence[str] | None, *, returning: bool = True
    ) -> None:
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        columns = [column for column in table.columns if column.name != "id"]
        stmt = insert(table).values({c.name: bindparam(c.name, type_=c.type) for c in columns})
        if unique is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(unique))
        compiled = stmt.returning(table.c.id) if returning else stmt
        self.sql = compiled.compile(dialect=dialect).string
        self.columns = frozenset(column.name for column in columns)
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for column in columns:
            processor = schema.hot_bind_processor(column.type, dialect)
            if processor is not None:
                self.processors[column.name] = processor

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """values converted for the driver, in place; raises here on a float or a naive datetime."""
        if values.keys() != self.columns:
            raise ValueError(f"columns differ from the table's: {sorted(values.keys() ^ self.columns)}")
        for name, processor in self.processors.items():
            values[name] = processor(values[name])
        return values


@dataclass(slots=True)
class _PendingRow:
    """A row waiting for the next commit: an order or an event, and the event's fill."""

    row: tuple[_Prepared, dict[str, Any]]
    fill: tuple[_Prepared, dict[str, Any]] | None = None


def _by_statement(statements: Iterable[_Prepared]) -> dict[_Prepared, list[int]]:
    """The positions of each statement's rows, in their order (statements in first-seen order)."""
    positions: dict[_Prepared, list[int]] = {}
    for i, prepared in enumerate(statements):
        positions.setdefault(prepared, []).append(i)
    return positions


def _sqlite_in_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:")


class _Shared:
    """The engine and the held write connection of one database, shared in a process by
    every SqlLedger on it (one per account, and a worker runs many accounts), so their
    number of connections does not grow with the accounts. Closed with the last user.
    """

    _open: ClassVar[dict[tuple[object, ...], _Shared]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: tuple[object, ...] | None, engine: Engine) -> None:
        self.key = key
        self.engine = engine
        self.hot = _HotWriter(engine)
        self.lock = threading.RLock()  # serializes the held connection
        self.users = 0
        self.migrated = False

    @classmethod
    def acquire(cls, key: tuple[object, ...] | None, create: Callable[[], Engine]) -> _Shared:
        """The connections of key's database (new ones when key is None), counted as used."""
        with cls._open_lock:
            shared = cls._open.get(key) if key is not None else None
            if shared is None:
                shared = cls(key, create())
                if key is not None:
                    cls._open[key] = shared
            shared.users += 1
            return shared

    def flush(self) -> None:
        with self.lock:
            if self.hot.has_pending:
                self.hot.commit()

    def release(self) -> None:
        """Commit what waits; the last user also closes the connections."""
        try:
            self.flush()
        finally:
            with self._open_lock:
                self.users -= 1
                last = self.users <= 0
                if last and self.key is not None and self._open.get(self.key) is self:
                    del self._open[self.key]
            if last:
                with self.lock:
                    self.hot.close()
                self.engine.dispose()

    @classmethod
    def forget_inherited(cls) -> None:
        """In a forked child: the parent's connections are not this process's to share."""
        cls._open = {}


os.register_at_fork(after_in_child=_Shared.forget_inherited)


class _Statements:
    """The hot writer's statements for one dialect, compiled once per process."""

    _compiled: ClassVar[dict[tuple[str, str], _Statements]] = {}

    def __init__(self, dialect: Dialect) -> None:
        if dialect.name == "sqlite":
            # Named parameters, so one parameter dict serves every dialect.
            dialect = sqlite.dialect(paramstyle="named")
        self.inserts = {
            "intent": _Prepared(schema.intents, dialect, ("plan_ref", "client_order_id")),
            "order": _Prepared(schema.orders, dialect, None),
            "event": _Prepared(schema.events, dialect, None),
            "fill": _Prepared(schema.fills, dialect, ("plan_ref", "broker_order_id", "cum_qty_key")),
        }
        # Quotes need no ids back: they go in one executemany per commit.
        self.quote = _Prepared(schema.quotes, dialect, None, returning=False)
        flags = schema.flags
        self.flag = (
            select(flags.c.value)
            .where(flags.c.account == bindparam("account"))
            .where(flags.c.name == bindparam("name"))
            .compile(dialect=dialect)
            .string
        )
        plans = schema.plans
        renew = (
            update(plans)
            .where(plans.c.account == bindparam("account"))
            .where(plans.c.plan_id == bindparam("plan_id"))
            .where(plans.c.owner == bindparam("owner"))
            .values(lease_expires_at=bindparam("expires"), updated_at=bindparam("now"))
            .returning(plans.c.id)
        )
        for state in PlanState:
            if state.is_terminal:  # our own constants, written into the statement
                renew = renew.where(plans.c.state != literal_column(f"'{state.value}'"))
        self.renew = renew.compile(dialect=dialect).string
        # A plan's state, changed a few times per run: its row locked where that is a
        # statement (PostgreSQL; SQLite's BEGIN IMMEDIATE holds the whole database).
        self.plan = (
            select(plans.c.id, plans.c.state, plans.c.owner)
            .where(plans.c.account == bindparam("account"))
            .where(plans.c.plan_id == bindparam("plan_id"))
            .with_for_update()
            .compile(dialect=dialect)
            .string
        )
        self.state = (
            update(plans)
            .where(plans.c.id == bindparam("id"))
            .values(state=bindparam("state"), updated_at=bindparam("now"))
            .compile(dialect=dialect)
            .string
        )
        self.finish = (
            update(plans)
            .where(plans.c.id == bindparam("id"))
            .values(
                state=bindparam("state"),
                status=bindparam("status"),
                result_json=bindparam("result"),
                owner=null(),
                lease_expires_at=null(),
                updated_at=bindparam("now"),
            )
            .compile(dialect=dialect)
            .string
        )
        self.history = _Prepared(schema.plan_history, dialect, None, returning=False)
        time = schema.hot_bind_processor(schema.UtcDateTime(), dialect)
        assert time is not None
        self.time: Callable[[Any], Any] = time

    @classmethod
    def of(cls, dialect: Dialect) -> _Statements:
        key = (dialect.name, str(dialect.paramstyle))
        statements = cls._compiled.get(key)
        if statements is None:
            statements = cls._compiled[key] = cls(dialect)
        return statements


class _HotWriter:
    """The frequent inserts, on one held DBAPI connection. Not thread-safe: hold the lock."""

    def __init__(self, engine: Engine) -> None:
        self._sqlite = engine.dialect.name == "sqlite"
        statements = _Statements.of(engine.dialect)
        self._statements = statements.inserts
        self._quote = statements.quote
        self._flag_sql = statements.flag
        self._renew_sql = statements.renew
        self._plan_sql = statements.plan
        self._state_sql = statements.state
        self._finish_sql = statements.finish
        self._history = statements.history
        self._time = statements.time
        dbapi = engine.dialect.loaded_dbapi
        self._connection_errors: tuple[type[Exception], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
        )
        self._engine = engine
        self._connection: PoolProxiedConnection | None = None
        self.pending: list[_PendingRow] = []
        self.quotes: list[dict[str, Any]] = []

    @property
    def has_pending(self) -> bool:
        return bool(self.pending or self.quotes)

    def row(self, name: str, values: dict[str, Any]) -> tuple[_Prepared, dict[str, Any]]:
        prepared = self._statements[name]
        return prepared, prepared.params(values)

    def add(self, pending: _PendingRow) -> None:
        self.pending.append(pending)

    def add_quote(self, plan_ref: int, quote: Quote) -> None:
        values = {
            "plan_ref": plan_ref,
            "symbol": quote.symbol,
            "bid": quote.bid,
            "ask": quote.ask,
            "bid_size": quote.bid_size,
            "ask_size": quote.ask_size,
            "time": quote.timestamp,
        }
        self.quotes.append(self._quote.params(values))

    def commit(self, last: Sequence[tuple[_Prepared, dict[str, Any]]] = ()) -> list[int | None]:
        """Write the pending rows and quotes, then the rows of `last`, in one transaction.

        Returns the id of each row of `last`, None where it was not written because of its
        unique key. On an error nothing is written and the pending rows stay pending.
        """
        def insert(cursor: DBAPICursor) -> list[int | None]:
            ids: list[int | None] = [None] * len(last)
            for prepared, indexes in _by_statement(row[0] for row in last).items():
                written = self._insert_many(cursor, prepared, [last[i][1] for i in indexes])
                for i, row_id in zip(indexes, written, strict=True):
                    ids[i] = row_id
            return ids

        return self._transaction(insert)

    def renew_lease(self, account: str, plan_id: str, owner: str, now: datetime, expires: datetime) -> bool:
        """Extend the lease (with the pending rows, in one transaction); False when owner
        no longer holds the unfinished plan."""
        params = {
            "account": account,
            "plan_id": plan_id,
            "owner": owner,
            "now": self._time(now),
            "expires": self._time(expires),
        }

        def renew(cursor: DBAPICursor) -> bool:
            cursor.execute(self._renew_sql, params)
            return cursor.fetchone() is not None

        return self._transaction(renew)

    def change_state(
        self,
        account: str,
        plan_id: str,
        state: PlanState,
        now: datetime,
        *,
        finished: tuple[str, str] | None = None,
    ) -> PlanState:
        """Move the plan to state (with the pending rows, in one transaction), its history
        row too; the state it was in. finished: the result's (status, JSON), stored with the
        lease released (always written). LookupError for an unknown plan,
        IllegalTransitionError where the state machine forbids it (then nothing is written)."""

        def change(cursor: DBAPICursor) -> PlanState:
            cursor.execute(self._plan_sql, {"account": account, "plan_id": plan_id})
            row = cursor.fetchone()
            if row is None:
                raise LookupError(f"no plan {plan_id!r} in the ledger")
            ref, current, owner = int(row[0]), PlanState(row[1]), row[2]
            current.transition(state)
            if current is state and finished is None:
                return current
            at = self._time(now)
            if finished is None:
                note = "state"
                cursor.execute(self._state_sql, {"id": ref, "state": state.value, "now": at})
            else:
                status, result_json = finished
                note = f"finished {status}"
                values = {"id": ref, "state": state.value, "now": at, "status": status, "result": result_json}
                cursor.execute(self._finish_sql, values)
            history = {"plan_ref": ref, "from_state": current.value, "to_state": state.value,
                       "owner": owner, "time": now, "note": note}
            cursor.execute(self._history.sql, self._history.params(history))
            return current

        return self._transaction(change)

    def _transaction(self, last: Callable[[DBAPICursor], _T]) -> _T:
        """Write the pending rows and quotes, then run `last`, in one transaction."""
        connection = self._connect()
        cursor = connection.cursor()
        try:
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            self._write_pending(cursor)
            if self.quotes:
                cursor.executemany(self._quote.sql, self.quotes)
            outcome = last(cursor)
            connection.commit()
        except self._connection_errors:
            # The connection may be dead (a server restart): the next commit opens another.
            self._connection = None
            connection.invalidate()
            raise
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
        self.pending.clear()
        self.quotes.clear()
        return outcome

    def read_flag(self, account: str, name: str) -> str | None:
        """A flag's committed value, read on the held connection in a transaction of its own."""
        connection = self._connect()
        cursor = connection.cursor()
        try:
            cursor.execute(self._flag_sql, {"account": account, "name": name})
            row = cursor.fetchone()
            connection.rollback()  # end the read (PostgreSQL opened a transaction for it)
        except self._connection_errors:
            self._connection = None
            connection.invalidate()
            raise
        finally:
            cursor.close()
        return None if row is None else str(row[0])

    def _connect(self) -> PoolProxiedConnection:
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        return self._connection

    def _write_pending(self, cursor: DBAPICursor) -> None:
        """The pending orders and events, each table's rows together, then the events' fills
        with the ids their events got."""
        pending = self.pending
        fills: list[tuple[_Prepared, dict[str, Any]]] = []
        for prepared, indexes in _by_statement(row.row[0] for row in pending).items():
            ids = self._insert_many(cursor, prepared, [pending[i].row[1] for i in indexes])
            for i, row_id in zip(indexes, ids, strict=True):
                fill = pending[i].fill
                if fill is not None:
                    fills.append((fill[0], {**fill[1], "event_id": row_id}))
        for prepared, indexes in _by_statement(fill[0] for fill in fills).items():
            self._insert_many(cursor, prepared, [fills[i][1] for i in indexes], ids=False)

    def _insert_many(
        self, cursor: DBAPICursor, prepared: _Prepared, rows: list[dict[str, Any]], *, ids: bool = True
    ) -> list[int | None]:
        """Insert rows in order; the id of each (None where its unique key kept it out).

        PostgreSQL gets them in one pipelined executemany (one round trip, not one per
        row); SQLite, in process, one statement a row.
        """
        if self._sqlite or len(rows) == 1:
            return [self._insert(cursor, prepared, row) for row in rows]
        cursor.executemany(prepared.sql, rows, returning=ids)  # type: ignore[call-arg]
        if not ids:
            return [None] * len(rows)
        written: list[int | None] = []
        for result in cursor.results():
            row = result.fetchone()
            written.append(int(row[0]) if row is not None else None)
        return written

    @staticmethod
    def _insert(cursor: DBAPICursor, prepared: _Prepared, params: dict[str, Any]) -> int | None:
        cursor.execute(prepared.sql, params)
        row = cursor.fetchone()
        return int(row[0]) if row is not None else None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _snapshot_values(order: OrderSnapshot) -> dict[str, Any]:
    _require_aware(order.created_at, "order.created_at")
    _require_aware(order.updated_at, "order.updated_at")
    return {
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "order_type": order.order_type.value,
        "qty": order.qty,
        "status": order.status.value,
        "filled_qty": order.filled_qty,
        "filled_avg_price": order.filled_avg_price,
        "limit_price": order.limit_price,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "reject_reason": order.reject_reason,
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
    }


def _snapshot_from_row(row: Row[Any]) -> OrderSnapshot:
    return OrderSnapshot(
        broker_order_id=BrokerOrderId(row.broker_order_id),
        client_order_id=ClientOrderId(row.client_order_id),
        symbol=row.symbol,
        side=Side(row.side),
        order_type=OrderType(row.order_type),
        qty=row.qty,
        status=OrderStatus(row.status),
        filled_qty=row.filled_qty,
        filled_avg_price=row.filled_avg_price,
        limit_price=row.limit_price,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reject_reason=row.reject_reason,
        replaced_by=BrokerOrderId(row.replaced_by) if row.replaced_by is not None else None,
        replaces=BrokerOrderId(row.replaces) if row.replaces is not None else None,
    )


def _intent_from_row(plan_id: str, row: Row[Any]) -> IntentRecord:
    quote = None
    if row.quote_bid is not None and row.quote_ask is not None and row.quote_time is not None:
        quote = Quote(
            symbol=row.symbol,
            bid=row.quote_bid,
            ask=row.quote_ask,
            bid_size=row.quote_bid_size if row.quote_bid_size is not None else Decimal(0),
            ask_size=row.quote_ask_size if row.quote_ask_size is not None else Decimal(0),
            timestamp=row.quote_time,
        )
    return IntentRecord(
        plan_id=plan_id,
        client_order_id=ClientOrderId(row.client_order_id),
        symbol=row.symbol,
        side=Side(row.side),
        qty=row.qty,
        order_type=OrderType(row.order_type),
        limit_price=row.limit_price,
        time_in_force=TimeInForce(row.time_in_force),
        step=row.step,
        quote=quote,
        time=row.time,
    )


__all__ = [
    "LEDGER_FILE_NAME",
    "SqlLedger",
    "alembic_config",
    "default_ledger_url",
    "head_revision",
]

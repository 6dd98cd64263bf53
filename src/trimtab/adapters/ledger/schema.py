"""The ledger's tables and the two column types that keep money exact and times in UTC.

A plan belongs to an account, so many accounts can share one PostgreSQL database; the
rows of a plan refer to it by its integer key. Money and quantities are stored as
decimal text on every backend: SQLite has no decimal type, and text keeps PostgreSQL and
SQLite identical and exact (no float ever enters). Times are stored in UTC; SQLite keeps
them as naive UTC text.

The Alembic migrations under migrations/versions/ create exactly these tables; a change
here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as its exact decimal text. Floats are refused."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"the ledger stores finite decimals only, got {value}")
            return str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"the ledger stores money as Decimal, got {type(value).__name__}")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value)

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC, read back as UTC. Naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the ledger stores timezone-aware datetimes only, got {value}")
        utc = value.astimezone(UTC)
        # SQLite compares times as text: store every one as naive UTC in one format.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def python_type(self) -> type[datetime]:
        return datetime


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ACCOUNT_LENGTH = 64
PLAN_ID_LENGTH = 128
ID_LENGTH = 128
OWNER_LENGTH = 200

# Row ids: 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the 64-bit rowid.
RowId = BigInteger().with_variant(Integer(), "sqlite")

plans = Table(
    "ledger_plans",
    metadata,
    # A plan's surrogate key: child rows carry this small integer, not the account and
    # plan id strings, which keeps the rows and indexes of the hot inserts small.
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account", String(ACCOUNT_LENGTH), nullable=False),
    Column("plan_id", String(PLAN_ID_LENGTH), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("plan_json", Text, nullable=False),
    Column("correlation_id", Text, nullable=True),
    Column("state", String(16), nullable=False),
    Column("owner", String(OWNER_LENGTH), nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("status", String(32), nullable=True),
    Column("result_json", Text, nullable=True),
    UniqueConstraint("account", "plan_id"),
    Index(None, "account", "created_at"),
)


def _plan_ref() -> Column[int]:
    return Column("plan_ref", RowId, ForeignKey("ledger_plans.id"), nullable=False)


plan_history = Table(
    "ledger_plan_history",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    _plan_ref(),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("owner", String(OWNER_LENGTH), nullable=True),
    Column("time", UtcDateTime, nullable=False),
    Column("note", Text, nullable=False),
    Index(None, "plan_ref"),
)

intents = Table(
    "ledger_intents",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    _plan_ref(),
    Column("client_order_id", String(ID_LENGTH), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty", DecimalText, nullable=False),
    Column("order_type", String(16), nullable=False),
    Column("limit_price", DecimalText, nullable=True),
    Column("time_in_force", String(8), nullable=False),
    Column("step", Integer, nullable=False),
    Column("quote_bid", DecimalText, nullable=True),
    Column("quote_ask", DecimalText, nullable=True),
    Column("quote_bid_size", DecimalText, nullable=True),
    Column("quote_ask_size", DecimalText, nullable=True),
    Column("quote_time", UtcDateTime, nullable=True),
    Column("time", UtcDateTime, nullable=False),
    # Also the index of a plan's intents.
    UniqueConstraint("plan_ref", "client_order_id"),
)


def _snapshot_columns() -> list[Column[Any]]:
    """The columns of an OrderSnapshot, shared by orders and events."""
    return [
        Column("client_order_id", String(ID_LENGTH), nullable=False),
        Column("broker_order_id", String(ID_LENGTH), nullable=False),
        Column("symbol", String(32), nullable=False),
        Column("side", String(8), nullable=False),
        Column("order_type", String(16), nullable=False),
        Column("qty", DecimalText, nullable=False),
        Column("status", String(32), nullable=False),
        Column("filled_qty", DecimalText, nullable=False),
        Column("filled_avg_price", DecimalText, nullable=True),
        Column("limit_price", DecimalText, nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("reject_reason", Text, nullable=True),
        Column("replaced_by", String(ID_LENGTH), nullable=True),
        Column("replaces", String(ID_LENGTH), nullable=True),
    ]


orders = Table(
    "ledger_orders",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    _plan_ref(),
    *_snapshot_columns(),
    Index(None, "plan_ref"),
)

events = Table(
    "ledger_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    _plan_ref(),
    Column("kind", String(32), nullable=False),
    Column("time", UtcDateTime, nullable=False),
    Column("fill_qty", DecimalText, nullable=True),
    Column("fill_price", DecimalText, nullable=True),
    Column("reason", Text, nullable=True),
    Column("extra_json", Text, nullable=True),
    *_snapshot_columns(),
    Index(None, "plan_ref"),
)

fills = Table(
    "ledger_fills",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    _plan_ref(),
    Column("event_id", RowId, ForeignKey("ledger_events.id"), nullable=False),
    # The account again, for the per-account sum of recent fills (a risk check).
    Column("account", String(ACCOUNT_LENGTH), nullable=False),
    Column("client_order_id", String(ID_LENGTH), nullable=False),
    Column("broker_order_id", String(ID_LENGTH), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty", DecimalText, nullable=False),
    Column("price", DecimalText, nullable=False),
    Column("time", UtcDateTime, nullable=False),
    # The order's cumulative filled quantity after this fill, in canonical text: one
    # fill per (order, cumulative quantity), so a redelivered event is not a second fill.
    # Also the index of a plan's fills.
    Column("cum_qty_key", String(64), nullable=False),
    UniqueConstraint("plan_ref", "broker_order_id", "cum_qty_key"),
    Index(None, "account", "time"),
)

quotes = Table(
    "ledger_quotes",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    _plan_ref(),
    Column("symbol", String(32), nullable=False),
    Column("bid", DecimalText, nullable=False),
    Column("ask", DecimalText, nullable=False),
    Column("bid_size", DecimalText, nullable=False),
    Column("ask_size", DecimalText, nullable=False),
    Column("time", UtcDateTime, nullable=False),
    Index(None, "plan_ref"),
)

flags = Table(
    "ledger_flags",
    metadata,
    Column("account", String(ACCOUNT_LENGTH), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

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

from collections.abc import Callable
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


def decimal_text(value: Any) -> str | None:
    """The stored form of a money or quantity value: its exact decimal text."""
    if value is None:
        return None
    if type(value) is Decimal and value.is_finite():
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"the ledger stores finite decimals only, got {value}")
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"the ledger stores money as Decimal, got {type(value).__name__}")


def to_utc(value: Any) -> datetime | None:
    """A timezone-aware datetime converted to UTC; naive values and non-datetimes are refused."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"the ledger stores timezone-aware datetimes only, got {value}")
    return value.astimezone(UTC)


_TIME_TEXTS: dict[datetime, str] = {}
_TIME_TEXTS_MAX = 4096


def sqlite_time_text(value: Any) -> str | None:
    """A timezone-aware datetime as SQLite stores it: naive UTC text with microseconds,
    the text SQLAlchemy's SQLite DATETIME writes for the UTC value (so both compare).

    The texts of recent times are kept: an order's times recur in each of its events.
    (Equal aware datetimes are the same instant, whatever their zone, so share a text.)
    """
    if isinstance(value, datetime) and value.tzinfo is not None:
        text = _TIME_TEXTS.get(value)
        if text is not None:
            return text
    utc = to_utc(value)
    if utc is None:
        return None
    text = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    if len(_TIME_TEXTS) >= _TIME_TEXTS_MAX:
        _TIME_TEXTS.clear()
    _TIME_TEXTS[utc] = text
    return text


def hot_bind_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """One function from a Python value to what the driver takes, for a column's type.

    For the two types of this module it is a single call instead of SQLAlchemy's chain
    (the decorator's conversion, then the inner type's); every other type gets
    SQLAlchemy's own processor. The results are the same (tested): this is the path of
    the frequent inserts only.
    """
    if isinstance(column_type, DecimalText):
        return decimal_text
    if isinstance(column_type, UtcDateTime):
        return sqlite_time_text if dialect.name == "sqlite" else to_utc
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    return processor


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as its exact decimal text. Floats are refused."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return decimal_text(value)

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
        utc = to_utc(value)
        # SQLite compares times as text: store every one as naive UTC in one format.
        return utc.replace(tzinfo=None) if utc is not None and dialect.name == "sqlite" else utc

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

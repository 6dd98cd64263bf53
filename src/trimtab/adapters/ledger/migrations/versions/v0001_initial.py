"""The ledger: plans with their history, intents, orders, events, fills, flags.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TZ = sa.DateTime(timezone=True)
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", _ROW_ID, autoincrement=True, nullable=False)


def _plan_ref(table: str) -> tuple[sa.Column[int], sa.ForeignKeyConstraint]:
    return (
        sa.Column("plan_ref", _ROW_ID, nullable=False),
        sa.ForeignKeyConstraint(["plan_ref"], ["ledger_plans.id"], name=f"fk_{table}_plan_ref"),
    )


def _snapshot_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("client_order_id", sa.String(128), nullable=False),
        sa.Column("broker_order_id", sa.String(128), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("qty", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("filled_qty", sa.Text(), nullable=False),
        sa.Column("filled_avg_price", sa.Text(), nullable=True),
        sa.Column("limit_price", sa.Text(), nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("replaced_by", sa.String(128), nullable=True),
        sa.Column("replaces", sa.String(128), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "ledger_plans",
        _id(),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("plan_id", sa.String(128), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("plan_json", sa.Text(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", _TZ, nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_plans"),
        sa.UniqueConstraint("account", "plan_id", name="uq_ledger_plans_account_plan_id"),
    )
    op.create_index(
        "ix_ledger_plans_account_created_at", "ledger_plans", ["account", "created_at"]
    )

    op.create_table(
        "ledger_plan_history",
        _id(),
        *_plan_ref("ledger_plan_history"),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("time", _TZ, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_plan_history"),
    )
    op.create_index("ix_ledger_plan_history_plan_ref", "ledger_plan_history", ["plan_ref"])

    op.create_table(
        "ledger_intents",
        _id(),
        *_plan_ref("ledger_intents"),
        sa.Column("client_order_id", sa.String(128), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("qty", sa.Text(), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("limit_price", sa.Text(), nullable=True),
        sa.Column("time_in_force", sa.String(8), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("quote_bid", sa.Text(), nullable=True),
        sa.Column("quote_ask", sa.Text(), nullable=True),
        sa.Column("quote_bid_size", sa.Text(), nullable=True),
        sa.Column("quote_ask_size", sa.Text(), nullable=True),
        sa.Column("quote_time", _TZ, nullable=True),
        sa.Column("time", _TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_intents"),
        sa.UniqueConstraint(
            "plan_ref", "client_order_id", name="uq_ledger_intents_plan_ref_client_order_id"
        ),
    )

    op.create_table(
        "ledger_orders",
        _id(),
        *_plan_ref("ledger_orders"),
        *_snapshot_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_orders"),
    )
    op.create_index("ix_ledger_orders_plan_ref", "ledger_orders", ["plan_ref"])

    op.create_table(
        "ledger_events",
        _id(),
        *_plan_ref("ledger_events"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("time", _TZ, nullable=False),
        sa.Column("fill_qty", sa.Text(), nullable=True),
        sa.Column("fill_price", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("extra_json", sa.Text(), nullable=True),
        *_snapshot_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_events"),
    )
    op.create_index("ix_ledger_events_plan_ref", "ledger_events", ["plan_ref"])

    op.create_table(
        "ledger_fills",
        _id(),
        *_plan_ref("ledger_fills"),
        sa.Column("event_id", _ROW_ID, nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(128), nullable=False),
        sa.Column("broker_order_id", sa.String(128), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("qty", sa.Text(), nullable=False),
        sa.Column("price", sa.Text(), nullable=False),
        sa.Column("time", _TZ, nullable=False),
        sa.Column("cum_qty_key", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["ledger_events.id"], name="fk_ledger_fills_event_id"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_fills"),
        sa.UniqueConstraint(
            "plan_ref",
            "broker_order_id",
            "cum_qty_key",
            name="uq_ledger_fills_plan_ref_broker_order_id_cum_qty_key",
        ),
    )
    op.create_index("ix_ledger_fills_account_time", "ledger_fills", ["account", "time"])

    op.create_table(
        "ledger_flags",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.PrimaryKeyConstraint("account", "name", name="pk_ledger_flags"),
    )


def downgrade() -> None:
    for table in (
        "ledger_flags",
        "ledger_fills",
        "ledger_events",
        "ledger_orders",
        "ledger_intents",
        "ledger_plan_history",
        "ledger_plans",
    ):
        op.drop_table(table)

"""Quotes of the symbols a plan works, for the report's charts and the fills' markouts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TZ = sa.DateTime(timezone=True)
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_quotes",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("plan_ref", _ROW_ID, nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("bid", sa.Text(), nullable=False),
        sa.Column("ask", sa.Text(), nullable=False),
        sa.Column("bid_size", sa.Text(), nullable=False),
        sa.Column("ask_size", sa.Text(), nullable=False),
        sa.Column("time", _TZ, nullable=False),
        sa.ForeignKeyConstraint(["plan_ref"], ["ledger_plans.id"], name="fk_ledger_quotes_plan_ref"),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_quotes"),
    )
    op.create_index("ix_ledger_quotes_plan_ref", "ledger_quotes", ["plan_ref"])


def downgrade() -> None:
    op.drop_index("ix_ledger_quotes_plan_ref", table_name="ledger_quotes")
    op.drop_table("ledger_quotes")

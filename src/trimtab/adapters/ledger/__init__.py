"""Ledger stores: SqlLedger (SQLite by default, PostgreSQL for many workers) and export."""

from trimtab.adapters.ledger.export import ExportSummary, export_jsonl
from trimtab.adapters.ledger.sql import (
    LEDGER_FILE_NAME,
    SqlLedger,
    alembic_config,
    default_ledger_url,
    head_revision,
)

__all__ = [
    "LEDGER_FILE_NAME",
    "ExportSummary",
    "SqlLedger",
    "alembic_config",
    "default_ledger_url",
    "export_jsonl",
    "head_revision",
]

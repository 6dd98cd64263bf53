"""Alembic migrations of the ledger, run by SqlLedger.migrate(); not meant to be imported."""

"""The queue's schema (procrastinate's) on the real PostgreSQL: created, recorded, upgraded
with procrastinate's own migrations, and refused when newer than this installation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from procrastinate.schema import SchemaManager

from tests.pgkit import scratch_schema_url
from trimtab.domain.errors import ConfigurationError
from trimtab.worker.database import (
    QUEUE_SCHEMA_TABLE,
    Database,
    _migration_sql,
    _migrations,
    ensure_queue_schema,
    installed_queue_schema,
)

# The schema's objects that make it what it is: routines, types and their labels, tables,
# columns, indexes and triggers, in the scratch schema.
SHAPE = f"""
SELECT 'routine ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema()
UNION ALL
SELECT 'enum ' || t.typname || ' ' || e.enumlabel
  FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname = current_schema()
UNION ALL
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
  FROM information_schema.columns
  WHERE table_schema = current_schema() AND table_name <> '{QUEUE_SCHEMA_TABLE}'
UNION ALL
SELECT 'index ' || indexname FROM pg_indexes WHERE schemaname = current_schema()
UNION ALL
SELECT 'trigger ' || tgname FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND NOT tg.tgisinternal
"""


@pytest.fixture
def database() -> Iterator[Database]:
    with scratch_schema_url() as url:
        yield Database.from_url(url)


def _sql(database: Database, *statements: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            cursor = conn.execute(statement)
            if cursor.description is not None:
                rows = cursor.fetchall()
        return rows


def _shape(database: Database) -> set[str]:
    return {str(row[0]) for row in _sql(database, SHAPE)}


def _recorded(database: Database) -> str:
    return str(_sql(database, f"SELECT version FROM {QUEUE_SCHEMA_TABLE}")[0][0])


def test_a_fresh_database_gets_the_schema_and_its_version(database: Database) -> None:
    assert asyncio.run(ensure_queue_schema(database)) is True
    assert _recorded(database) == installed_queue_schema()
    assert "routine procrastinate_defer_jobs_v1(jobs procrastinate_job_to_defer_v1[])" in _shape(database)
    assert asyncio.run(ensure_queue_schema(database)) is False  # a second worker finds it done


def test_a_schema_of_an_older_procrastinate_is_migrated_to_this_one(database: Database) -> None:
    with scratch_schema_url() as reference_url:
        reference = Database.from_url(reference_url)
        _sql(reference, SchemaManager.get_schema())
        expected = _shape(reference)
    # The schema an older release made: procrastinate's migrations up to an older version.
    versions = sorted({version for version, _ in _migrations()})
    older = versions[-2]
    for version, name in _migrations():
        if version <= older:
            _sql(database, _migration_sql(name))
    _sql(database, f"CREATE TABLE {QUEUE_SCHEMA_TABLE} (version text NOT NULL)",
         f"INSERT INTO {QUEUE_SCHEMA_TABLE} VALUES ('{older}')")
    assert _shape(database) != expected
    assert asyncio.run(ensure_queue_schema(database)) is True
    assert _shape(database) == expected
    assert _recorded(database) == installed_queue_schema()


def test_a_schema_newer_than_this_installation_is_refused(database: Database) -> None:
    asyncio.run(ensure_queue_schema(database))
    _sql(database, f"UPDATE {QUEUE_SCHEMA_TABLE} SET version = '99.00.00'")
    before = _shape(database)
    with pytest.raises(ConfigurationError, match=r"99\.00\.00, newer than this installation knows.*upgrade"):
        asyncio.run(ensure_queue_schema(database))
    assert _shape(database) == before
    assert _recorded(database) == "99.00.00"


def test_a_schema_made_before_versions_were_recorded_is_taken_as_this_one(database: Database) -> None:
    _sql(database, SchemaManager.get_schema())
    assert asyncio.run(ensure_queue_schema(database)) is False
    assert _recorded(database) == installed_queue_schema()


def test_workers_starting_together_apply_it_once(database: Database) -> None:
    async def both() -> list[bool]:
        return list(await asyncio.gather(*(ensure_queue_schema(database) for _ in range(4))))

    outcomes = asyncio.run(both())
    assert sorted(outcomes) == [False, False, False, True]
    assert _recorded(database) == installed_queue_schema()

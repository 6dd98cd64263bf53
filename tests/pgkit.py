"""A scratch PostgreSQL schema per test, on the machine's real server (never a mock)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError

POSTGRES_URL = os.environ.get(
    "TRIMTAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def postgres_problem() -> str | None:
    """None when PostgreSQL answers, else why not (asked once per test session)."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return None
    except OperationalError as exc:
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()


@contextmanager
def scratch_schema_url(prefix: str = "trimtab_test") -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema, dropped afterwards.

    Skips the test, naming the URL, when PostgreSQL is not reachable.
    """
    problem = postgres_problem()
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {problem}")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

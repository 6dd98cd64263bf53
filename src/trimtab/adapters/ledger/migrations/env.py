"""Alembic environment of the ledger.

SqlLedger.migrate() passes an open connection, already inside a transaction that holds
the migration lock, in config.attributes["connection"]; the migrations run inside that
transaction. Run by hand (alembic -c ...) it connects to sqlalchemy.url instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from trimtab.adapters.ledger.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(
            url=context.config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or migrate through SqlLedger.migrate()")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


_main()

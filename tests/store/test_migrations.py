"""The migrations build exactly the tables that proctor.store.tables declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from proctor.store import open_store
from proctor.store.tables import metadata


def test_migrations_and_table_definitions_agree(database_url: str) -> None:
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            differences = compare_metadata(context, metadata)
    finally:
        store.close()
    assert differences == []

"""Persistence: SQLAlchemy Core tables, Alembic migrations, SQLite and PostgreSQL.

>>> store = open_store("sqlite:///:memory:")
>>> store.backend
'sqlite'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from proctor.errors import StoreError
from proctor.store.engine import create_store_engine, normalize_url
from proctor.store.migrate import upgrade

__all__ = ["Store", "as_utc", "normalize_url", "open_store"]


class Store:
    """A migrated database. Domain parts take one and run their own statements."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction; driver errors become :class:`StoreError`."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the database at ``url``, creating and migrating it on first use."""
    engine = create_store_engine(url)
    if migrate:
        upgrade(engine)
    return Store(engine)


def as_utc(value: datetime) -> datetime:
    """A datetime read back from the store, as aware UTC (SQLite returns naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

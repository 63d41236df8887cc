"""Persistence: SQLAlchemy Core tables, Alembic migrations, SQLite and PostgreSQL.

>>> store = open_store("sqlite:///:memory:")
>>> store.backend
'sqlite'
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from proctor.errors import StoreError
from proctor.store.engine import READ_ONLY, create_store_engine, normalize_url
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

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection inside one read-only transaction (no write lock on SQLite)."""
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(**{READ_ONLY: True})
                with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {type(exc).__name__}") from exc

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement on a pooled driver connection and return its rows.

        For the hottest read paths only (the revocation look-up of a grant check),
        where SQLAlchemy's execution layer costs several times the query itself.
        Write ``sql`` with ``{p}`` for each parameter; it becomes the driver's
        placeholder. A single statement reads a consistent snapshot on both backends.
        """
        text_sql = sql.replace("{p}", "?" if self.backend == "sqlite" else "%s")
        try:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                try:
                    cursor.execute(text_sql, tuple(params))
                    return [tuple(row) for row in cursor.fetchall()]
                finally:
                    cursor.close()
            finally:
                raw.close()
        except (SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
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

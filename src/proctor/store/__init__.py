"""Persistence: SQLAlchemy Core tables, Alembic migrations, SQLite and PostgreSQL.

>>> store = open_store("sqlite:///:memory:")
>>> store.backend
'sqlite'
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from proctor.errors import ProctorError, RequestError, StoreError
from proctor.store.engine import READ_ONLY, create_store_engine, normalize_url
from proctor.store.migrate import upgrade

__all__ = ["Store", "as_utc", "normalize_url", "open_store"]


def _store_error(exc: Exception) -> ProctorError:
    """A driver error as proctor's error: text PostgreSQL cannot hold (a NUL character)
    is bad input (``request_invalid``), anything else ``store_unavailable``."""
    cause = getattr(exc, "orig", exc)
    if isinstance(cause, psycopg.errors.UntranslatableCharacter) or (
            isinstance(cause, psycopg.DataError) and "NUL (0x00)" in str(cause)):
        return RequestError("text cannot contain a NUL character")
    return StoreError(f"database error: {type(exc).__name__}")


class Store:
    """A migrated database. Domain parts take one and run their own statements."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._readers = threading.local()
        self._reader_lock = threading.Lock()
        self._all_readers: list[Any] = []

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
            raise _store_error(exc) from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection inside one read-only transaction (no write lock on SQLite)."""
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(**{READ_ONLY: True})
                with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement on this thread's own driver connection.

        For the hottest read paths only (the revocation look-up of a grant check),
        where SQLAlchemy's execution layer, and even a pool check-out, cost several
        times the query itself. The connection is kept per thread, in autocommit:
        a single statement reads a consistent snapshot on both backends and leaves
        no transaction open. Write ``sql`` with ``{p}`` for each parameter; it
        becomes the driver's placeholder. A broken connection is dropped and the
        next call opens a new one.
        """
        text_sql = sql.replace("{p}", "?" if self.backend == "sqlite" else "%s")
        try:
            cursor = self._reader().cursor()
            try:
                cursor.execute(text_sql, tuple(params))
                return [tuple(row) for row in cursor.fetchall()]
            finally:
                cursor.close()
        except (SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
            self._drop_reader()
            raise _store_error(exc) from exc

    def _reader(self) -> Any:
        connection = getattr(self._readers, "connection", None)
        if connection is None:
            raw = self.engine.raw_connection()
            driver = raw.dbapi_connection
            raw.detach()  # ours for this thread's lifetime, not the pool's
            if self.backend == "postgresql":
                driver.autocommit = True  # type: ignore[union-attr]
            # keep the wrapper referenced: it owns the driver connection
            connection = self._readers.connection = raw
            with self._reader_lock:
                self._all_readers.append(raw)
        return connection

    def _drop_reader(self) -> None:
        connection = getattr(self._readers, "connection", None)
        self._readers.connection = None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        with self._reader_lock:
            readers, self._all_readers = self._all_readers, []
        for driver in readers:
            with contextlib.suppress(Exception):
                driver.close()
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

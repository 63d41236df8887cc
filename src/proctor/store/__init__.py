"""Persistence: SQLAlchemy Core tables, Alembic migrations, SQLite and PostgreSQL.

>>> store = open_store("sqlite:///:memory:")
>>> store.backend
'sqlite'
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from proctor.errors import ProctorError, RequestError, StoreError
from proctor.store import blocking as _blocking
from proctor.store import drivers as _drivers
from proctor.store import engine as _engine
from proctor.store import migrate as _migrate
from proctor.store import pool as _pool
from proctor.store.engine import READ_ONLY, normalize_url
from proctor.store.pool import DEFAULT_POOL_SIZE, LOCK_TIMEOUT_SECONDS, POOL_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

__all__ = ["Store", "as_utc", "normalize_url", "open_store"]


def _store_error(exc: Exception, pool_timeout_seconds: float) -> ProctorError:
    """A driver error as proctor's error: text PostgreSQL cannot hold (a NUL character)
    is bad input (``request_invalid``), anything else ``store_unavailable`` (a lock
    held past the lock timeout said as such)."""
    if isinstance(exc, PoolTimeoutError):
        return _pool.exhausted(pool_timeout_seconds)
    cause = getattr(exc, "orig", exc)
    if isinstance(cause, _drivers.psycopg_errors("LockNotAvailable")):
        return StoreError("a row or table this needs is locked by another transaction "
                          "past the lock timeout")
    if isinstance(cause, _drivers.psycopg_errors("UntranslatableCharacter")) or (
            isinstance(cause, _drivers.psycopg_errors("DataError")) and "NUL (0x00)" in str(cause)):
        return RequestError("text cannot contain a NUL character")
    return StoreError(f"database error: {type(exc).__name__}")


class Store:
    """A migrated database. Domain parts take one and run their own statements.

    Every connection it holds comes from its engine's pool, bounded in number
    (see :mod:`proctor.store.pool`), whichever threads use it.
    """

    def __init__(self, engine: Engine, *, read_connections: int = 1,
                 pool_timeout_seconds: float = POOL_TIMEOUT_SECONDS,
                 lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.engine = engine
        self.pool_timeout_seconds = pool_timeout_seconds
        # the longest a statement of its connections waits for another's lock
        # (:mod:`proctor.store.engine`)
        self.lock_timeout_seconds = lock_timeout_seconds
        self._mark = "?" if engine.dialect.name == "sqlite" else "%s"
        self._reads = _pool.ReadConnections(engine, read_connections, pool_timeout_seconds)
        self._before_close: list[weakref.WeakMethod[Callable[[], object]]] = []

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction; driver errors become :class:`StoreError`."""
        _blocking.check()
        try:
            with self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise _store_error(exc, self.pool_timeout_seconds) from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection inside one read-only transaction (no write lock on SQLite)."""
        _blocking.check()
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(**{READ_ONLY: True})
                with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:
            raise _store_error(exc, self.pool_timeout_seconds) from exc

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection inside one read-only transaction that reads one snapshot of the
        database from its first statement to its end, whatever other connections commit
        meanwhile: for a read of many statements that must agree with each other (the
        audit log's verification, :mod:`proctor.audit.verification`).

        PostgreSQL: ``REPEATABLE READ READ ONLY``. It takes no row lock and no lock a
        write waits for; each statement is bounded as the pool's connections are (the
        lock timeout; the server's ``statement_timeout`` and
        ``idle_in_transaction_session_timeout``, if set), and the transaction holds back
        the removal of rows deleted or updated after it began until it ends (the server's
        ``xmin`` horizon). SQLite: a read transaction (``BEGIN``; in WAL mode the snapshot
        is taken at its first read): writers go on, but a WAL checkpoint cannot go past
        it, so the WAL file grows until it ends. Either way it ends when the block does,
        however it is left.
        """
        _blocking.check()
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(**{READ_ONLY: True})
                if self.backend == "postgresql":
                    connection = connection.execution_options(
                        isolation_level="REPEATABLE READ", postgresql_readonly=True)
                with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:
            raise _store_error(exc, self.pool_timeout_seconds) from exc

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement on a driver connection of the fast read path.

        For the hottest read paths only (the revocation look-up of a grant check),
        where SQLAlchemy's execution layer, and even a pool check-out, cost several
        times the query itself. The fast path keeps a few of the pool's connections
        checked out, in autocommit, and lends them to any thread
        (:class:`~proctor.store.pool.ReadConnections`): a single statement reads a
        consistent snapshot on both backends and leaves no transaction open. Write
        ``sql`` with ``{p}`` for each parameter; it becomes the driver's
        placeholder. A connection that fails is closed and the next call borrows
        another.
        """
        _blocking.check()
        text_sql = sql.replace("{p}", self._mark)
        try:
            held = self._reads.take()
        except SQLAlchemyError as exc:
            raise _store_error(exc, self.pool_timeout_seconds) from exc
        try:
            cursor = held[1].cursor()
            try:
                cursor.execute(text_sql, tuple(params))
                rows = [tuple(row) for row in cursor.fetchall()]
            finally:
                cursor.close()
        except _drivers.driver_errors() as exc:
            self._reads.discard(held)
            raise _store_error(exc, self.pool_timeout_seconds) from exc
        except BaseException:
            self._reads.discard(held)
            raise
        self._reads.give_back(held)
        return rows

    def before_close(self, wait: Callable[[], object]) -> None:
        """Have :meth:`close` call ``wait`` (a bound method, held weakly) first: a part
        whose own thread writes, such as the lease tree's marker, ends its transaction
        before the connections are closed under it (else one is left open to the garbage
        collector)."""
        self._before_close.append(weakref.WeakMethod(wait))

    def close(self) -> None:
        """Close every connection of this store; it is not to be used after."""
        waits, self._before_close = self._before_close, []
        for ref in waits:
            wait = ref()
            if wait is None:
                continue
            try:
                wait()
            except Exception:  # closing goes on: what was not finished is the sweep's
                log.exception("a part of the store did not finish before it closed")
        self._reads.close()
        self.engine.dispose()


def open_store(url: str, *, migrate: bool = True, pool_size: int = DEFAULT_POOL_SIZE,
               pool_timeout_seconds: float = POOL_TIMEOUT_SECONDS,
               lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Store:
    """Open the database at ``url``, creating and migrating it on first use.

    The store holds at most ``pool_size`` connections, however many threads use it;
    a caller that finds them all in use waits at most ``pool_timeout_seconds``, then
    gets :class:`StoreError`. A statement waits at most ``lock_timeout_seconds`` for a
    lock another connection holds, then fails (:class:`StoreError`).
    """
    engine = _engine.create_store_engine(url, pool_size=pool_size,
                                         pool_timeout_seconds=pool_timeout_seconds,
                                         lock_timeout_seconds=lock_timeout_seconds)
    try:
        if migrate and not _migrate.is_current(engine):
            _migrate.upgrade(engine)
        return Store(engine, read_connections=_pool.read_share(pool_size),
                     pool_timeout_seconds=pool_timeout_seconds,
                     lock_timeout_seconds=lock_timeout_seconds)
    except BaseException:  # nothing opened here outlives a failed opening
        engine.dispose()
        raise


def as_utc(value: datetime) -> datetime:
    """A datetime read back from the store, as aware UTC (SQLite returns naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

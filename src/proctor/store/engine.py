"""Opening the database: SQLite (WAL) on the embedded default, PostgreSQL otherwise.

Either way the engine's pool is the one source of connections: ``pool_size`` of them
at most (no overflow), and a caller waits at most ``pool_timeout_seconds`` for one
(see :mod:`proctor.store.pool`). An in-memory SQLite database is one connection.

Every connection waits at most ``lock_timeout_seconds`` for a lock another connection
holds, then its statement fails (``store_unavailable`` to the caller, a deny on the
decision path): SQLite's ``busy_timeout`` for the database's write lock, PostgreSQL's
``lock_timeout`` for a row, table or advisory lock. Without it a PostgreSQL statement
waits without limit: a row held by a human's open transaction, or a session that is
stuck but not closed, would stall whatever needs that row for ever, and every caller
waiting behind it.

A PostgreSQL connection also notices a network that stalls, which no server-side limit
can: libpq's TCP keepalives (``keepalives_idle`` the lock timeout, then a probe every
third of it, three unanswered probes) and ``tcp_user_timeout`` (data unacknowledged
for twice the lock timeout) close it, so a client blocked in ``recv`` on a dead peer
fails ``store_unavailable`` within about twice the lock timeout instead of never. A
value the URL sets itself (``?keepalives_idle=...``) is kept.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import QueuePool, StaticPool

from proctor.errors import ConfigError, StoreError
from proctor.store.pool import DEFAULT_POOL_SIZE, LOCK_TIMEOUT_SECONDS, POOL_TIMEOUT_SECONDS

__all__ = ["READ_ONLY", "create_store_engine", "normalize_url", "tcp_bounds"]

READ_ONLY = "proctor_read_only"

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` to the psycopg 3 driver; leave SQLite URLs alone."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def create_store_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE,
                        pool_timeout_seconds: float = POOL_TIMEOUT_SECONDS,
                        lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Engine:
    """Create the engine for ``url``; a SQLite file and its folder are created on first use."""
    lock_ms = max(1, round(lock_timeout_seconds * 1000))
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database url is not valid: {exc}") from exc
    pool: dict[str, Any] = {"poolclass": QueuePool, "pool_size": pool_size,
                            "max_overflow": 0, "pool_timeout": pool_timeout_seconds}
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, pool, lock_ms)
    if parsed.get_backend_name() == "postgresql":
        try:
            engine = create_engine(url, pool_pre_ping=True,
                                   connect_args=tcp_bounds(lock_timeout_seconds, parsed.query),
                                   **pool)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the database: {type(exc).__name__}") from exc
        event.listen(engine, "connect", functools.partial(_bound_lock_waits, lock_ms=lock_ms))
        return engine
    raise ConfigError(f"database backend `{parsed.get_backend_name()}` is not supported")


def tcp_bounds(lock_timeout_seconds: float, query: Mapping[str, object]
               ) -> dict[str, int]:
    """libpq's connection parameters that bound a stalled network, from the lock
    timeout: keepalives after ``lock`` idle seconds, probed every ``lock / 3`` (at
    least 1 s), given up after three; unacknowledged data given up after ``2 * lock``.
    A parameter the URL's ``query`` already sets is left to it."""
    idle = max(1, math.ceil(lock_timeout_seconds))
    bounds = {"keepalives": 1, "keepalives_idle": idle,
              "keepalives_interval": max(1, math.ceil(lock_timeout_seconds / 3)),
              "keepalives_count": 3,
              "tcp_user_timeout": max(1000, round(2000 * lock_timeout_seconds))}
    return {name: value for name, value in bounds.items() if name not in query}


def _bound_lock_waits(dbapi_connection: Any, _record: Any, *, lock_ms: int) -> None:
    """PostgreSQL: the session's ``lock_timeout`` (its default is no limit), committed
    so that it outlives the transaction the ``SET`` began."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET lock_timeout = {int(lock_ms)}")
    cursor.close()
    dbapi_connection.commit()


def _sqlite_engine(url: str, database: str | None, pool: dict[str, Any], lock_ms: int) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    else:  # each connection would be a database of its own: share one
        pool = {"poolclass": StaticPool}
    engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin, so that
        # BEGIN IMMEDIATE can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front (no deadlock on upgrade); readers don't.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine

"""How many database connections one process holds, and the fast read path's share.

A process holds at most ``pool_size`` connections, whatever its threads do. All of
them come from the engine's pool (SQLAlchemy's ``QueuePool``: ``pool_size``
connections, no overflow), the fast read path's included:

- :class:`ReadConnections` keeps up to a quarter of them (at least one) checked
  out for :meth:`proctor.store.Store.fetch`, in autocommit on PostgreSQL, and
  hands them to whichever thread asks next: a look-up costs a list pop, not a pool
  check-out, and a thread that ends leaves nothing behind;
- transactions, the audit writer and the revocation listener share the rest.

A caller that finds every connection in use waits at most ``timeout_seconds``,
then gets :class:`~proctor.errors.StoreError` (``store_unavailable``): on the
decision path that is a deny, never a hang.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from proctor.config import (
    DEFAULT_POOL_SIZE,
    LOCK_TIMEOUT_SECONDS,
    MAX_POOL_SIZE,
    MIN_POOL_SIZE,
    POOL_TIMEOUT_SECONDS,
)
from proctor.errors import StoreError

__all__ = [
    "DEFAULT_POOL_SIZE",
    "LOCK_TIMEOUT_SECONDS",
    "MAX_POOL_SIZE",
    "MIN_POOL_SIZE",
    "POOL_TIMEOUT_SECONDS",
    "ReadConnections",
    "exhausted",
    "read_share",
]

log = logging.getLogger(__name__)


Held = tuple[Any, Any]  # (the pool's proxy, its driver connection)


def read_share(pool_size: int) -> int:
    """How many of ``pool_size`` connections the fast read path may keep."""
    return max(1, pool_size // 4)


def exhausted(timeout_seconds: float) -> StoreError:
    """The error of a caller that waited for a connection in vain."""
    return StoreError(f"no database connection came free within {timeout_seconds:g} s")


class ReadConnections:
    """The fast read path's connections: at most ``size``, shared by every thread.

    Borrowed from ``engine``'s pool when no idle one is left and kept checked out,
    so that they count against the pool's size while they are ours.
    """

    def __init__(self, engine: Engine, size: int, timeout_seconds: float) -> None:
        self._engine = engine
        self._size = size
        self._timeout = timeout_seconds
        self._autocommit = engine.dialect.name == "postgresql"
        self._idle: list[Held] = []  # the most recently used last
        self._held = 0  # borrowed from the pool: idle or in use
        self._waiting = 0
        self._closed = False
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)

    def take(self) -> Held:
        """A connection for one statement; give it back or discard it after.

        Raises :class:`StoreError` when none came free in time, and SQLAlchemy's
        errors when the pool cannot give one.
        """
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._held >= self._size:
                self._wait()
                if self._idle:
                    return self._idle.pop()
            self._held += 1
        try:
            proxy = self._engine.raw_connection()
        except BaseException:
            self._forget()
            raise
        driver = proxy.driver_connection
        if self._autocommit:
            # one statement reads a consistent snapshot and leaves no transaction open
            driver.autocommit = True  # type: ignore[union-attr]
        return proxy, driver

    def _wait(self) -> None:
        self._waiting += 1
        try:
            if not self._returned.wait_for(
                    lambda: self._idle or self._held < self._size, self._timeout):
                raise exhausted(self._timeout)
        finally:
            self._waiting -= 1

    def give_back(self, held: Held) -> None:
        """Return a connection that ran its statement."""
        with self._lock:
            if not self._closed:
                self._idle.append(held)
                if self._waiting:
                    self._returned.notify()
                return
        self.discard(held)

    def discard(self, held: Held) -> None:
        """Close a connection that failed (or outlived :meth:`close`); its slot is freed."""
        try:
            held[0].invalidate()
        except Exception:  # broken already: closing it is all that was left to do
            log.debug("closing a fast-path connection failed", exc_info=True)
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._held -= 1
            if self._waiting:
                self._returned.notify()

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for held in idle:
            self.discard(held)

"""Deleting a backlog a chunk per transaction, outside any caller's transaction.

A sweep that deletes whatever piled up in one transaction holds, after a long outage,
SQLite's one write lock for as long as the delete takes (every decision's write waits
behind it, up to the lock timeout, then fails) and on PostgreSQL runs one long
statement. :func:`delete_in_chunks` runs a bounded delete a transaction at a time
instead; on SQLite it then waits as long as the chunk held the lock (at most a second),
so a writer waiting gets the lock in between (as
:func:`proctor.audit.retention.delete_archived` does for archived events).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection

from proctor.store import Store

__all__ = ["CHUNK", "OneChunk", "delete_in_chunks"]

CHUNK = {"sqlite": 2_000, "postgresql": 10_000}
"""Rows a sweep deletes per transaction, by backend."""

OneChunk = Callable[[Connection, int], "tuple[int, bool]"]
"""Deletes at most ``size`` rows in the transaction of ``conn``: how many, and whether
that was the last of them."""


def delete_in_chunks(store: Store, one_chunk: OneChunk, *, chunk: int | None = None,
                     most_chunks: int | None = None,
                     pause: Callable[[float], object] | None = None) -> int:
    """Run ``one_chunk`` a transaction at a time (``chunk`` rows each, :data:`CHUNK` by
    default) until it says it deleted the last, or ``most_chunks`` of them ran (None: no
    limit); how many rows were deleted. On SQLite, ``pause`` (:func:`_pause` unless
    given) waits between two chunks as long as the one before held the write lock (at
    most a second)."""
    size = chunk or CHUNK[store.backend]
    if size < 1:
        raise ValueError("a chunk deletes one row or more")
    deleted = chunks = 0
    while most_chunks is None or chunks < most_chunks:
        started = time.monotonic()
        with store.transaction() as conn:
            done, last = one_chunk(conn, size)
        deleted += done
        chunks += 1
        if last:
            break
        if store.backend == "sqlite":  # the writers waiting take the lock meanwhile
            (pause or _pause)(min(max(time.monotonic() - started, 0.0), 1.0))
    return deleted


def _pause(seconds: float) -> None:
    time.sleep(seconds)

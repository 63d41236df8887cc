"""Waiting, on PostgreSQL, until another connection's statement waits for a row lock."""

from __future__ import annotations

import threading

from sqlalchemy import Connection, text

_WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")


def until_waiting_on_a_lock(holding: Connection, worker: threading.Thread,
                            results: object) -> None:
    """Return once some connection waits for a lock (the one ``holding`` holds: its
    change not committed); fail if ``worker`` ends first (``results``: what it gave)."""
    while not holding.execute(text(_WAITING)).scalar_one():
        assert worker.is_alive(), results
        worker.join(0.01)

"""A process holds at most its configured number of database connections, whatever its
threads do; a caller that finds them all in use waits a bounded time, then is refused."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import ExitStack

from sqlalchemy import text

from proctor.errors import StoreError
from proctor.store import Store, open_store
from proctor.store.pool import ReadConnections

from .connections import open_connections, run_burst, tagged

POOL_SIZE = 6
BURSTS = 5
THREADS = 40


def _fetch_and_write(store: Store) -> None:
    assert store.fetch("SELECT count(*) FROM agents", []) == [(0,)]
    with store.transaction() as conn:
        conn.execute(text("SELECT count(*) FROM agents"))


def _outcome(call: Callable[[], object], *, within: float = 60) -> object:
    """What ``call`` returned or raised, run on a thread of its own: a hang fails the test."""
    done: queue.Queue[object] = queue.Queue()

    def run() -> None:
        try:
            done.put(call())
        except BaseException as exc:
            done.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return done.get(timeout=within)


def test_threads_started_and_ended_in_bursts_hold_no_more_connections_than_the_pool_size(
    database_url: str,
) -> None:
    url = tagged(database_url)
    store = open_store(url, pool_size=POOL_SIZE)
    try:
        seen = []
        for _ in range(BURSTS):
            assert run_burst(lambda: _fetch_and_write(store), THREADS) == []
            seen.append(open_connections(url))
        assert min(seen) >= 1 and max(seen) <= POOL_SIZE, seen
    finally:
        store.close()


def test_a_caller_that_finds_every_connection_in_use_is_refused_after_a_bounded_wait(
    database_url: str,
) -> None:
    store = open_store(database_url, pool_size=4, pool_timeout_seconds=0.2)
    try:
        with ExitStack() as held:
            for _ in range(4):
                held.enter_context(store.reading())

            def write() -> None:
                with store.transaction() as conn:
                    conn.execute(text("SELECT 1"))

            for call in (lambda: store.fetch("SELECT 1", []), write):
                refused = _outcome(call)
                assert isinstance(refused, StoreError)
                assert refused.code == "store_unavailable"
                assert refused.message == "no database connection came free within 0.2 s"
        assert store.fetch("SELECT 1", []) == [(1,)]
    finally:
        store.close()


def test_the_fast_read_path_lends_its_connections_to_any_thread_and_waits_for_one_in_use(
    database_url: str,
) -> None:
    store = open_store(database_url, pool_size=4)
    reads = ReadConnections(store.engine, 1, 0.2)
    try:
        first = _outcome(reads.take)
        assert isinstance(first, tuple)
        refused = _outcome(reads.take)
        assert isinstance(refused, StoreError) and refused.code == "store_unavailable"
        reads.give_back(first)
        again = _outcome(reads.take)  # another thread: the same connection
        assert isinstance(again, tuple) and again[1] is first[1]
        reads.give_back(again)
    finally:
        reads.close()
        store.close()


def test_an_in_memory_database_is_one_connection_every_thread_shares() -> None:
    store = open_store("sqlite:///:memory:")
    try:
        # the migrated database, not an empty one of the thread's own
        assert _outcome(lambda: store.fetch("SELECT count(*) FROM alembic_version", [])) == [(1,)]
    finally:
        store.close()

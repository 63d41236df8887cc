"""Another node hears a revocation through PostgreSQL NOTIFY, within a bounded wait."""

from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from proctor.errors import StoreError
from proctor.grants import GrantScope, RevocationSubscription
from proctor.store import open_store
from tests.store.connections import open_connections, tagged

from .conftest import CODER, Setup


def test_a_revocation_reaches_a_subscriber_on_another_connection(
    postgres_setup: Setup, postgres_url: str,
) -> None:
    setup = postgres_setup
    heard: queue.Queue[tuple[list[str], str]] = queue.Queue()

    def on_revoked(ids: Sequence[str], reason: str) -> None:
        heard.put((list(ids), reason))

    other_node = open_store(postgres_url)
    subscription = RevocationSubscription(other_node, on_revoked, poll_seconds=0.1)
    try:
        task = setup.authority.start_task(CODER, purpose="p",
                                          on_behalf_of="alice@acme.example")
        grant = setup.authority.issue(task.id, GrantScope.from_json({"tools": [
            {"tool": "git/git_log"}]}))
        setup.authority.revoke(grant.accessor, "leaked")
        assert heard.get(timeout=10) == ([grant.grant_id], "leaked")
    finally:
        subscription.close()
        other_node.close()


def test_a_malformed_or_deeply_nested_notification_is_ignored_and_listening_goes_on(
        postgres_url: str) -> None:
    import psycopg

    heard: queue.Queue[tuple[list[str], str]] = queue.Queue()
    store = open_store(postgres_url)
    subscription = RevocationSubscription(
        store, lambda ids, reason: heard.put((list(ids), reason)), poll_seconds=0.1)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('proctor_revocations', 'not json')")
            # past the JSON decoder's recursion: it ended the listening thread
            conn.execute("SELECT pg_notify('proctor_revocations', %s)", ["[" * 3000])
            conn.execute("""SELECT pg_notify('proctor_revocations', '{"ids": ["g1"]}')""")
        assert heard.get(timeout=10) == (["g1"], "")
        assert heard.empty()
    finally:
        subscription.close()
        store.close()


def test_listening_for_revocations_takes_one_of_the_stores_connections_and_closes_it(
    postgres_url: str,
) -> None:
    url = tagged(postgres_url)
    store = open_store(url, pool_size=4)
    try:
        subscription = RevocationSubscription(store, lambda _ids, _reason: None)
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 1
        assert open_connections(url) == 1  # the migration's, pooled, now listening
        subscription.close()
        assert pool.checkedout() == 0
    finally:
        store.close()


def test_listening_on_sqlite_is_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'proctor.db'}")
    try:
        with pytest.raises(StoreError, match="PostgreSQL only"):
            RevocationSubscription(store, lambda _ids, _reason: None)
    finally:
        store.close()


def test_closing_a_subscription_ends_its_wait_at_once_not_at_its_next_poll(
        postgres_url: str) -> None:
    import threading

    heard: queue.Queue[list[str]] = queue.Queue()
    store = open_store(postgres_url)
    # a poll of an hour: close() could only return within the bound below by waking it
    subscription = RevocationSubscription(store, lambda ids, _reason: heard.put(list(ids)),
                                          poll_seconds=3600)
    try:
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("""SELECT pg_notify('proctor_revocations', '{"ids": ["g1"]}')""")
        assert heard.get(timeout=60) == ["g1"]  # the wait ends on a notification too
    finally:
        closing = threading.Thread(target=subscription.close, daemon=True)
        closing.start()
        closing.join(60)
        assert not closing.is_alive(), "close() waited for the listener's poll"
        store.close()


def test_a_listener_that_outlives_close_closes_its_wakeup_when_it_ends(
        postgres_url: str) -> None:
    """close() waits a bounded time for the listener's thread; a thread still busy then
    (here: inside a slow subscriber) closes its wake-up socket pair itself as it ends.
    Before, nobody closed it: two descriptors leaked per such close."""
    import threading

    import psycopg

    entered, release = threading.Event(), threading.Event()

    def slow(_ids: Sequence[str], _reason: str) -> None:
        entered.set()
        release.wait(60)

    store = open_store(postgres_url)
    subscription = RevocationSubscription(store, slow, poll_seconds=0.01)
    wakeup = subscription._wakeup
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("""SELECT pg_notify('proctor_revocations', '{"ids": ["g1"]}')""")
        assert entered.wait(60)
        subscription.close()  # gives up after its bound: the thread is in `slow`
        assert subscription._thread.is_alive()
        assert wakeup._reader.fileno() != -1  # not closed under a thread that may use it
        release.set()
        subscription._thread.join(60)
        assert not subscription._thread.is_alive()
        assert wakeup._reader.fileno() == -1 and wakeup._writer.fileno() == -1
    finally:
        release.set()
        store.close()

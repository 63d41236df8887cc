"""The change feed's rows: written by the database itself, in the changing transaction,
for exactly the changes a view holds, on both databases."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, insert, select, text, update

from proctor.store import Store, open_store
from proctor.store.changes import Change, prune_changes
from proctor.store.tables import agents, changes, leases, tasks, tool_catalog

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
AGENT = "spiffe://acme.example/agent/a"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def _noted(conn: Connection) -> list[tuple[str, str]]:
    return [(r.kind, r.key) for r in conn.execute(select(changes).order_by(changes.c.seq))]


def _agent_row() -> dict[str, object]:
    return {"id": AGENT, "name": "a", "trust_domain": "acme.example", "owner": "bob",
            "groups": [], "proof_method": "jwt_svid", "trust_state": "trusted",
            "risk_score": 0, "manifest": {}, "manifest_digest": "d", "reviewed_by": "erin",
            "reviewed_at": NOW, "created_at": NOW, "updated_at": NOW}


def test_every_watched_change_is_noted_in_its_own_transaction(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(insert(agents).values(**_agent_row()))
        conn.execute(insert(tasks).values(id="task_1", agent_id=AGENT, purpose="p",
                                          on_behalf_of="bob", started_at=NOW))
        conn.execute(insert(leases).values(id="task_1", parent_id=None, kind="task",
                                           task_id="task_1", agent_id=AGENT, created_at=NOW))
        conn.execute(insert(tool_catalog).values(tool_id="git/git_log", server="git", spec={},
                                                 first_seen_at=NOW))
    with store.transaction() as conn:
        assert _noted(conn) == [("agent", AGENT), ("tool", "git/git_log")]
    with store.transaction() as conn:
        conn.execute(update(agents).values(risk_score=40))
        conn.execute(update(tasks).values(idle_until=NOW + timedelta(minutes=5)))  # not held
        conn.execute(update(tasks).values(sensitivity_seen=2))
        conn.execute(update(tasks).values(sensitivity_seen=2))  # no change: not noted
        conn.execute(update(leases).values(revoked_at=NOW, revoked_reason="x"))
        conn.execute(update(leases).values(revoked_reason="y"))  # still revoked: not noted
        conn.execute(update(tasks).values(ended_at=NOW))
        conn.execute(delete(agents))
    with store.transaction() as conn:
        assert _noted(conn)[2:] == [("agent", AGENT), ("task", "task_1"), ("lease", "task_1"),
                                    ("task", "task_1"), ("agent", AGENT)]


def test_a_change_rolled_back_leaves_no_row(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute(insert(agents).values(**_agent_row()))
        raise RuntimeError("rolled back")
    with store.transaction() as conn:
        assert _noted(conn) == []


def test_pruning_keeps_the_newest_changes(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(insert(agents).values(**_agent_row()))
        for score in range(1, 5):
            conn.execute(update(agents).values(risk_score=score))
    assert prune_changes(store, keep=2) == 3
    with store.transaction() as conn:
        assert [r.seq for r in conn.execute(select(changes.c.seq))] == [4, 5]


@pytest.mark.postgres
def test_closing_the_feed_ends_its_listeners_wait_at_once_not_at_its_next_poll(
        postgres_url: str) -> None:
    import threading

    from proctor.store.changes import ChangeFeed

    store = open_store(postgres_url)
    heard: list[Change] = []
    got = threading.Event()
    # a poll of an hour: close() could only return within the bound below by waking it
    feed = ChangeFeed(store, poll_seconds=3600)

    def note(batch: Sequence[Change]) -> None:
        heard.extend(batch)
        got.set()

    feed.subscribe(note, lambda: None)
    try:
        with store.transaction() as conn:
            conn.execute(insert(tool_catalog).values(tool_id="git/git_log", server="git",
                                                     spec={}, first_seen_at=NOW))
        assert got.wait(60), "the feed heard nothing"  # a notification ends the wait too
        assert [(c.kind, c.key) for c in heard] == [("tool", "git/git_log")]
    finally:
        closing = threading.Thread(target=feed.close, daemon=True)
        closing.start()
        closing.join(60)
        assert not closing.is_alive(), "close() waited for the listener's poll"
        store.close()


def test_callers_waiting_for_a_read_begun_before_them_read_again_and_share_that_read(
        tmp_path: Path) -> None:
    """SQLite: a ``catch_up`` hears every change committed before it was called. Callers
    that came while a read was under way wait for it, then one of them reads again (the
    read under way may have missed what they must hear) and the others take its answer."""
    import threading

    from proctor.store.changes import ChangeFeed

    store = open_store(f"sqlite:///{tmp_path / 'feed.db'}")
    feed = ChangeFeed(store)
    lock, arrived = feed._lock, threading.Semaphore(0)

    class Observed:  # the feed's own lock, telling when a caller starts waiting for it
        def __enter__(self) -> None:
            arrived.release()
            lock.acquire()

        def __exit__(self, *_: object) -> None:
            lock.release()

    heard: list[str] = []
    first_heard, go_on = threading.Event(), threading.Event()

    def note(batch: Sequence[Change]) -> None:
        heard.extend(c.key for c in batch)
        if "git/a" in heard and not first_heard.is_set():
            first_heard.set()
            assert go_on.wait(60)

    def tool(tool_id: str) -> None:
        with store.transaction() as conn:
            conn.execute(insert(tool_catalog).values(tool_id=tool_id, server="git", spec={},
                                                     first_seen_at=NOW))

    feed.subscribe(note, lambda: None)
    feed._lock = Observed()  # type: ignore[assignment]
    answers: list[bool] = []
    try:
        tool("git/a")
        first = threading.Thread(target=lambda: answers.append(feed.catch_up()))
        first.start()
        assert first_heard.wait(60)  # its read is under way, past its query
        tool("git/b")  # committed before the next callers call: they must hear it
        assert arrived.acquire(timeout=60)  # the first caller's own wait, long over
        later = [threading.Thread(target=lambda: answers.append(feed.catch_up()))
                 for _ in range(2)]
        for thread in later:
            thread.start()
        for _ in later:
            assert arrived.acquire(timeout=60)  # both wait for the lock
        reads_before = feed._reads
        go_on.set()
        for thread in [first, *later]:
            thread.join(60)
        assert answers == [True, True, True]
        assert heard == ["git/a", "git/b"]
        assert feed._reads == reads_before + 1  # one read for both, not one each
    finally:
        go_on.set()
        feed.close()
        store.close()


def test_a_caller_that_waited_never_takes_the_answer_of_a_read_that_failed(
        tmp_path: Path) -> None:
    """SQLite: two callers wait for the feed; the first to read fails. The other must not
    take that read for one that heard every change (e65812a: the failure was noted after
    the lock was let go, so a caller taking the lock in between answered current)."""
    import threading

    from proctor.store.changes import ChangeFeed

    store = open_store(f"sqlite:///{tmp_path / 'feed.db'}")
    feed = ChangeFeed(store)
    lock, arrived = feed._lock, threading.Semaphore(0)
    answers: list[bool] = []
    answered = threading.Semaphore(0)

    class Observed:  # the feed's own lock; a failed read lets the other caller run first
        def __enter__(self) -> None:
            arrived.release()
            lock.acquire()

        def __exit__(self, failure: type[BaseException] | None, *_: object) -> None:
            lock.release()
            if failure is not None:  # a read failing out of the lock (before the fix)
                answered.acquire(timeout=10)  # the other caller, before this one goes on

    feed._lock = Observed()  # type: ignore[assignment]

    def call() -> None:
        answers.append(feed.catch_up())
        answered.release()

    try:
        with store.transaction() as conn:  # every read of the changes fails from now on
            conn.execute(text("ALTER TABLE changes RENAME TO changes_gone"))
        lock.acquire()
        callers = [threading.Thread(target=call) for _ in range(2)]
        for caller in callers:
            caller.start()
        for _ in callers:
            assert arrived.acquire(timeout=60)  # both came before any read began
        lock.release()
        for caller in callers:
            caller.join(60)
        assert answers == [False, False]
    finally:
        feed.close()
        store.close()


def test_a_subscriber_whose_listener_fails_forgets_and_until_it_can_the_feed_is_not_current(
        tmp_path: Path) -> None:
    """A listener that raises has missed the changes it was given: before, the feed logged
    it and went on answering current, so its view served what it held (a suspension
    committed elsewhere could go unseen). Now that subscriber resets; if the reset fails
    too, every view reads the store until a reset succeeds."""
    from proctor.store.changes import ChangeFeed

    store = open_store(f"sqlite:///{tmp_path / 'feed.db'}")
    feed = ChangeFeed(store)
    failing = {"listen": True, "reset": True}
    resets: list[str] = []
    heard: list[str] = []

    def listen(batch: Sequence[Change]) -> None:
        if failing["listen"]:
            raise RuntimeError("a bug in a view")
        heard.extend(c.key for c in batch)

    def reset() -> None:
        resets.append("failing" if failing["reset"] else "forgot")
        if failing["reset"]:
            raise RuntimeError("a bug in a view's reset")

    def tool(tool_id: str) -> None:
        with store.transaction() as conn:
            conn.execute(insert(tool_catalog).values(tool_id=tool_id, server="git", spec={},
                                                     first_seen_at=NOW))

    others: list[str] = []
    feed.subscribe(listen, reset)
    feed.subscribe(lambda batch: others.extend(c.key for c in batch), lambda: None)
    try:
        assert feed.catch_up() is True
        tool("git/a")
        assert feed.catch_up() is False  # the listener failed, and so did its reset
        assert others == ["git/a"]  # the other subscriber heard it all the same
        assert feed.is_current is False
        assert feed.catch_up() is False  # every look tries the reset again
        failing["reset"] = False
        assert feed.catch_up() is True  # forgotten: from memory again
        assert resets == ["failing", "failing", "forgot"]
        tool("git/b")  # the listener still fails, the reset works: the feed stays current
        assert feed.catch_up() is True
        assert resets[-1] == "forgot" and len(resets) == 4
        failing["listen"] = False
        tool("git/c")
        assert feed.catch_up() is True
        assert heard == ["git/c"] and others == ["git/a", "git/b", "git/c"]
    finally:
        feed.close()
        store.close()


def test_a_notification_with_a_non_ascii_digit_is_ignored_and_the_listener_goes_on(
        postgres_url: str) -> None:
    """'²' is a digit to ``str.isdigit`` but not to ``int``: the listener thread died on
    it and the feed went on saying it was current, with nobody listening."""
    import queue

    import psycopg

    from proctor.store.changes import ChangeFeed

    store = open_store(postgres_url)
    feed = ChangeFeed(store, poll_seconds=0.1)
    heard: queue.Queue[tuple[str, str]] = queue.Queue()

    def note(batch: Sequence[Change]) -> None:
        for change in batch:
            heard.put((change.kind, change.key))

    feed.subscribe(note, lambda: None)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('proctor_changes', '² agent x')")
            conn.execute("SELECT pg_notify('proctor_changes', '9999999 agent y')")
        assert heard.get(timeout=60) == ("agent", "y")
        assert feed.is_current
        assert heard.empty()
    finally:
        feed.close()
        store.close()


def test_while_a_subscriber_that_missed_changes_is_not_yet_forgotten_the_feed_is_not_current(
        tmp_path: Path) -> None:
    """Resetting every subscriber again (a reset had failed) cleared the feed's debt
    before the resets ran: on PostgreSQL a look from another thread (which reads
    ``is_current`` without the lock) was answered current while the subscriber that
    missed changes still held them, in memory, until its own reset came. Here the
    subscriber reset first looks at the feed while the failing one is still owed."""
    from proctor.store.changes import ChangeFeed

    store = open_store(f"sqlite:///{tmp_path / 'feed.db'}")
    feed = ChangeFeed(store)
    failing = {"listen": True, "reset": True}
    seen_during_reset: list[bool] = []

    def listen(batch: Sequence[Change]) -> None:
        if failing["listen"]:
            raise RuntimeError("a bug in a view")

    def reset() -> None:
        if failing["reset"]:
            raise RuntimeError("a bug in a view's reset")

    feed.subscribe(lambda batch: None, lambda: seen_during_reset.append(feed.is_current))
    feed.subscribe(listen, reset)
    try:
        assert feed.catch_up() is True
        with store.transaction() as conn:
            conn.execute(insert(tool_catalog).values(tool_id="git/a", server="git", spec={},
                                                     first_seen_at=NOW))
        assert feed.catch_up() is False  # the listener failed, and so did its reset
        seen_during_reset.clear()
        assert feed.catch_up() is False  # every subscriber reset again; the failing one fails
        assert seen_during_reset == [False]  # never current while one is owed
        failing["reset"] = False
        seen_during_reset.clear()
        assert feed.catch_up() is True
        assert seen_during_reset == [False]  # current once every reset has run
        assert feed.is_current
    finally:
        feed.close()
        store.close()


def test_a_connection_the_listener_opens_while_the_feed_closes_is_closed_too(
        postgres_url: str) -> None:
    """The listener reconnecting when close() gave up waiting for it: the connection it
    then opens is given back, not left checked out of the pool for good."""
    import threading

    import psycopg
    from sqlalchemy import event

    from proctor.store.changes import ChangeFeed

    store = open_store(postgres_url)
    feed = ChangeFeed(store, poll_seconds=0.01)
    connecting, go = threading.Event(), threading.Event()

    def listening(admin: psycopg.Connection[tuple[object, ...]]) -> int:
        found = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%%'").fetchone()
        assert found is not None
        return int(str(found[0]))

    def held(*_args: object) -> None:  # a connect that takes until told to go on
        connecting.set()
        assert go.wait(60)

    try:
        store.engine.pool.dispose()  # nothing idle: the listener's next checkout connects
        event.listen(store.engine, "do_connect", held)
        with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"),
                             autocommit=True) as admin:
            assert listening(admin) == 1
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%%'")
            assert connecting.wait(60)  # the listener is reconnecting
            feed.close()  # gives up waiting for it
            assert feed._thread is not None and feed._thread.is_alive()
            go.set()
            feed._thread.join(60)
            assert not feed._thread.is_alive()
            assert not feed.is_current
            assert listening(admin) == 0  # the connection it opened then is closed
    finally:
        go.set()
        store.close()

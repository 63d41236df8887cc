"""Tasks and revocations from memory while the change feed is current: an ending or a
revocation committed through another store is seen by the next read, and only what
changed is read again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest
from sqlalchemy import event, insert

from proctor.grants import GrantScope, RevocationView, TaskView
from proctor.grants.tasks import Task
from proctor.store import open_store
from proctor.store.changes import ChangeFeed
from proctor.store.tables import leases

from .conftest import CODER, Setup

GIT = GrantScope.from_json({"tools": [{"tool": "git/*"}]})


class _Views:
    def __init__(self, url: str, **options: Any) -> None:
        self.store = open_store(url)  # another process's connections
        self.feed = ChangeFeed(self.store, **options)
        self.tasks = TaskView(self.store, self.feed)
        self.revocations = RevocationView(self.store, self.feed)
        self.statements = 0
        event.listen(self.store.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.statements += 1

    def close(self) -> None:
        self.feed.close()
        self.store.close()


@pytest.fixture
def views(setup: Setup) -> Iterator[_Views]:
    found = _Views(str(setup.store.engine.url.render_as_string(hide_password=False)))
    yield found
    found.close()


async def _until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_an_ended_task_is_seen_by_the_next_read_and_others_stay_in_memory(
        setup: Setup, views: _Views) -> None:
    one = setup.authority.start_task(CODER, purpose="one", on_behalf_of="alice")
    two = setup.authority.start_task(CODER, purpose="two", on_behalf_of="alice")
    assert views.tasks.task(one.id).ended_at is None
    assert views.tasks.task(two.id).purpose == "two"
    before = views.statements
    assert views.tasks.task(one.id).ended_at is None  # from memory
    assert views.statements == before

    setup.authority.end_task(one.id, reason="done")

    def ended() -> bool:
        task: Task = views.tasks.task(one.id)
        return task.ended_at is not None
    await _until(ended)
    before = views.statements
    assert views.tasks.task(two.id).ended_at is None
    assert views.statements == before


@pytest.mark.anyio
async def test_a_revocation_is_seen_by_the_next_read(setup: Setup, views: _Views) -> None:
    task = setup.authority.start_task(CODER, purpose="x", on_behalf_of="alice")
    grant = setup.authority.issue(task.id, GIT)
    lineage = grant.claims.lineage
    assert views.revocations.revoked_among(lineage) == []
    assert views.revocations.revoked_among([*lineage, "lease_unknown"]) == ["lease_unknown"]

    setup.authority.revoke(grant.accessor, "leaked")

    await _until(lambda: views.revocations.revoked_among(lineage) == [grant.grant_id])
    setup.authority.end_task(task.id)
    await _until(lambda: set(views.revocations.revoked_among(lineage)) == set(lineage))


@pytest.mark.anyio
async def test_revocations_are_read_from_the_store_while_the_feed_is_down(
        setup: Setup, database_url: str) -> None:
    views = _Views(database_url, poll_seconds=60)  # no reconnection while the test runs
    try:
        task = setup.authority.start_task(CODER, purpose="x", on_behalf_of="alice")
        grant = setup.authority.issue(task.id, GIT)
        lineage = grant.claims.lineage
        assert views.revocations.revoked_among(lineage) == []  # held from now on
        assert views.tasks.task(task.id).ended_at is None
        if database_url.startswith("postgresql"):
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() "
                              "AND query = 'LISTEN proctor_changes'")
            await _until(lambda: not views.feed.is_current)
            setup.authority.end_task(task.id)
            assert setup.authority.leases.settle(timeout=30)  # the grant marked too
        else:  # the ending commits, then the feed's sequence becomes unreadable
            setup.authority.end_task(task.id)
            assert setup.authority.leases.settle(timeout=30)
            with setup.store.transaction() as conn:
                conn.exec_driver_sql("ALTER TABLE changes RENAME TO changes_away")

        assert not views.feed.catch_up()
        assert set(views.revocations.revoked_among(lineage)) == set(lineage)
        assert views.tasks.task(task.id).ended_at is not None
    finally:
        views.close()


@pytest.mark.anyio
async def test_a_descendant_marked_after_its_root_is_seen_revoked_on_its_own(
        setup: Setup, views: _Views) -> None:
    """The descendants are marked after the root's transaction, without a change each (one
    ``subtree`` change for them all): a view that held one of them as live must still see
    it revoked, asked about it alone."""
    task = setup.authority.start_task(CODER, purpose="x", on_behalf_of="alice")
    parent = setup.authority.issue(task.id, GIT)
    with setup.store.transaction() as conn:  # a child node under the parent
        conn.execute(insert(leases).values(
            id="grant_child", parent_id=parent.grant_id, kind="grant", task_id=task.id,
            agent_id=CODER, created_at=setup.clock.now()))
    assert views.revocations.revoked_among(["grant_child"]) == []  # held as live
    seq = setup.store.fetch("SELECT COALESCE(max(seq), 0) FROM changes", [])[0][0]

    assert setup.authority.revoke(parent.accessor, "leaked") == [parent.grant_id,
                                                                 "grant_child"]

    await _until(lambda: views.revocations.revoked_among(["grant_child"]) == ["grant_child"])
    noted = [(str(r[0]), str(r[1])) for r in setup.store.fetch(
        "SELECT kind, key FROM changes WHERE seq > {p} ORDER BY seq", [seq])]
    # the trigger skipped the marking: one change for it
    assert noted == [("lease", parent.grant_id), ("subtree", parent.grant_id)]


@pytest.mark.anyio
async def test_marking_ends_with_its_transaction_committed_or_not(
        setup: Setup, views: _Views) -> None:
    """Whatever tells the change feed's trigger that a transaction marks descendants (a
    setting of that transaction on PostgreSQL, a row only it sees on SQLite) ends with
    it, committed or rolled back: a later revocation on the same pooled connection is its
    own ``lease`` change, which other processes' views drop the node on."""
    from proctor.grants.leases import _MARKING

    task = setup.authority.start_task(CODER, purpose="x", on_behalf_of="alice")
    parent = setup.authority.issue(task.id, GIT)
    other = setup.authority.issue(task.id, GIT)
    with setup.store.transaction() as conn:  # a child node under the parent
        conn.execute(insert(leases).values(
            id="grant_child", parent_id=parent.grant_id, kind="grant", task_id=task.id,
            agent_id=CODER, created_at=setup.clock.now()))
    assert views.revocations.revoked_among([other.grant_id]) == []  # held as live
    seq = setup.store.fetch("SELECT COALESCE(max(seq), 0) FROM changes", [])[0][0]

    assert setup.authority.revoke(parent.accessor, "leaked") == [parent.grant_id,
                                                                 "grant_child"]
    assert setup.authority.leases.settle(timeout=30)  # the marker thread's transaction
    with pytest.raises(RuntimeError), setup.store.transaction() as conn:
        conn.exec_driver_sql(_MARKING[setup.store.backend])  # a marking that fails midway
        raise RuntimeError("the marking failed")
    rounds = setup.store.engine.pool.size() + 1  # type: ignore[attr-defined]
    for _ in range(rounds):  # through every connection the pool holds (first in, first out)
        with setup.store.transaction() as conn:
            conn.execute(leases.update().where(leases.c.id == other.grant_id)
                         .values(revoked_at=setup.clock.now()))
            conn.execute(leases.update().where(leases.c.id == other.grant_id)
                         .values(revoked_at=None))
    with setup.store.transaction() as conn:
        conn.execute(leases.update().where(leases.c.id == other.grant_id)
                     .values(revoked_at=setup.clock.now(), revoked_reason="by hand"))

    noted = [(str(r[0]), str(r[1])) for r in setup.store.fetch(
        "SELECT kind, key FROM changes WHERE seq > {p} ORDER BY seq", [seq])]
    assert noted == [("lease", parent.grant_id), ("subtree", parent.grant_id),
                     *[("lease", other.grant_id)] * (rounds + 1)]
    await _until(lambda: views.revocations.revoked_among([other.grant_id])
                 == [other.grant_id])

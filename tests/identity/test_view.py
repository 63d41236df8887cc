"""The agent view: read once, then from memory while the change feed proves it current;
a change made by another process is seen by the next read; a feed that cannot prove
it is current makes the view read the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest
from sqlalchemy import event

from proctor.clock import FrozenClock
from proctor.identity import AgentRegistry, AgentView, JwtSvidProof, TrustConfig, TrustState
from proctor.store import Store, open_store
from proctor.store.changes import ChangeFeed, prune_changes
from tests.conftest import sqlite_only

from .factories import BUILDER, CODER, manifest


class _Statements:
    """Counts the statements a store's engine runs (the views' reads go through it)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        event.listen(store.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
def other(database_url: str, wall_clock: FrozenClock, trust: TrustConfig
          ) -> Iterator[AgentRegistry]:
    """The same database as ``registry``'s, through a store of its own: another process."""
    store = open_store(database_url)
    try:
        yield AgentRegistry(store, wall_clock, trust)
    finally:
        store.close()


def _feed(registry: AgentRegistry, **options: Any) -> ChangeFeed:
    return ChangeFeed(registry._store, **options)


def _register(registry: AgentRegistry, agent_id: str = CODER) -> None:
    registry.register(agent_id, owner="alice", proof=JwtSvidProof(), manifest=manifest())


async def _until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.01)


def _seen_as(view: AgentView, agent_id: str, state: TrustState) -> bool:
    agent = view.find(agent_id)
    return agent is not None and agent.trust_state is state


def test_a_warm_view_answers_from_memory(registry: AgentRegistry) -> None:
    _register(registry)
    feed = _feed(registry)
    try:
        view = AgentView(registry, feed)
        assert view.find(CODER) is not None  # read once
        statements = _Statements(registry._store)
        for _ in range(5):
            found = view.find(CODER)
            assert found is not None and found.trust_state is TrustState.TRUSTED
        assert statements.count == 0
    finally:
        feed.close()


@pytest.mark.anyio
async def test_a_suspension_by_another_process_reaches_the_view_and_only_that_agent(
        registry: AgentRegistry, other: AgentRegistry) -> None:
    _register(registry)
    _register(registry, BUILDER)
    feed = _feed(registry)
    try:
        view = AgentView(registry, feed)
        heard: list[tuple[str, TrustState | None]] = []
        view.on_change(lambda i, a: heard.append((i, a.trust_state if a else None)))
        assert _seen_as(view, CODER, TrustState.TRUSTED)
        assert _seen_as(view, BUILDER, TrustState.TRUSTED)

        other.suspend(CODER, by="erin", reason="leaked key")

        # SQLite: the next read catches up; PostgreSQL: the notification arrives (the
        # view may answer from the store before its listeners are told: wait for both)
        await _until(lambda: _seen_as(view, CODER, TrustState.SUSPENDED) and heard)
        assert heard == [(CODER, TrustState.SUSPENDED)]
        statements = _Statements(registry._store)
        assert _seen_as(view, BUILDER, TrustState.TRUSTED)  # still held
        assert statements.count == 0
    finally:
        feed.close()


@pytest.mark.anyio
async def test_a_score_the_feed_delivered_before_the_writer_told_the_view_stays_held(
        registry: AgentRegistry, other: AgentRegistry) -> None:
    # the order the audit writer's commit and the feed's news of it may come in on
    # PostgreSQL: the news first (the view reads the agent at the committed score and
    # holds it), then the writer's rescored() with the score its transaction read
    # before. The entry shows what committed: it stays, not dropped (a read after)
    _register(registry)
    feed = _feed(registry)
    try:
        view = AgentView(registry, feed)
        heard: list[str] = []
        view.on_change(lambda i, _: heard.append(i))
        before = view.find(CODER)
        assert before is not None
        other.set_risk_score(CODER, 40, ["new_tool"])  # the commit, as the writer made it
        await _until(lambda: _risk(view, CODER) == (40, ("new_tool",)) and heard)
        misses = view.misses
        view.rescored(CODER, 40, ["new_tool"],
                      prior=(before.risk_score, tuple(before.risk_factors)))
        assert _risk(view, CODER) == (40, ("new_tool",))
        assert view.misses == misses  # still held: no read of the store
    finally:
        feed.close()


def _risk(view: AgentView, agent_id: str) -> tuple[int, tuple[str, ...]] | None:
    agent = view.find(agent_id)
    return None if agent is None else (agent.risk_score, tuple(agent.risk_factors))


@pytest.mark.anyio
async def test_the_view_reads_the_store_when_its_change_feed_is_down(
        registry: AgentRegistry, other: AgentRegistry, database_url: str) -> None:
    _register(registry)
    feed = _feed(registry, poll_seconds=60)  # no reconnection while the test runs
    try:
        view = AgentView(registry, feed)
        assert _seen_as(view, CODER, TrustState.TRUSTED)
        if database_url.startswith("postgresql"):
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() "
                              "AND query = 'LISTEN proctor_changes'")
            await _until(lambda: not feed.is_current)
            other.suspend(CODER, by="erin")
        else:  # the suspension commits, then the feed's sequence becomes unreadable
            other.suspend(CODER, by="erin")
            with other._store.transaction() as conn:
                conn.exec_driver_sql("ALTER TABLE changes RENAME TO changes_away")

        # the feed never told the view: it must not answer from memory
        assert not view.is_current()
        assert _seen_as(view, CODER, TrustState.SUSPENDED)
        other.review(CODER, reviewer="erin", expected_digest=other.get(CODER).review_digest)
        assert _seen_as(view, CODER, TrustState.TRUSTED)
    finally:
        feed.close()


@sqlite_only  # PostgreSQL delivers each change by notification, never by reading the table
def test_changes_pruned_before_a_view_read_them_reset_it(registry: AgentRegistry,
                                                        other: AgentRegistry) -> None:
    _register(registry)
    feed = _feed(registry)
    try:
        view = AgentView(registry, feed)
        resets: list[bool] = []
        view.on_change(lambda *_: None, reset=lambda: resets.append(True))
        assert _seen_as(view, CODER, TrustState.TRUSTED)
        other.suspend(CODER, by="erin")
        other.set_risk_score(CODER, 40)
        assert prune_changes(other._store, keep=1) >= 1

        assert _seen_as(view, CODER, TrustState.SUSPENDED)
        assert resets == [True]
    finally:
        feed.close()


def test_pruning_keeps_at_least_the_newest_change(registry: AgentRegistry) -> None:
    _register(registry)
    with pytest.raises(ValueError):
        prune_changes(registry._store, keep=0)


@sqlite_only
def test_one_look_reads_every_view_as_of_its_first_read_and_the_next_look_sees_more(
        registry: AgentRegistry, other: AgentRegistry) -> None:
    _register(registry)
    feed = _feed(registry)
    try:
        view = AgentView(registry, feed)
        assert _seen_as(view, CODER, TrustState.TRUSTED)
        with view.one_look():
            assert _seen_as(view, CODER, TrustState.TRUSTED)  # the look
            other.suspend(CODER, by="erin", reason="leaked key")
            assert _seen_as(view, CODER, TrustState.TRUSTED)  # as of the look
        assert _seen_as(view, CODER, TrustState.SUSPENDED)  # the next look
    finally:
        feed.close()

"""Revocation in O(1) of the subtree: the revoking transaction marks the roots only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select

from proctor.errors import GrantError
from proctor.grants import IssuedGrant, LeaseNode
from proctor.grants import leases as leases_module
from proctor.grants.leases import LEFT_OVER_SECONDS
from proctor.oversight.paths import live_grants
from proctor.server.console.queries import recent_tasks
from proctor.store import open_store
from proctor.store.tables import leases

from .conftest import CODER, FINANCE, SUPPORT, Setup
from .test_authority import GIT, _exchange, _issue, _use


def _states(setup: Setup, task_id: str) -> dict[str, bool]:
    return {n.id: n.is_revoked for n in setup.authority.tree(task_id)
            if isinstance(n, LeaseNode)}


def _marked(setup: Setup, node_id: str) -> bool:
    node = setup.authority.leases.node(node_id)
    return node is not None and node.is_revoked


def test_a_revoked_root_refuses_its_unmarked_descendants_and_the_sweeper_marks_them(
    setup: Setup,
) -> None:
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=120)
    # the revoking transaction alone, as if its process died before marking the rest
    with setup.store.transaction() as conn:
        assert setup.authority.leases.revoke_in(conn, [parent.grant_id], "leaked") == [
            parent.grant_id]
    assert not _marked(setup, child.grant_id)
    assert _states(setup, parent.claims.task_id)[child.grant_id]  # listed as revoked
    assert _use(setup, child) == "grant_revoked"  # its line carries the revoked parent

    setup.clock.advance(seconds=LEFT_OVER_SECONDS + 1)  # the revoker's marker is long gone
    setup.authority.sweep()
    assert _marked(setup, child.grant_id)
    assert _use(setup, child) == "grant_revoked"


def test_the_sweep_leaves_a_young_revocations_descendants_to_its_marker(setup: Setup) -> None:
    """What lies under a node revoked moments ago is its marker's, at work in this process
    or another: the sweep marked it too, at once (the work twice, counted twice)."""
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=120)
    with setup.store.transaction() as conn:  # the revoking transaction; its marker next
        setup.authority.leases.revoke_in(conn, [parent.grant_id], "leaked")
    assert setup.authority.leases.sweep_expired() == 0
    assert not _marked(setup, child.grant_id)
    setup.clock.advance(seconds=LEFT_OVER_SECONDS + 1)  # no marker did: left over
    assert setup.authority.leases.sweep_expired() == 1
    assert _marked(setup, child.grant_id)


def test_listings_show_what_lies_under_a_revoked_node_revoked_before_it_is_marked(
        setup: Setup) -> None:
    """The access paths' live grants and the console's live counts decide as the checks
    do: through the line, marked or not."""
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    other = _issue(setup)
    ended = _issue(setup)
    with setup.store.transaction() as conn:  # roots alone, as if their process died
        setup.authority.leases.revoke_in(conn, [parent.grant_id, ended.claims.task_id],
                                         "leaked")
    assert not _marked(setup, child.grant_id) and not _marked(setup, ended.grant_id)
    for grant in (child, ended):
        assert _use(setup, grant) == "grant_revoked"
    now = setup.clock.now()
    assert {g.grant_id for g in live_grants(setup.store, now=now)} == {other.grant_id}
    counts = {task.id: live for task, live in recent_tasks(setup.store)}
    assert counts == {parent.claims.task_id: 0, other.claims.task_id: 1,
                      ended.claims.task_id: 0}


def test_revoking_returns_the_roots_first_then_every_descendant_marked(setup: Setup) -> None:
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    heard: list[list[str]] = []
    setup.authority.leases.subscribe(lambda ids, _reason: heard.append(list(ids)))
    assert setup.authority.revoke(parent.accessor, "leaked") == [parent.grant_id,
                                                                 child.grant_id]
    assert _use(setup, child) == "grant_revoked"  # in force, marked or not
    assert setup.authority.leases.settle(timeout=30)  # the marker thread's work
    assert heard == [[parent.grant_id], [child.grant_id]]
    assert all(_states(setup, parent.claims.task_id).values()) is False  # the task lives
    assert _states(setup, parent.claims.task_id)[child.grant_id]


def test_descendants_are_marked_a_chunk_per_transaction_and_nothing_outside(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases_module, "MARK_CHUNK", 4)
    root = _issue(setup)
    bystander = _issue(setup)
    now = setup.clock.now()
    level: list[str] = [root.grant_id]
    rows: list[dict[str, Any]] = []
    for depth in range(3):  # 3 + 9 + 27 nodes under the root
        level = [f"grant_{depth}_{i}" for i in range(len(level) * 3)]
        rows += [{"id": node, "parent_id": level_parent, "kind": "grant",
                  "task_id": root.claims.task_id, "agent_id": CODER, "created_at": now}
                 for node, level_parent in zip(level, _parents(rows, root, depth), strict=True)]
    with setup.store.transaction() as conn:
        conn.execute(insert(leases), rows)
    heard: list[list[str]] = []
    setup.authority.leases.subscribe(lambda ids, _reason: heard.append(list(ids)))

    revoked = setup.authority.revoke(root.accessor, "leaked")
    assert setup.authority.leases.settle(timeout=30)

    assert revoked[0] == root.grant_id
    assert sorted(revoked[1:]) == sorted(r["id"] for r in rows)
    assert [len(batch) for batch in heard] == [1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3]
    states = _states(setup, root.claims.task_id)
    assert all(states[r["id"]] for r in rows) and states[root.grant_id]
    assert not states[root.claims.task_id]
    assert not _states(setup, bystander.claims.task_id)[bystander.grant_id]
    assert setup.authority.leases.mark_descendants([root.grant_id], "again") == []


def _parents(rows: list[dict[str, Any]], root: IssuedGrant, depth: int) -> list[str]:
    """Each node of the level above, three times (the root for the first level)."""
    above = [root.grant_id] if depth == 0 else [r["id"] for r in rows
                                                if r["id"].startswith(f"grant_{depth - 1}_")]
    return [parent for parent in above for _ in range(3)]


def test_a_revoked_task_refuses_every_unmarked_grant_under_it_and_their_exchanges(
    setup: Setup,
) -> None:
    """The task as the root, marked alone (its process died before the marker thread ran):
    grants two levels down are used and exchanged through their line, not their own mark."""
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    grandchild = _exchange(setup, child, FINANCE, GIT, ttl_seconds=30)
    with setup.store.transaction() as conn:
        assert setup.authority.leases.revoke_in(conn, [parent.claims.task_id], "ended") == [
            parent.claims.task_id]
    assert not _marked(setup, child.grant_id) and not _marked(setup, grandchild.grant_id)
    for grant in (parent, child, grandchild):
        assert _use(setup, grant) == "grant_revoked"
    with pytest.raises(GrantError) as refused:
        _exchange(setup, child, FINANCE, GIT, ttl_seconds=10)
    assert refused.value.code == "grant_revoked"
    states = _states(setup, parent.claims.task_id)
    assert states[child.grant_id] and states[grandchild.grant_id]  # listed as revoked


def test_a_closing_store_waits_for_the_marking_under_way(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    # closed under a marking transaction, a connection was left to the garbage collector
    # (a ResourceWarning in a later test) and the rest left to the sweep
    monkeypatch.setattr(leases_module, "MARK_CHUNK", 1)
    root = _issue(setup)
    now = setup.clock.now()
    rows = [{"id": f"grant_under_{i}", "parent_id": root.grant_id, "kind": "grant",
             "task_id": root.claims.task_id, "agent_id": CODER, "created_at": now}
            for i in range(40)]
    with setup.store.transaction() as conn:
        conn.execute(insert(leases), rows)
    url = setup.store.engine.url.render_as_string(hide_password=False)

    assert len(setup.authority.revoke(root.accessor, "leaked")) == 41  # 40 left to mark
    setup.store.close()

    assert setup.authority.leases.settle(timeout=0)  # nothing under way any more
    store = open_store(url)
    try:
        with store.reading() as conn:
            unmarked = conn.execute(select(leases.c.id).where(
                leases.c.parent_id == root.grant_id, leases.c.revoked_at.is_(None))).all()
    finally:
        store.close()
    assert unmarked == []

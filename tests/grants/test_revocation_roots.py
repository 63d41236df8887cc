"""Revocation in O(1) of the subtree: the revoking transaction marks the roots only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select

from proctor.errors import GrantError
from proctor.grants import IssuedGrant, LeaseNode
from proctor.grants import leases as leases_module
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
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    # the revoking transaction alone, as if its process died before marking the rest
    with setup.store.transaction() as conn:
        assert setup.authority.leases.revoke_in(conn, [parent.grant_id], "leaked") == [
            parent.grant_id]
    assert not _marked(setup, child.grant_id)
    assert _states(setup, parent.claims.task_id)[child.grant_id]  # listed as revoked
    assert _use(setup, child) == "grant_revoked"  # its line carries the revoked parent

    setup.authority.sweep()
    assert _marked(setup, child.grant_id)
    assert _use(setup, child) == "grant_revoked"


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

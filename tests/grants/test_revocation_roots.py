"""Revocation in O(1) of the subtree: the revoking transaction marks the roots only."""

from __future__ import annotations

from proctor.grants import LeaseNode

from .conftest import SUPPORT, Setup
from .test_authority import GIT, _exchange, _issue, _use


def _states(setup: Setup, task_id: str) -> dict[str, bool]:
    return {n.id: n.is_revoked for n in setup.authority.tree(task_id)
            if isinstance(n, LeaseNode)}


def test_a_revoked_root_refuses_its_unmarked_descendants_and_the_sweeper_marks_them(
    setup: Setup,
) -> None:
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    # the revoking transaction alone, as if its process died before marking the rest
    with setup.store.transaction() as conn:
        assert setup.authority.leases.revoke_in(conn, [parent.grant_id], "leaked") == [
            parent.grant_id]
    states = _states(setup, parent.claims.task_id)
    assert states[parent.grant_id] and not states[child.grant_id]
    assert _use(setup, child) == "grant_revoked"  # its line carries the revoked parent

    setup.authority.sweep()
    assert _states(setup, parent.claims.task_id)[child.grant_id]
    assert _use(setup, child) == "grant_revoked"


def test_revoking_returns_the_roots_first_then_every_descendant_marked(setup: Setup) -> None:
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    heard: list[list[str]] = []
    setup.authority.leases.subscribe(lambda ids, _reason: heard.append(list(ids)))
    assert setup.authority.revoke(parent.accessor, "leaked") == [parent.grant_id,
                                                                 child.grant_id]
    assert heard == [[parent.grant_id], [child.grant_id]]
    assert all(_states(setup, parent.claims.task_id).values()) is False  # the task lives
    assert _states(setup, parent.claims.task_id)[child.grant_id]

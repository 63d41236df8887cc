"""The uses of one write batch, applied together (one statement per step for all of
them), judged in the batch's order as if one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from proctor.audit import WriteCursor
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.use import GrantUse
from proctor.store.tables import grants, proof_nonces, tasks

from .conftest import CODER, Setup

GIT = GrantScope.from_json({"tools": [{"tool": "git/*"}]})
TARGET = "mcp://git/git_log"
ARGS = {"repo_path": "/srv/repos/app"}


def _issue(setup: Setup, **kwargs: Any) -> IssuedGrant:
    task = setup.authority.start_task(CODER, purpose="fix the build",
                                      on_behalf_of="alice@acme.example")
    return setup.authority.issue(task.id, GIT, **kwargs)


def _proof(setup: Setup, grant: IssuedGrant) -> str:
    return make_proof(setup.agents.keys[CODER], grant.token, method="tools/call",
                      target=TARGET, now=setup.clock.now())


def _use(setup: Setup, grant: IssuedGrant, proof: str | None = None) -> GrantUse:
    return setup.authority.prepare(grant.token, proof or _proof(setup, grant),
                                   method="tools/call", target=TARGET, tool_id="git/git_log",
                                   args=ARGS)


def _apply(setup: Setup, uses: Sequence[GrantUse]) -> list[str]:
    """``uses`` in one transaction, as the audit writer applies a batch's."""
    with setup.store.transaction() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        try:
            GrantUse.apply_all(WriteCursor(cursor, is_sqlite=setup.store.backend == "sqlite"),
                               uses)
        finally:
            cursor.close()
    return ["ok" if u.refusal is None else u.refusal.code for u in uses]


def test_a_batch_gives_the_last_uses_to_the_first_callers_and_takes_nothing_from_the_rest(
    setup: Setup,
) -> None:
    grant = _issue(setup, max_uses=2)
    uses = [_use(setup, grant) for _ in range(3)]
    assert _apply(setup, uses) == ["ok", "ok", "grant_uses_exhausted"]
    assert [u.uses_left for u in uses] == [1, 0, None]
    with setup.store.reading() as conn:
        assert conn.execute(select(grants.c.uses).where(
            grants.c.id == grant.grant_id)).scalar_one() == 2
        kept = set(conn.execute(select(proof_nonces.c.nonce)).scalars())
    assert uses[0].nonce in kept and uses[1].nonce in kept
    assert uses[2].nonce not in kept  # the refused use changed nothing


def test_a_nonce_twice_in_one_batch_stands_once_and_a_stored_one_not_at_all(
    setup: Setup,
) -> None:
    grant = _issue(setup, max_uses=10)
    proof = _proof(setup, grant)
    assert _apply(setup, [_use(setup, grant, proof)]) == ["ok"]
    again, twice = _proof(setup, grant), _use(setup, grant)
    batch = [_use(setup, grant, proof), _use(setup, grant, again), twice,
             _use(setup, grant, again)]
    assert _apply(setup, batch) == ["proof_replayed", "ok", "ok", "proof_replayed"]
    with setup.store.reading() as conn:
        assert conn.execute(select(grants.c.uses).where(
            grants.c.id == grant.grant_id)).scalar_one() == 3


def test_a_grant_without_max_uses_is_not_counted_and_a_limited_one_in_the_same_batch_is(
    setup: Setup,
) -> None:
    free, limited = _issue(setup), _issue(setup, max_uses=3)
    batch = [_use(setup, g) for g in (free, limited, free, limited)]
    assert _apply(setup, batch) == ["ok", "ok", "ok", "ok"]
    assert [u.uses_left for u in batch] == [None, 2, None, 1]
    assert [u.accessor for u in batch] == [free.accessor, limited.accessor] * 2
    with setup.store.reading() as conn:
        counted = {str(r.id): int(r.uses) for r in conn.execute(select(grants.c.id, grants.c.uses))}
        kept = set(conn.execute(select(proof_nonces.c.nonce)).scalars())
    # nothing to enforce on the first: no count written (its calls are in the audit log)
    assert (counted[free.grant_id], counted[limited.grant_id]) == (0, 2)
    assert {u.nonce for u in batch} <= kept  # its proofs are single-use all the same


def test_uses_of_several_grants_in_one_batch_are_judged_each_on_its_own(
    setup: Setup,
) -> None:
    one, two, revoked, ended = (_issue(setup, max_uses=1), _issue(setup), _issue(setup),
                                _issue(setup))
    setup.authority.revoke(revoked.grant_id, "leaked")
    setup.authority.end_task(ended.claims.task_id, reason="done")
    batch = [_use(setup, g) for g in (one, two, revoked, one, ended, two)]
    # an ended task's node is revoked with it: its grants are refused as revoked
    assert _apply(setup, batch) == ["ok", "ok", "grant_revoked", "grant_uses_exhausted",
                                    "grant_revoked", "ok"]
    assert [u.uses_left for u in batch] == [0, None, None, None, None, None]
    assert batch[0].accessor == one.accessor and batch[5].accessor == two.accessor


def test_a_batch_marks_a_task_with_the_highest_sensitivity_its_allowed_uses_read(
    setup: Setup,
) -> None:
    grant = _issue(setup, max_uses=2)
    uses = [_use(setup, grant) for _ in range(3)]
    uses[0].sensitivity, uses[1].sensitivity, uses[2].sensitivity = 1, 2, 3
    assert _apply(setup, uses) == ["ok", "ok", "grant_uses_exhausted"]
    with setup.store.reading() as conn:
        assert conn.execute(select(tasks.c.sensitivity_seen).where(
            tasks.c.id == grant.claims.task_id)).scalar_one() == 2


def test_nonces_are_kept_in_the_order_of_their_proofs_times_and_a_replay_stays_refused(
    setup: Setup,
) -> None:
    grant = _issue(setup)
    made = []
    for _ in range(3):  # random nonces, a second apart
        made.append(_proof(setup, grant))
        setup.clock.advance(seconds=1)
    uses = [_use(setup, grant, proof) for proof in made]
    assert _apply(setup, list(reversed(uses))) == ["ok", "ok", "ok"]
    with setup.store.reading() as conn:
        kept = list(conn.execute(select(proof_nonces.c.nonce).order_by(proof_nonces.c.nonce))
                    .scalars())
    # the b-tree's order is the proofs' order, whatever their nonces: a batch's go to the
    # right edge (one leaf) rather than a random leaf each
    assert kept == [u.nonce for u in uses]
    assert _apply(setup, [_use(setup, grant, made[0])]) == ["proof_replayed"]

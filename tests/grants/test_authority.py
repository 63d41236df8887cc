"""Issuing, checking, delegating and revoking grants, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select, update

from proctor.errors import GrantError
from proctor.grants import GrantScope, IssuedGrant, Swept, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.store.tables import grants, leases

from .conftest import CODER, FINANCE, ISSUER, SUPPORT, Setup

GIT = GrantScope.from_json({"tools": [
    {"tool": "git/*", "args": {"repo_path": {"prefix": ["/srv/repos/"]}}},
]})
TARGET = "mcp://git/git_log"


def _use(setup: Setup, grant: IssuedGrant, *, tool: str = "git/git_log",
         args: dict[str, Any] | None = None, target: str = TARGET) -> str:
    key = setup.agents.keys[grant.claims.agent_id]
    proof = make_proof(key, grant.token, method="tools/call", target=target,
                       now=setup.clock.now())
    try:
        setup.authority.check(grant.token, proof, method="tools/call", target=target,
                              tool_id=tool, args={"repo_path": "/srv/repos/app"}
                              if args is None else args)
    except GrantError as exc:
        return exc.code
    return "ok"


def _issue(setup: Setup, scope: GrantScope = GIT, **kwargs: Any) -> IssuedGrant:
    task = setup.authority.start_task(CODER, purpose="fix the build",
                                      on_behalf_of="alice@acme.example")
    return setup.authority.issue(task.id, scope, **kwargs)


def _exchange(setup: Setup, parent: IssuedGrant, to_agent: str, scope: GrantScope,
              **kwargs: Any) -> IssuedGrant:
    key = setup.agents.keys[parent.claims.agent_id]
    proof = make_proof(key, parent.token, method=EXCHANGE_METHOD, target=ISSUER,
                       now=setup.clock.now())
    made = setup.authority.exchange(parent.token, proof, to_agent=to_agent, scope=scope,
                                    **kwargs)
    assert isinstance(made, IssuedGrant)  # these agents have registered keys
    return made


def test_an_issued_grant_works_for_calls_inside_its_scope_only(setup: Setup) -> None:
    grant = _issue(setup)
    assert grant.accessor.startswith("acc_")
    assert _use(setup, grant) == "ok"
    assert _use(setup, grant, args={"repo_path": "/etc"}) == "grant_out_of_scope"
    assert _use(setup, grant, tool="crm/issue_refund", args={}) == "grant_out_of_scope"


def test_only_a_hash_of_the_token_is_stored(setup: Setup) -> None:
    grant = _issue(setup)
    with setup.store.transaction() as conn:
        row = conn.execute(select(grants)).one()
    assert grant.token not in str(tuple(row))
    assert row.accessor == grant.accessor


def test_issuance_follows_policy(setup: Setup) -> None:
    with pytest.raises(GrantError) as caught:
        _issue(setup, ttl_seconds=1800)  # the example policy allows 15 minutes
    assert caught.value.code == "issuance_denied"
    assert "no policy permits `grant:issue`" in caught.value.message
    with pytest.raises(GrantError) as unknown:
        _issue(setup, GrantScope.from_json({"tools": [{"tool": "nosuch/*"}]}))
    assert unknown.value.code == "scope_invalid"


def test_issuance_for_an_unknown_or_inactive_agent_is_refused(setup: Setup) -> None:
    with pytest.raises(GrantError) as caught:
        setup.authority.start_task("spiffe://acme.example/agent/nobody", purpose="x",
                                   on_behalf_of="y")
    assert caught.value.code == "agent_unknown"
    task = setup.authority.start_task(CODER, purpose="x", on_behalf_of="alice@acme.example")
    setup.agents.inactive.add(CODER)
    with pytest.raises(GrantError) as inactive:
        setup.authority.issue(task.id, GIT)
    assert inactive.value.code == "agent_not_active"


def test_a_replayed_proof_is_refused_and_changes_nothing(setup: Setup) -> None:
    grant = _issue(setup, max_uses=5)
    key = setup.agents.keys[CODER]
    proof = make_proof(key, grant.token, method="tools/call", target=TARGET,
                       now=setup.clock.now())
    args = {"repo_path": "/srv/repos/app"}
    first = setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                                  tool_id="git/git_log", args=args)
    assert first.uses_left == 4
    with pytest.raises(GrantError) as caught:
        setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                              tool_id="git/git_log", args=args)
    assert caught.value.code == "proof_replayed"
    with setup.store.transaction() as conn:
        assert conn.execute(select(grants.c.uses)).scalar_one() == 1


def test_a_proof_by_another_agents_key_is_refused(setup: Setup) -> None:
    grant = _issue(setup)
    thief = setup.agents.keys[FINANCE]
    proof = make_proof(thief, grant.token, method="tools/call", target=TARGET,
                       now=setup.clock.now())
    with pytest.raises(GrantError) as caught:
        setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                              tool_id="git/git_log", args={"repo_path": "/srv/repos/app"})
    assert caught.value.code == "proof_wrong_key"


def test_uses_run_out(setup: Setup) -> None:
    grant = _issue(setup, max_uses=2)
    assert [_use(setup, grant) for _ in range(3)] == ["ok", "ok", "grant_uses_exhausted"]


def test_the_last_use_claimed_by_two_concurrent_checks_goes_to_exactly_one(
    setup: Setup,
) -> None:
    grant = _issue(setup, max_uses=1)
    results: list[str] = []
    barrier = threading.Barrier(2, timeout=10)

    def race() -> None:
        barrier.wait()
        results.append(_use(setup, grant))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["grant_uses_exhausted", "ok"]


def test_delegation_narrows_and_the_child_carries_the_chain(setup: Setup) -> None:
    parent = _issue(setup)
    narrow = GrantScope.from_json({"tools": [
        {"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/repos/app"]}}}]})
    child = _exchange(setup, parent, SUPPORT, narrow, ttl_seconds=60)
    assert child.claims.agent_id == SUPPORT
    assert child.claims.ancestors == (parent.grant_id,)
    assert child.claims.actor_chain == (CODER,)
    assert child.claims.expires_at <= parent.claims.expires_at
    assert _use(setup, child) == "ok"
    assert _use(setup, child, args={"repo_path": "/srv/repos/other"}) == "grant_out_of_scope"


@pytest.mark.parametrize(("scope", "ttl", "code"), [
    ({"tools": [{"tool": "git/*"}]}, 60, "delegation_widens_scope"),
    ({"tools": [{"tool": "crm/issue_refund"}]}, 60, "delegation_widens_scope"),
    ({"tools": [{"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/repos/a"]}}}]},
     600, "delegation_extends_expiry"),
])
def test_a_delegation_that_widens_or_outlives_its_parent_is_refused(
    setup: Setup, scope: dict[str, Any], ttl: int, code: str
) -> None:
    parent = _issue(setup)
    with pytest.raises(GrantError) as caught:
        _exchange(setup, parent, SUPPORT, GrantScope.from_json(scope), ttl_seconds=ttl)
    assert caught.value.code == code
    with setup.store.transaction() as conn:
        assert conn.execute(select(leases.c.id).where(leases.c.kind == "grant")).all() == [
            (parent.grant_id,)
        ]


def test_delegation_depth_is_limited(setup: Setup) -> None:
    drifted = "spiffe://acme.example/agent/coder-drifted"
    setup.agents.add(drifted, ec.generate_private_key(ec.SECP256R1()))
    grant = _issue(setup)
    holders = [SUPPORT, FINANCE, drifted]
    for depth, holder in enumerate(holders, start=1):
        grant = _exchange(setup, grant, holder, GIT, ttl_seconds=100 - depth)
    with pytest.raises(GrantError) as caught:
        _exchange(setup, grant, SUPPORT, GIT, ttl_seconds=50)
    assert caught.value.code == "delegation_too_deep"


def test_revoking_a_parent_revokes_the_child_and_ending_the_task_revokes_all(
    setup: Setup,
) -> None:
    task = setup.authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    parent = setup.authority.issue(task.id, GIT)
    sibling = setup.authority.issue(task.id, GIT)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    revoked = setup.authority.revoke(parent.accessor, "operator revoked")
    assert set(revoked) == {parent.grant_id, child.grant_id}
    assert _use(setup, child) == "grant_revoked"
    assert _use(setup, parent) == "grant_revoked"
    assert _use(setup, sibling) == "ok"
    with pytest.raises(GrantError) as exchange_revoked:
        _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    assert exchange_revoked.value.code == "grant_revoked"

    setup.authority.end_task(task.id)
    assert _use(setup, sibling) == "grant_revoked"
    tree = setup.authority.tree(task.id)
    assert [n.kind for n in tree] == ["task", "grant", "grant", "grant"]
    assert all(n.is_revoked for n in tree)
    with pytest.raises(GrantError) as ended:
        setup.authority.issue(task.id, GIT)
    assert ended.value.code == "task_ended"


def test_revoking_an_agent_revokes_all_its_grants(setup: Setup) -> None:
    mine = _issue(setup)
    theirs = _exchange(setup, mine, SUPPORT, GIT, ttl_seconds=60)
    setup.authority.revoke_agent(SUPPORT, "agent compromised")
    assert _use(setup, theirs) == "grant_revoked"
    assert _use(setup, mine) == "ok"


def test_revocation_is_announced_to_subscribers(setup: Setup) -> None:
    heard: list[tuple[list[str], str]] = []
    setup.authority.leases.subscribe(lambda ids, reason: heard.append((list(ids), reason)))
    grant = _issue(setup)
    setup.authority.revoke(grant.grant_id, "leaked")
    assert heard == [([grant.grant_id], "leaked")]


def test_revoking_a_subtree_terminates_on_a_cycle(setup: Setup) -> None:
    now = setup.clock.now()
    with setup.store.transaction() as conn:
        for node, parent in [("a", "c"), ("b", "a"), ("c", "b")]:
            conn.execute(insert(leases).values(id=node, parent_id=parent, kind="grant",
                                               task_id="t", agent_id=CODER, created_at=now))
    assert sorted(setup.authority.leases.revoke_subtree(["a"], "test")) == ["a", "b", "c"]


def test_expired_grants_are_swept(setup: Setup) -> None:
    grant = _issue(setup, ttl_seconds=60)
    setup.clock.advance(seconds=61)
    assert setup.authority.leases.sweep_expired() == 1
    node = setup.authority.leases.node(grant.grant_id)
    assert node is not None
    assert node.revoked_reason == "expired"


def test_an_unknown_grant_cannot_be_revoked(setup: Setup) -> None:
    with pytest.raises(GrantError) as caught:
        setup.authority.revoke("acc_nope", "x")
    assert caught.value.code == "grant_unknown"


def test_inspecting_a_grant_reports_its_claims_and_revocation(setup: Setup) -> None:
    grant = _issue(setup)
    assert setup.authority.inspect(grant.token).claims == grant.claims
    setup.authority.revoke(grant.accessor, "done")
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "grant_revoked"


def test_a_grant_dies_with_its_task_even_if_the_subtree_missed_it(setup: Setup) -> None:
    # On PostgreSQL a grant issued while its task is being ended can escape the
    # subtree that ending collected; the task's own revocation still reaches it.
    grant = _issue(setup)
    with setup.store.transaction() as conn:
        conn.execute(update(leases).where(leases.c.id == grant.claims.task_id)
                     .values(revoked_at=setup.clock.now(), revoked_reason="task ended"))
    assert _use(setup, grant) == "grant_revoked"
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "grant_revoked"


def test_a_suspended_agents_grant_stops_working_at_once(setup: Setup) -> None:
    grant = _issue(setup)
    setup.agents.inactive.add(CODER)
    assert _use(setup, grant) == "agent_not_active"


def test_delegation_back_to_an_agent_in_the_chain_is_refused(setup: Setup) -> None:
    parent = _issue(setup)
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60)
    for holder_of, to in ((parent, CODER), (child, CODER), (child, SUPPORT)):
        with pytest.raises(GrantError) as caught:
            _exchange(setup, holder_of, to, GIT, ttl_seconds=30)
        assert caught.value.code == "delegation_cycle"


def test_delegation_cannot_multiply_the_uses_of_a_limited_grant(setup: Setup) -> None:
    parent = _issue(setup, max_uses=3)
    assert _use(setup, parent) == "ok"
    for max_uses in (None, 3):
        with pytest.raises(GrantError) as caught:
            _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60, max_uses=max_uses)
        assert caught.value.code == "delegation_widens_uses"
    child = _exchange(setup, parent, SUPPORT, GIT, ttl_seconds=60, max_uses=2)
    # the child took the parent's last two uses
    assert _use(setup, parent) == "grant_uses_exhausted"
    assert [_use(setup, child) for _ in range(3)] == ["ok", "ok", "grant_uses_exhausted"]
    with pytest.raises(GrantError) as spent:
        _exchange(setup, parent, FINANCE, GIT, ttl_seconds=60, max_uses=1)
    assert spent.value.code == "delegation_widens_uses"


@pytest.mark.parametrize("max_uses", [0, -5])
def test_max_uses_below_one_is_refused(setup: Setup, max_uses: int) -> None:
    with pytest.raises(GrantError) as caught:
        _issue(setup, max_uses=max_uses)
    assert caught.value.code == "grant_max_uses_invalid"


def test_a_cached_grant_stops_verifying_when_its_key_is_retired(setup: Setup) -> None:
    grant = _issue(setup)
    assert setup.authority.inspect(grant.token).claims.grant_id == grant.grant_id  # cached
    setup.keyring.rotate(max_ttl_seconds=0)  # an emergency rotation
    setup.clock.advance(seconds=1)
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "grant_unknown_key"


def test_inspect_refuses_a_suspended_agents_grant(setup: Setup) -> None:
    grant = _issue(setup)
    setup.agents.inactive.add(CODER)
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "agent_not_active"


def test_sweeping_forgets_nonces_past_their_window_and_revokes_expired_grants(
    setup: Setup,
) -> None:
    grant = _issue(setup, ttl_seconds=60)
    assert _use(setup, grant) == "ok"
    setup.clock.advance(seconds=121)  # the proof is stale, but another node's clock may lag
    assert setup.authority.sweep() == Swept(expired=1, nonces=0)
    setup.clock.advance(seconds=1)
    assert setup.authority.sweep() == Swept(expired=0, nonces=1)
    assert setup.authority.sweep() == Swept(expired=0, nonces=0)


def test_the_sweep_forgets_a_nonce_the_moment_it_is_past_and_not_before(setup: Setup) -> None:
    """The sweep finds the nonces past their window by their keys' times
    (``<iat>:<nonce>``, kept until ``iat`` + 121 s): one kept until exactly now stays,
    a millisecond later it goes; a later proof's stays; none of another time goes."""
    from datetime import UTC, datetime

    from proctor.grants.accounting import forget_nonces
    from proctor.store.tables import proof_nonces

    iat = 1_796_644_800
    kept = {f"{at:010d}:{name}": datetime.fromtimestamp(at + 121, UTC)
            for at, name in ((iat - 1, "older"), (iat, "due"), (iat + 1, "later"))}
    with setup.store.transaction() as conn:
        conn.execute(insert(proof_nonces), [{"nonce": k, "expires_at": v}
                                            for k, v in kept.items()])

    def left() -> list[str]:
        with setup.store.reading() as conn:
            return sorted(conn.execute(select(proof_nonces.c.nonce)).scalars())

    due = datetime.fromtimestamp(iat + 121, UTC)
    assert forget_nonces(setup.store, due) == 1  # the older one; "due" is kept until now
    assert left() == sorted(kept)[1:]
    assert forget_nonces(setup.store, due + timedelta(milliseconds=1)) == 1
    assert left() == [f"{iat + 1:010d}:later"]


def test_a_node_sees_another_nodes_key_rotation(setup: Setup) -> None:
    from proctor.grants import IssuerKeyring

    first = setup.keyring.current()
    other_node = IssuerKeyring(setup.store, setup.clock, setup.master_key)
    rotated = other_node.rotate(max_ttl_seconds=600)
    assert setup.keyring.current().kid == first.kid  # read recently: still cached
    setup.clock.advance(seconds=31)
    assert setup.keyring.current().kid == rotated.kid


def test_inspecting_a_used_up_grant_says_it_is_exhausted(setup: Setup) -> None:
    grant = _issue(setup, max_uses=2)
    assert setup.authority.inspect(grant.token).uses_left == 2
    assert _use(setup, grant) == "ok"
    assert setup.authority.inspect(grant.token).uses_left == 1
    assert _use(setup, grant) == "ok"
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "grant_uses_exhausted"


def test_inspecting_an_expired_grant_says_it_has_expired(setup: Setup) -> None:
    grant = _issue(setup, ttl_seconds=60)
    setup.clock.advance(seconds=3600)
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "grant_expired"


def test_a_proof_dated_ahead_of_the_clock_cannot_be_replayed_after_a_sweep(
    setup: Setup,
) -> None:
    # The proof window is 60 s either way: a proof whose iat is 60 s ahead is
    # accepted until about 121 s after it was first used. Its nonce must be kept
    # at least that long, whatever the sweeper does meanwhile.
    grant = _issue(setup)
    key = setup.agents.keys[CODER]
    start = setup.clock.now()
    proof = make_proof(key, grant.token, method="tools/call", target=TARGET,
                       now=start + timedelta(seconds=60))

    def use() -> str:
        try:
            setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                                  tool_id="git/git_log", args={"repo_path": "/srv/repos/app"})
        except GrantError as exc:
            return exc.code
        return "ok"

    assert use() == "ok"
    for step in (30.5, 60, 30):  # 120.5 s in all: still inside the proof's window
        setup.clock.advance(seconds=step)
        setup.authority.sweep()
        assert use() == "proof_replayed", f"replayed after {step} s more"


def test_a_nonce_is_kept_under_the_key_that_signed_it_and_a_long_one_fits(
        setup: Setup) -> None:
    """The same time and nonce signed by two keys are two uses, each single; a nonce of
    the longest length a proof may carry (128 characters) fits the column on either
    database, and stays single use."""
    from proctor.grants.accounting import claim_nonce, nonce_key
    from proctor.grants.proofs import VerifiedProof

    iat = int(setup.clock.now().timestamp())
    mine, theirs = VerifiedProof("n" * 8, iat, "a" * 43), VerifiedProof("n" * 8, iat, "b" * 43)
    longest = VerifiedProof("x" * 128, iat, "a" * 43)
    assert nonce_key(mine) != nonce_key(theirs)
    assert nonce_key(mine).startswith(f"{iat:010d}:")  # the sweep's key range
    assert len(nonce_key(longest)) <= 140
    for proof in (mine, theirs, longest):
        with setup.store.transaction() as conn:
            claim_nonce(conn, proof, setup.clock.now())
        with pytest.raises(GrantError) as refused, setup.store.transaction() as conn:
            claim_nonce(conn, proof, setup.clock.now())
        assert refused.value.code == "proof_replayed"

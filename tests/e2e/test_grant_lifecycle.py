"""The grant lifecycle end to end, on SQLite and PostgreSQL: two registered agents (one by
its own key, one by a JWT-SVID), a task, a grant, a delegation, calls in and out of scope,
revocation of the parent, the end of the task."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.clock import FrozenClock
from proctor.errors import GrantError, IdentityError
from proctor.grants import (
    GrantAuthority,
    GrantOffer,
    GrantScope,
    HolderProof,
    IssuedGrant,
    jwk_thumbprint,
    make_proof,
)
from proctor.grants.authority import EXCHANGE_METHOD, ISSUE_METHOD
from proctor.grants.offers import OFFER_TTL_SECONDS
from proctor.grants.proofs import PrivateKey
from proctor.grants.proofs import public_jwk as proof_public_jwk
from proctor.identity import (
    AgentRegistry,
    Authenticator,
    JwtSvidProof,
    OwnKeyProof,
)
from proctor.policy import DecisionRequest, EntityRef, PolicyEngine
from proctor.policy.context import call_context
from proctor.store import Store, open_store
from tests.e2e.grant_world import ISSUER, example_engine, grant_authority
from tests.identity.factories import (
    AUDIENCE,
    REQUEST,
    SvidAuthority,
    manifest,
    own_key_proof,
    public_jwk,
)

PLANNER = "spiffe://acme.example/agent/planner"
WORKER = "spiffe://acme.example/agent/worker"


def _call(authority: GrantAuthority, engine: PolicyEngine, grant: IssuedGrant,
          key: PrivateKey, clock: FrozenClock, repo_path: str) -> str:
    """What an enforcement point does for one tool call: check the grant, then decide."""
    target = "mcp://git/git_log"
    proof = make_proof(key, grant.token, method="tools/call", target=target, now=clock.now())
    args = {"repo_path": repo_path}
    try:
        checked = authority.check(grant.token, proof, method="tools/call", target=target,
                                  tool_id="git/git_log", args=args)
    except GrantError as exc:
        return exc.code
    claims = checked.claims
    decision = engine.decide(DecisionRequest(
        EntityRef("Agent", claims.agent_id), "tool:git/git_log", EntityRef("Tool", "git/git_log"),
        call_context(now=clock.now(), args=args, task=claims.task_id,
                     delegation_chain=claims.actor_chain[::-1])))
    return decision.outcome.value


@dataclass
class World:
    authority: GrantAuthority
    engine: PolicyEngine
    registry: AgentRegistry
    clock: FrozenClock
    planner_key: ec.EllipticCurvePrivateKey
    planner_jwk: ECKey
    store: Store


@pytest.fixture
def world(database_url: str, registry: AgentRegistry, authenticator: Authenticator,
          svid_authority: SvidAuthority, wall_clock: FrozenClock) -> Iterator[World]:
    """A planner registered with its own key, a worker that proves itself with JWT-SVIDs."""
    clock = wall_clock
    planner_key = ECKey.generate_key("P-256", private=True)
    registry.register(PLANNER, owner="alice@acme.example", groups=["coding-agents"],
                      proof=OwnKeyProof(public_jwk(planner_key)), manifest=manifest())
    registry.register(WORKER, owner="alice@acme.example", groups=["coding-agents"],
                      proof=JwtSvidProof(), manifest=manifest())
    # Both prove who they are: the planner with its key, the worker with a JWT-SVID.
    assert authenticator.authenticate(
        own_key_proof(planner_key, PLANNER, clock.now()), request=REQUEST).agent.id == PLANNER
    assert authenticator.authenticate(
        svid_authority.svid(WORKER, clock.now())).agent.id == WORKER
    engine = example_engine(registry)
    store = open_store(database_url)
    authority = grant_authority(store, clock, registry, engine)[0]
    private = planner_key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    yield World(authority, engine, registry, clock, private, planner_key, store)
    authority.leases.settle(timeout=30)  # its revocations' descendants: marked
    store.close()


GIT = GrantScope.from_json({"tools": [
    {"tool": "git/*", "args": {"repo_path": {"prefix": ["/srv/repos/"]}}}]})
APP_LOG = GrantScope.from_json({"tools": [
    {"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/repos/app/"]}}}]})


def _delegate(w: World, parent: IssuedGrant, to: str, scope: GrantScope = APP_LOG,
              ) -> IssuedGrant | GrantOffer:
    return w.authority.exchange(
        parent.token, make_proof(w.planner_key, parent.token, method=EXCHANGE_METHOD,
                                 target=ISSUER, now=w.clock.now()),
        to_agent=to, ttl_seconds=120, scope=scope)


def _holder(key: PrivateKey, identity: str, now: datetime) -> HolderProof:
    """What the worker sends: a proof of its key, tied (ath) to its own identity proof."""
    return HolderProof(make_proof(key, identity, method=ISSUE_METHOD, target=ISSUER, now=now),
                       identity)


def test_two_agents_a_task_a_delegated_grant_and_cascading_revocation(
    world: World, svid_authority: SvidAuthority,
) -> None:
    w, clock = world, world.clock
    task = w.authority.start_task(PLANNER, purpose="fix the build",
                                  on_behalf_of="alice@acme.example")
    parent = w.authority.issue(task.id, GIT)
    sibling = w.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "time/*"}]}))

    # The worker has no registered key: the delegation is an offer it redeems with its
    # own JWT-SVID and the key it chooses.
    offer = _delegate(w, parent, WORKER)
    assert isinstance(offer, GrantOffer) and offer.agent_id == WORKER
    worker_key = ec.generate_private_key(ec.SECP256R1())
    child = w.authority.redeem(offer.id, _holder(
        worker_key, svid_authority.svid(WORKER, clock.now()), clock.now()))
    assert child.claims.actor_chain == (PLANNER,)
    assert child.claims.key_thumbprint == jwk_thumbprint(proof_public_jwk(worker_key))

    assert _call(w.authority, w.engine, child, worker_key, clock, "/srv/repos/app/") == "allow"
    assert _call(w.authority, w.engine, child, worker_key, clock,
                 "/srv/repos/other/") == "grant_out_of_scope"
    assert _call(w.authority, w.engine, parent, w.planner_key, clock, "/srv/repos/x/") == "allow"
    # the planner's key cannot use the worker's grant
    assert _call(w.authority, w.engine, child, w.planner_key, clock,
                 "/srv/repos/app/") == "proof_wrong_key"

    w.authority.revoke(parent.accessor, "planner finished its part")
    assert _call(w.authority, w.engine, child, worker_key, clock,
                 "/srv/repos/app/") == "grant_revoked"
    assert _call(w.authority, w.engine, parent, w.planner_key, clock,
                 "/srv/repos/app/") == "grant_revoked"
    assert w.authority.inspect(sibling.token).claims.grant_id == sibling.grant_id

    w.authority.end_task(task.id)
    with pytest.raises(GrantError) as ended:
        w.authority.inspect(sibling.token)
    assert ended.value.code == "grant_revoked"
    assert all(node.is_revoked for node in w.authority.tree(task.id))


def test_a_delegator_cannot_bind_a_keyless_agents_grant_to_its_own_key(
    world: World, svid_authority: SvidAuthority,
) -> None:
    """Finding 1 of the security review: a grant naming the worker, usable with the
    planner's key, would let the planner act as the worker."""
    w, clock = world, world.clock
    task = w.authority.start_task(PLANNER, purpose="fix the build",
                                  on_behalf_of="alice@acme.example")
    parent = w.authority.issue(task.id, GIT)
    offer = _delegate(w, parent, WORKER)
    assert isinstance(offer, GrantOffer)  # no token: nothing for the planner to use

    def redeem(holder: HolderProof) -> str:
        try:
            w.authority.redeem(offer.id, holder)
        except (GrantError, IdentityError) as exc:
            return exc.code
        return "redeemed"

    planner_identity = own_key_proof(w.planner_jwk, PLANNER, clock.now())
    worker_svid = svid_authority.svid(WORKER, clock.now())
    attempts = {
        # the planner's key, with no identity at all
        "no identity": HolderProof(make_proof(w.planner_key, None, method=ISSUE_METHOD,
                                              target=ISSUER, now=clock.now())),
        # the planner's key, with the planner's own identity proof
        "own identity": _holder(w.planner_key, planner_identity, clock.now()),
        # the planner's key, with a worker SVID it somehow saw, but not signed over it
        "untied key": HolderProof(make_proof(w.planner_key, planner_identity,
                                             method=ISSUE_METHOD, target=ISSUER,
                                             now=clock.now()), worker_svid),
        # an SVID naming the worker that the trust bundle did not sign
        "forged svid": _holder(w.planner_key, SvidAuthority().svid(WORKER, clock.now()),
                               clock.now()),
        # a real worker SVID for proctor and another service too, which the other
        # service (or whoever it hands it to) ties to its own key (found by review)
        "shared svid": _holder(w.planner_key, svid_authority.svid(
            WORKER, clock.now(), audience=[AUDIENCE, "https://build.acme.example"]),
            clock.now()),
    }
    assert {name: redeem(h) for name, h in attempts.items()} == {
        # an own-key identity proof is taken only by the API request it names: it binds
        # no key (the planner's was `holder_identity_mismatch` before)
        "no identity": "holder_identity_missing", "own identity": "holder_identity_invalid",
        "untied key": "proof_wrong_target", "forged svid": "holder_identity_invalid",
        "shared svid": "holder_identity_invalid"}
    # a direct issue for the worker's task with the planner's key is refused the same way
    worker_task = w.authority.start_task(WORKER, purpose="x", on_behalf_of="alice@acme.example")
    for holder in (attempts["no identity"], attempts["own identity"]):
        with pytest.raises(GrantError) as refused:
            w.authority.issue(worker_task.id, APP_LOG, holder=holder)
        assert refused.value.code in {"holder_identity_missing", "holder_identity_invalid"}
    with pytest.raises(GrantError) as no_proof:
        w.authority.issue(worker_task.id, APP_LOG)
    assert no_proof.value.code == "holder_identity_missing"
    # none of it left a grant for the worker; the real worker still can redeem, once
    assert [n.kind for n in w.authority.tree(task.id)] == ["task", "grant"]
    worker_key = ec.generate_private_key(ec.SECP256R1())
    assert redeem(_holder(worker_key, worker_svid, clock.now())) == "redeemed"
    assert redeem(_holder(worker_key, worker_svid, clock.now())) == "offer_redeemed"


def test_an_offer_dies_with_its_parent_and_with_time(
    world: World, svid_authority: SvidAuthority,
) -> None:
    w, clock = world, world.clock
    task = w.authority.start_task(PLANNER, purpose="fix the build",
                                  on_behalf_of="alice@acme.example")
    worker_key = ec.generate_private_key(ec.SECP256R1())
    parent = w.authority.issue(task.id, GIT, ttl_seconds=900)
    revoked_parent = _delegate(w, parent, WORKER)
    late = _delegate(w, parent, WORKER)
    assert isinstance(revoked_parent, GrantOffer) and isinstance(late, GrantOffer)
    clock.advance(seconds=OFFER_TTL_SECONDS)
    with pytest.raises(GrantError) as expired:
        w.authority.redeem(late.id, _holder(worker_key, svid_authority.svid(
            WORKER, clock.now()), clock.now()))
    assert expired.value.code == "offer_expired"
    fresh = _delegate(w, parent, WORKER)
    assert isinstance(fresh, GrantOffer)
    w.authority.revoke(parent.accessor, "done")
    with pytest.raises(GrantError) as gone:
        w.authority.redeem(fresh.id, _holder(worker_key, svid_authority.svid(
            WORKER, clock.now()), clock.now()))
    assert gone.value.code == "grant_revoked"


def test_suspending_an_agent_revokes_its_grants_and_a_review_brings_none_back(
    world: World, svid_authority: SvidAuthority,
) -> None:
    """Finding 7: suspension revokes every grant the agent holds and everything derived
    from them, in the same transaction; reinstating the agent restores none of it."""
    w, clock = world, world.clock
    task = w.authority.start_task(PLANNER, purpose="fix the build",
                                  on_behalf_of="alice@acme.example")
    parent = w.authority.issue(task.id, GIT)
    offer = _delegate(w, parent, WORKER)
    assert isinstance(offer, GrantOffer)
    worker_key = ec.generate_private_key(ec.SECP256R1())
    child = w.authority.redeem(offer.id, _holder(
        worker_key, svid_authority.svid(WORKER, clock.now()), clock.now()))
    pending = _delegate(w, parent, WORKER)
    assert isinstance(pending, GrantOffer)
    heard: list[str] = []
    w.authority.leases.subscribe(lambda ids, reason: heard.extend(ids))

    w.registry.suspend(PLANNER, by="erin@acme.example", reason="odd behaviour")
    assert w.authority.leases.settle(timeout=30)  # the child is heard once marked
    assert set(heard) == {parent.grant_id, child.grant_id}
    w.registry.review(PLANNER, reviewer="erin@acme.example",
                      expected_digest=w.registry.get(PLANNER).review_digest)
    assert _call(w.authority, w.engine, parent, w.planner_key, clock,
                 "/srv/repos/app/") == "grant_revoked"
    # the grant it handed on died with it, reinstated or not
    assert _call(w.authority, w.engine, child, worker_key, clock,
                 "/srv/repos/app/") == "grant_revoked"
    with pytest.raises(GrantError) as stale:
        w.authority.redeem(pending.id, _holder(worker_key, svid_authority.svid(
            WORKER, clock.now()), clock.now()))
    assert stale.value.code == "grant_revoked"

    # suspending the receiver: its own grant dies, and an offer to it is cancelled
    again = w.authority.issue(task.id, GIT)
    to_worker = _delegate(w, again, WORKER)
    assert isinstance(to_worker, GrantOffer)
    w.registry.retire(WORKER, by="erin@acme.example")
    with pytest.raises(GrantError) as cancelled:
        w.authority.redeem(to_worker.id, _holder(worker_key, svid_authority.svid(
            WORKER, clock.now()), clock.now()))
    assert cancelled.value.code in {"agent_not_active", "offer_cancelled"}
    assert w.authority.offer_of(to_worker.id).cancelled_at is not None

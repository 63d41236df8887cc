"""The grant lifecycle end to end, on SQLite and PostgreSQL: two registered agents (one by
its own key, one by a JWT-SVID), a task, a grant, a delegation, calls in and out of scope,
revocation of the parent, the end of the task."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.clock import FrozenClock
from proctor.errors import GrantError
from proctor.grants import (
    GrantAuthority,
    GrantScope,
    IssuedGrant,
    IssuerKeyring,
    RegisteredAgents,
    TokenCodec,
    make_proof,
)
from proctor.grants.authority import EXCHANGE_METHOD, ISSUE_METHOD
from proctor.grants.proofs import PrivateKey
from proctor.identity import (
    AgentRegistry,
    Authenticator,
    JwtSvidProof,
    OwnKeyProof,
    agent_principals,
)
from proctor.policy import DecisionRequest, EntityRef, PolicyEngine, load_bundle
from proctor.policy.context import call_context
from proctor.store import open_store
from tests.identity.factories import SvidAuthority, manifest, own_key_proof, public_jwk

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
ISSUER = "https://proctor.acme.example"
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


def test_two_agents_a_task_a_delegated_grant_and_cascading_revocation(
    database_url: str, registry: AgentRegistry, authenticator: Authenticator,
    svid_authority: SvidAuthority, wall_clock: FrozenClock,
) -> None:
    clock = wall_clock
    planner_key = ECKey.generate_key("P-256", private=True)
    registry.register(PLANNER, owner="alice@acme.example", groups=["coding-agents"],
                      proof=OwnKeyProof(public_jwk(planner_key)), manifest=manifest())
    registry.register(WORKER, owner="alice@acme.example", groups=["coding-agents"],
                      proof=JwtSvidProof(), manifest=manifest())
    # Both prove who they are: the planner with its key, the worker with a JWT-SVID.
    assert authenticator.authenticate(
        own_key_proof(planner_key, PLANNER, clock.now())).agent.id == PLANNER
    assert authenticator.authenticate(
        svid_authority.svid(WORKER, clock.now())).agent.id == WORKER

    bundle = load_bundle(EXAMPLES)
    engine = PolicyEngine(bundle.catalog,
                          agent_principals(registry.list_agents(), bundle.principals))
    engine.activate(engine.compile(bundle.sources))
    store = open_store(database_url)
    codec = TokenCodec(IssuerKeyring(store, clock, secrets.token_bytes(32)), issuer=ISSUER,
                       audience="proctor")
    authority = GrantAuthority(store, clock, codec, engine, RegisteredAgents(registry, store))

    task = authority.start_task(PLANNER, purpose="fix the build",
                                on_behalf_of="alice@acme.example")
    planner_private = planner_key.private_key
    assert isinstance(planner_private, ec.EllipticCurvePrivateKey)
    parent = authority.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": "git/*", "args": {"repo_path": {"prefix": ["/srv/repos/"]}}}]}))
    sibling = authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "time/*"}]}))

    # The worker has no registered key: it proves the key its grant will be bound to.
    worker_key = ec.generate_private_key(ec.SECP256R1())
    child = authority.exchange(
        parent.token,
        make_proof(planner_private, parent.token, method=EXCHANGE_METHOD, target=ISSUER,
                   now=clock.now()),
        to_agent=WORKER, ttl_seconds=120,
        scope=GrantScope.from_json({"tools": [
            {"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/repos/app/"]}}}]}),
        holder_proof=make_proof(worker_key, None, method=ISSUE_METHOD, target=ISSUER,
                                now=clock.now()),
    )
    assert child.claims.actor_chain == (PLANNER,)

    assert _call(authority, engine, child, worker_key, clock, "/srv/repos/app/") == "allow"
    assert _call(authority, engine, child, worker_key, clock,
                 "/srv/repos/other/") == "grant_out_of_scope"
    assert _call(authority, engine, parent, planner_private, clock, "/srv/repos/x/") == "allow"
    # the planner's key cannot use the worker's grant
    assert _call(authority, engine, child, planner_private, clock,
                 "/srv/repos/app/") == "proof_wrong_key"

    # suspending the worker stops its grant at once; a human's review reinstates it
    registry.suspend(WORKER, by="erin@acme.example", reason="odd behaviour")
    assert _call(authority, engine, child, worker_key, clock,
                 "/srv/repos/app/") == "agent_not_active"
    registry.review(WORKER, reviewer="erin@acme.example")
    assert _call(authority, engine, child, worker_key, clock, "/srv/repos/app/") == "allow"

    authority.revoke(parent.accessor, "planner finished its part")
    assert _call(authority, engine, child, worker_key, clock, "/srv/repos/app/") == "grant_revoked"
    assert _call(authority, engine, parent, planner_private, clock,
                 "/srv/repos/app/") == "grant_revoked"
    assert authority.inspect(sibling.token).grant_id == sibling.grant_id

    authority.end_task(task.id)
    with pytest.raises(GrantError) as ended:
        authority.inspect(sibling.token)
    assert ended.value.code == "grant_revoked"
    assert all(node.is_revoked for node in authority.tree(task.id))
    store.close()

"""Attested manifests: the platform's workload token says which image runs. When the
image digest in a second JWT-SVID of the same agent differs, the agent is drifted at
once — it reported nothing — its confidential tool is re-gated under the grant it
already holds and no new grant for it is issued; a token without a required attested
field leaves the agent ``unattested``; a grant issued before a reviewed manifest change
is refused. Each attested change is audited: which fields, the manifest digests before
and after, whose token — never a claim's value."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.audit import AuditLog, iter_events
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError, GrantError
from proctor.grants import (
    GrantAuthority,
    GrantScope,
    HolderProof,
    IssuedGrant,
    make_proof,
)
from proctor.grants.authority import ISSUE_METHOD
from proctor.identity import (
    AgentRegistry,
    Authenticator,
    JwtSvidProof,
    TrustConfig,
    sync_principals,
)
from proctor.identity.agent import TrustState
from proctor.policy import DecisionRequest, EntityRef, PolicyEngine
from proctor.policy.context import call_context
from proctor.store import Store, open_store
from tests.e2e.grant_world import ISSUER, example_engine, grant_authority
from tests.identity.factories import AUDIENCE, TRUST_DOMAIN, SvidAuthority, manifest
from tests.server.test_human_changes_audited import _CrashError, _dies_after_its_first_commit
from tests.server.test_unaudited_changes import audit_down

WORKER = "spiffe://acme.example/agent/worker"
IMAGE_A, IMAGE_B = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32
CRM = GrantScope.from_json({"tools": [{"tool": "crm/lookup_customer"}]})
TARGET = "mcp://crm/lookup_customer"


@dataclass
class World:
    authority: GrantAuthority
    engine: PolicyEngine
    registry: AgentRegistry
    authenticator: Authenticator
    svids: SvidAuthority
    clock: FrozenClock
    key: ec.EllipticCurvePrivateKey
    store: Store

    def attestations(self) -> list[Mapping[str, Any]]:
        """The audited attested changes, oldest first."""
        return [e.event for e in iter_events(self.store)
                if e.event["actor"]["id"] == "proctor-attestation"]

    def svid(self, image_digest: str | None = None) -> str:
        """A JWT-SVID the platform issues, attesting the image it runs (if given)."""
        return self.svids.svid(WORKER, self.clock.now(), image_digest=image_digest)

    def grant(self, identity: str) -> IssuedGrant:
        task = self.authority.start_task(WORKER, purpose="answer a customer",
                                         on_behalf_of="alice@acme.example")
        holder = HolderProof(make_proof(self.key, identity, method=ISSUE_METHOD, target=ISSUER,
                                        now=self.clock.now()), identity)
        issued = self.authority.issue(task.id, CRM, holder=holder)
        assert isinstance(issued, IssuedGrant)
        return issued

    def lookup(self, grant: IssuedGrant) -> str:
        """What an enforcement point does: check the grant, then decide with the
        registry's view of the agent."""
        proof = make_proof(self.key, grant.token, method="tools/call", target=TARGET,
                           now=self.clock.now())
        try:
            claims = self.authority.check(grant.token, proof, method="tools/call",
                                          target=TARGET, tool_id="crm/lookup_customer",
                                          args={"customer_id": "c-1"}).claims
        except GrantError as exc:
            return exc.code
        sync_principals(self.engine, self.registry)
        return self.engine.decide(DecisionRequest(
            EntityRef("Agent", WORKER), "tool:crm/lookup_customer",
            EntityRef("Tool", "crm/lookup_customer"),
            call_context(now=self.clock.now(), args={"customer_id": "c-1"},
                         task=claims.task_id, on_behalf_of="alice@acme.example"))).code.value


@pytest.fixture
def world(database_url: str, svid_authority: SvidAuthority,
          wall_clock: FrozenClock) -> Iterator[World]:
    trust = TrustConfig.build(TRUST_DOMAIN, audience=AUDIENCE, bundles=[svid_authority.bundle()],
                              attested={"image_digest": "image_digest"},
                              attested_required=["image_digest"])
    store = open_store(database_url)
    registry = AgentRegistry(store, wall_clock, trust)
    registry.register(WORKER, owner="alice@acme.example", groups=["support-agents"],
                      proof=JwtSvidProof(),
                      manifest=manifest().attested({"image_digest": IMAGE_A}))
    engine = example_engine(registry, bundle_principals=False)
    audit = AuditLog(store, clock=wall_clock)
    authority, agents = grant_authority(store, wall_clock, registry, engine, audit=audit)
    key = ECKey.generate_key("P-256", private=True).private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    try:
        yield World(authority, engine, registry,
                    Authenticator(registry, clock=wall_clock,
                                  attest=agents.attest),
                    svid_authority, wall_clock, key, store)
    finally:
        authority.leases.settle(timeout=30)  # its revocations' descendants: marked
        audit.close()
        store.close()


def test_another_attested_image_re_gates_confidential_tools_without_the_agent_reporting(
        world: World) -> None:
    first = world.svid(image_digest=IMAGE_A)
    assert world.authenticator.authenticate(first).attestation is None
    grant = world.grant(first)
    assert grant.claims.manifest_digest == world.registry.get(WORKER).manifest_digest
    assert world.lookup(grant) == "policy_permit"

    # the platform now runs another image; the agent says nothing about it
    second = world.authenticator.authenticate(world.svid(image_digest=IMAGE_B))
    assert second.agent.trust_state is TrustState.DRIFTED
    assert "image_digest" in (second.attestation or "")
    presented = world.registry.get(WORKER).presented_manifest
    assert presented is not None and presented.image_digest == IMAGE_B

    assert world.lookup(grant) == "policy_forbid"  # the grant issued under image A
    with pytest.raises(GrantError) as refused:
        world.grant(world.svid(image_digest=IMAGE_B))
    assert refused.value.code == "issuance_denied"


def test_a_token_without_a_required_attested_field_leaves_the_agent_unattested(
        world: World) -> None:
    grant = world.grant(world.svid(image_digest=IMAGE_A))
    found = world.authenticator.authenticate(world.svid())  # no image_digest claim
    assert found.agent.trust_state is TrustState.UNATTESTED
    assert found.agent.state_reason is not None
    assert "image_digest" in found.agent.state_reason
    assert world.lookup(grant) == "policy_forbid"
    # attested again, as reviewed: trusted again
    again = world.authenticator.authenticate(world.svid(image_digest=IMAGE_A))
    assert again.agent.trust_state is TrustState.TRUSTED
    assert world.lookup(grant) == "policy_permit"


def test_a_grant_issued_before_a_reviewed_manifest_change_is_refused(world: World) -> None:
    grant = world.grant(world.svid(image_digest=IMAGE_A))
    world.authenticator.authenticate(world.svid(image_digest=IMAGE_B))
    world.registry.review(WORKER, reviewer="erin@acme.example",  # image B, reviewed
                          expected_digest=world.registry.get(WORKER).review_digest)
    assert world.registry.get(WORKER).trust_state is TrustState.TRUSTED
    assert world.lookup(grant) == "grant_manifest_changed"
    fresh = world.grant(world.svid(image_digest=IMAGE_B))
    assert world.lookup(fresh) == "policy_permit"


def test_an_agent_cannot_lift_unattested_by_presenting_the_reviewed_manifest_itself(
        world: World) -> None:
    reviewed = world.registry.get(WORKER).manifest
    found = world.authenticator.authenticate(world.svid())  # no image_digest claim
    assert found.agent.trust_state is TrustState.UNATTESTED
    # the agent's own word (`POST /v1/agents/{id}/manifest`, the wrapper's manifest file),
    # image digest included, is not the platform's
    after = world.registry.present_manifest(WORKER, reviewed)
    assert after.trust_state is TrustState.UNATTESTED
    assert world.registry.get(WORKER).trust_state is TrustState.UNATTESTED
    assert world.authenticator.authenticate(world.svid()).agent.trust_state \
        is TrustState.UNATTESTED


def test_an_agent_cannot_overwrite_what_the_platform_attested_with_its_own_values(
        world: World) -> None:
    reviewed = world.registry.get(WORKER).manifest
    assert world.authenticator.authenticate(
        world.svid(image_digest=IMAGE_B)).agent.trust_state is TrustState.DRIFTED
    # the agent says it runs image A after all: the reviewer must still see image B
    world.registry.present_manifest(WORKER, reviewed)
    agent = world.registry.get(WORKER)
    assert agent.trust_state is TrustState.DRIFTED
    assert agent.presented_manifest is not None
    assert agent.presented_manifest.image_digest == IMAGE_B
    # a manifest the agent presents without the attested field keeps the platform's value
    world.registry.present_manifest(WORKER, replace(reviewed, image_digest=None))
    presented = world.registry.get(WORKER).presented_manifest
    assert presented is not None and presented.image_digest == IMAGE_B


def test_an_attested_drift_is_audited_with_the_fields_and_digests_and_no_claim_value(
        world: World) -> None:
    reviewed = world.registry.get(WORKER).manifest_digest
    world.grant(world.svid(image_digest=IMAGE_A))
    assert world.attestations() == []  # attested as reviewed: nothing changed
    with contextlib.suppress(GrantError):  # found as the grant's identity proof is checked
        world.grant(world.svid(image_digest=IMAGE_B))
    world.authenticator.authenticate(world.svid(image_digest=IMAGE_B))  # no change again
    [event] = world.attestations()
    presented = world.registry.get(WORKER).presented_digest
    assert (event["action"], event["target"], event["outcome"]) == (
        "agent.drift", f'Agent::"{WORKER}"', "drifted")
    assert event["actor"]["type"] == "system"
    detail = event["detail"]
    assert detail["fields"] == ["image_digest"]
    assert (detail["from_digest"], detail["to_digest"]) == (reviewed, presented)
    assert detail["attested_by"] == "jwt_svid" and detail["agent"] == WORKER
    assert IMAGE_B not in str(event) and IMAGE_A not in str(event)


def test_a_token_attesting_too_little_is_audited_with_the_missing_field(world: World) -> None:
    world.authenticator.authenticate(world.svid())  # no image_digest claim
    [event] = world.attestations()
    assert (event["action"], event["outcome"]) == ("agent.unattested", "unattested")
    assert event["detail"]["fields"] == ["image_digest"]
    assert "to_digest" not in event["detail"]
    assert "image_digest" in event["detail"]["reason"]



@pytest.mark.parametrize(("token", "state", "action", "fields"), [
    (lambda w: w.svid(image_digest=IMAGE_B), "drifted", "agent.drift", ["image_digest"]),
    (lambda w: w.svid(), "unattested", "agent.unattested", ["image_digest"]),
], ids=["drift", "unattested"])
def test_a_process_that_dies_right_after_an_attested_change_took_effect_leaves_its_event(
        world: World, monkeypatch: pytest.MonkeyPatch, token: Callable[[World], str],
        state: str, action: str, fields: list[str]) -> None:
    # the registry made the change in its own transaction, then agent.drift or
    # agent.unattested was written after that commit: a process that died between the
    # two left the agent drifted (or unattested) and nothing in the log saying so
    assert world.authenticator.authenticate(world.svid(image_digest=IMAGE_A)).attestation \
        is None
    reviewed = world.registry.get(WORKER).manifest_digest
    _dies_after_its_first_commit(monkeypatch)
    with pytest.raises(_CrashError):
        world.authenticator.authenticate(token(world))
    monkeypatch.undo()

    assert world.registry.get(WORKER).trust_state.value == state
    [event] = world.attestations()
    assert (event["action"], event["outcome"], event["detail"]["fields"],
            event["detail"]["from_digest"]) == (action, state, fields, reviewed)


def test_an_attested_drift_is_made_when_the_log_is_down_a_return_to_trusted_is_not(
        world: World) -> None:
    world.authenticator.authenticate(world.svid())  # unattested, audited
    with audit_down(world.store), pytest.raises(AuditUnavailableError):
        world.authenticator.authenticate(world.svid(image_digest=IMAGE_A))
    assert world.registry.get(WORKER).trust_state is TrustState.UNATTESTED  # gives trust
    with audit_down(world.store), pytest.raises(AuditUnavailableError):
        world.authenticator.authenticate(world.svid(image_digest=IMAGE_B))
    assert world.registry.get(WORKER).trust_state is TrustState.DRIFTED  # takes it away
    assert [e["action"] for e in world.attestations()] == ["agent.unattested"]


def test_a_token_that_changes_nothing_writes_nothing(world: World) -> None:
    world.authenticator.authenticate(world.svid(image_digest=IMAGE_B))  # drifted
    world.authenticator.authenticate(world.svid())  # a drifted agent stays drifted
    with audit_down(world.store):  # no write is tried: the log being down is not seen
        for image in (IMAGE_B, None):
            found = world.authenticator.authenticate(world.svid(image_digest=image))
            assert (found.agent.trust_state, found.attestation) == (TrustState.DRIFTED, None)
    assert [e["action"] for e in world.attestations()] == ["agent.drift"]

"""Registering agents and changing their trust state, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey

from proctor.clock import FrozenClock
from proctor.errors import ProctorError
from proctor.identity import (
    AgentRegistry,
    JwtSvidProof,
    OidcProof,
    OwnKeyProof,
    ProofMethod,
    TrustState,
)

from .conftest import snapshot
from .factories import BUILDER, CODER, ISSUER, b64, digest, manifest, public_jwk, unb64


def _own_key(registry: AgentRegistry, key: ECKey | OKPKey, agent_id: str = CODER) -> None:
    registry.register(agent_id, owner="alice@acme.example", groups=["coders", "coders"],
                      proof=OwnKeyProof(public_jwk(key)), manifest=manifest())


def test_an_agent_registered_by_its_key_is_trusted_with_its_manifest_reviewed(
    registry: AgentRegistry, p256_key: ECKey, wall_clock: FrozenClock,
) -> None:
    _own_key(registry, p256_key)
    agent = registry.get(CODER)
    assert agent.trust_state is TrustState.TRUSTED
    assert agent.proof_method is ProofMethod.OWN_KEY
    assert agent.key_thumbprint == p256_key.thumbprint()
    assert agent.groups == ("coders",)
    assert agent.manifest == manifest()
    assert agent.reviewed_by == "alice@acme.example"
    assert agent.created_at == wall_clock.now()
    assert agent.presented_manifest is None


def test_agents_by_jwt_svid_and_by_oidc_subject_or_template(registry: AgentRegistry) -> None:
    registry.register(BUILDER, owner="bob", proof=JwtSvidProof(), manifest=manifest())
    registry.register("spiffe://acme.example/agent/ci", owner="bob",
                      proof=OidcProof(subject="repo:acme/app:ref:refs/heads/main"),
                      manifest=manifest())
    registry.register("spiffe://acme.example/agent/k8s", owner="bob", proof=OidcProof(),
                      manifest=manifest())
    assert registry.get(BUILDER).proof_method is ProofMethod.JWT_SVID
    by_template = registry.find_by_subject(ISSUER, "system:serviceaccount:agents:k8s")
    assert by_template is not None and by_template.name == "k8s"
    explicit = registry.find_by_subject(ISSUER, "repo:acme/app:ref:refs/heads/main")
    assert explicit is not None and explicit.name == "ci"
    assert [a.name for a in registry.list_agents()] == ["builder", "ci", "k8s"]


def _bad_registrations(key: ECKey) -> list[tuple[str, dict[str, Any], str]]:
    good: dict[str, Any] = {"owner": "alice", "proof": OwnKeyProof(public_jwk(key)),
                            "manifest": manifest()}
    return [
        ("spiffe://acme.example/agents/x", good, "agent_id_invalid"),
        ("spiffe://acme.example/agent/coder", good, "agent_exists"),
        ("spiffe://acme.example/agent/twin", good, "agent_key_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "owner": CODER}, "request_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "owner": "system:oversight"},
         "request_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "registered_by": "System:Oversight"},
         "reviewer_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "owner": ""}, "request_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "registered_by": BUILDER},
         "reviewer_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "groups": ["a\nb"]}, "request_invalid"),
        ("spiffe://acme.example/agent/x",
         {**good, "proof": OwnKeyProof(dict(ECKey.generate_key("P-256").as_dict(private=True)))},
         "agent_key_invalid"),
        ("spiffe://other.example/agent/x", {**good, "proof": JwtSvidProof()}, "config_invalid"),
        ("spiffe://acme.example/agent/x", {**good, "proof": OidcProof(issuer="https://evil")},
         "config_invalid"),
        ("spiffe://acme.example/agent/x",
         {**good, "proof": OidcProof(subject="system:serviceaccount:agents:coder2")},
         "agent_exists"),
    ]


def test_bad_registrations_get_specific_codes_and_change_nothing(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    registry.register("spiffe://acme.example/agent/coder2", owner="alice", proof=OidcProof(),
                      manifest=manifest())
    before = snapshot(registry)
    for agent_id, arguments, code in _bad_registrations(p256_key):
        with pytest.raises(ProctorError) as caught:
            registry.register(agent_id, **arguments)
        assert caught.value.code == code, (agent_id, arguments)
    assert snapshot(registry) == before


def test_one_key_spelled_another_way_is_still_refused_for_a_second_agent(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    # a coordinate with a leading zero byte names the same point under another
    # thumbprint: it was registered, so the holder of coder's key could act as the twin
    _own_key(registry, p256_key)
    jwk = public_jwk(p256_key)
    padded = {**jwk, "x": b64(b"\x00" + unb64(jwk["x"]))}
    before = snapshot(registry)
    with pytest.raises(ProctorError) as caught:
        registry.register("spiffe://acme.example/agent/twin", owner="alice",
                          proof=OwnKeyProof(padded), manifest=manifest())
    assert caught.value.code == "agent_key_invalid"
    assert snapshot(registry) == before


def test_presenting_the_reviewed_manifest_changes_nothing(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    before = snapshot(registry)
    assert registry.present_manifest(CODER, manifest()).trust_state is TrustState.TRUSTED
    assert snapshot(registry) == before


def test_a_different_manifest_drifts_the_agent_and_keeps_the_reviewed_one(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    changed = manifest(model_id="claude-opus-4")
    agent = registry.present_manifest(CODER, changed)
    assert agent.trust_state is TrustState.DRIFTED
    assert agent.manifest == manifest()
    assert agent.presented_manifest == changed
    assert agent.as_json()["manifest_differences"] == {
        "model_id": {"reviewed": "claude-sonnet-4", "presented": "claude-opus-4"}}


def test_a_drifted_agent_stays_drifted_when_it_reverts_until_someone_reviews(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    registry.present_manifest(CODER, manifest(model_id="claude-opus-4"))
    agent = registry.present_manifest(CODER, manifest())
    assert agent.trust_state is TrustState.DRIFTED
    assert registry.review(CODER, reviewer="erin", expected_digest=registry.get(
        CODER).review_digest).trust_state is TrustState.TRUSTED


def test_review_adopts_the_presented_manifest(registry: AgentRegistry, p256_key: ECKey,
                                              wall_clock: FrozenClock) -> None:
    _own_key(registry, p256_key)
    changed = manifest(tools=("git/git_log",))
    registry.present_manifest(CODER, changed)
    wall_clock.advance(seconds=60)
    agent = registry.review(CODER, reviewer="erin@acme.example", expected_digest=changed.digest)
    assert (agent.trust_state, agent.manifest, agent.presented_manifest) == \
        (TrustState.TRUSTED, changed, None)
    assert (agent.reviewed_by, agent.reviewed_at) == ("erin@acme.example", wall_clock.now())


def test_review_refuses_when_the_manifest_changed_since_the_reviewer_looked(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    looked_at = manifest(model_id="v2")
    registry.present_manifest(CODER, looked_at)
    registry.present_manifest(CODER, manifest(model_id="v3-sneaky"))
    before = snapshot(registry)
    with pytest.raises(ProctorError) as caught:
        registry.review(CODER, reviewer="erin", expected_digest=looked_at.digest)
    assert caught.value.code == "manifest_changed"
    assert snapshot(registry) == before


def test_a_review_that_names_no_manifest_digest_is_refused_and_changes_nothing(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    registry.present_manifest(CODER, manifest(model_id="v2"))
    before = snapshot(registry)
    for unnamed in (None, ""):
        with pytest.raises(ProctorError) as caught:
            registry.review(CODER, reviewer="erin", expected_digest=unnamed)
        assert caught.value.code == "review_digest_missing"
    assert snapshot(registry) == before


def test_reviewing_another_manifest_than_the_running_one_leaves_the_agent_drifted(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    registry.present_manifest(CODER, manifest(model_id="running"))
    agent = registry.review(CODER, reviewer="erin", manifest=manifest(model_id="planned"))
    assert agent.trust_state is TrustState.DRIFTED
    assert agent.manifest.model_id == "planned"
    assert agent.presented_manifest is not None
    assert agent.presented_manifest.model_id == "running"


def test_an_agent_cannot_review_or_suspend(registry: AgentRegistry, p256_key: ECKey) -> None:
    _own_key(registry, p256_key)
    registry.present_manifest(CODER, manifest(model_id="v2"))
    before = snapshot(registry)
    attempts: list[Callable[[], object]] = [
        lambda: registry.review(CODER, reviewer=CODER),
        lambda: registry.suspend(CODER, by=BUILDER),
        lambda: registry.retire(CODER, by=""),
    ]
    for attempt in attempts:
        with pytest.raises(ProctorError) as caught:
            attempt()
        assert caught.value.code == "reviewer_invalid"
    assert snapshot(registry) == before


def test_suspended_agents_refuse_manifests_and_a_review_reinstates_them(
    registry: AgentRegistry, p256_key: ECKey,
) -> None:
    _own_key(registry, p256_key)
    agent = registry.suspend(CODER, by="erin", reason="leaked key")
    assert (agent.trust_state, agent.is_active, agent.state_reason) == \
        (TrustState.SUSPENDED, False, "leaked key")
    assert registry.suspend(CODER, by="erin").state_reason == "leaked key"  # idempotent
    before = snapshot(registry)
    with pytest.raises(ProctorError) as caught:
        registry.present_manifest(CODER, manifest(model_id="v2"))
    assert caught.value.code == "agent_not_active"
    assert snapshot(registry) == before
    assert registry.review(CODER, reviewer="erin", expected_digest=registry.get(
        CODER).review_digest).trust_state is TrustState.TRUSTED


def test_retirement_is_final(registry: AgentRegistry, p256_key: ECKey) -> None:
    _own_key(registry, p256_key)
    registry.present_manifest(CODER, manifest(model_id="v2"))
    assert registry.retire(CODER, by="alice").trust_state is TrustState.RETIRED
    before = snapshot(registry)
    digest = registry.get(CODER).review_digest
    attempts: list[tuple[Callable[[], object], str]] = [
        (lambda: registry.review(CODER, reviewer="erin", expected_digest=digest),
         "agent_state_invalid"),
        (lambda: registry.suspend(CODER, by="erin"), "agent_state_invalid"),
        (lambda: registry.present_manifest(CODER, manifest()), "agent_not_active"),
    ]
    for attempt, code in attempts:
        with pytest.raises(ProctorError) as caught:
            attempt()
        assert caught.value.code == code
    assert snapshot(registry) == before
    assert registry.get(CODER).manifest == manifest()


def test_changes_to_an_unknown_or_malformed_agent_are_refused(registry: AgentRegistry) -> None:
    for agent_id, code in ((CODER, "agent_unknown"), ("coder", "agent_id_invalid")):
        attempts: list[Callable[[str], object]] = [
            lambda a: registry.suspend(a, by="erin"),
            lambda a: registry.present_manifest(a, manifest()),
            registry.get,
        ]
        for attempt in attempts:
            with pytest.raises(ProctorError) as caught:
                attempt(agent_id)
            assert caught.value.code == code
    assert snapshot(registry) == []


def test_the_risk_score_is_recorded_within_bounds(registry: AgentRegistry,
                                                  p256_key: ECKey) -> None:
    _own_key(registry, p256_key)
    assert registry.set_risk_score(CODER, 85).risk_score == 85
    with pytest.raises(ProctorError):
        registry.set_risk_score(CODER, 101)
    assert registry.get(CODER).risk_score == 85


def test_list_filters_by_state(registry: AgentRegistry, p256_key: ECKey,
                               ed25519_key: OKPKey) -> None:
    _own_key(registry, p256_key)
    _own_key(registry, ed25519_key, BUILDER)
    registry.present_manifest(BUILDER, manifest(weights_digest=digest("9")))
    assert [a.id for a in registry.list_agents(state=TrustState.DRIFTED)] == [BUILDER]

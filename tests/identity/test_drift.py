"""Drift end to end: registered → other manifest presented → drifted in the decision →
reviewed → trusted, through the real policy engine and the registry's store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from joserfc.jwk import ECKey

from proctor.clock import FrozenClock
from proctor.identity import (
    AgentRegistry,
    OwnKeyProof,
    TrustConfig,
    agent_principals,
    sync_principals,
)
from proctor.policy import (
    DecisionRequest,
    EntityRef,
    Outcome,
    PolicyEngine,
    Sensitivity,
    ToolCatalog,
    ToolSpec,
    call_context,
)
from proctor.store import open_store

from .factories import CODER, manifest, public_jwk

CATALOG = ToolCatalog([
    ToolSpec("crm", "lookup_customer", sensitivity=Sensitivity.CONFIDENTIAL, input_schema={
        "type": "object", "properties": {"customer_id": {"type": "string"}},
        "required": ["customer_id"]}),
])
# The guardrails of src/proctor/examples/policies/baseline.cedar that concern
# trust state, and one permit for the agent's group.
POLICIES = """
@id("agent-not-active")
forbid (principal, action in Action::"call", resource)
when { principal.trust_state == "suspended" || principal.trust_state == "retired" };

@id("drifted-agent-sensitive-tools")
forbid (principal, action in Action::"call", resource)
when { principal.trust_state == "drifted" && resource.sensitivity_level >= 2 };

@id("support-crm")
permit (principal in Group::"support-agents", action == Action::"tool:crm/lookup_customer",
        resource);
"""
BASE = [{"uid": {"type": "Human", "id": "bob@acme.example"}, "attrs": {"roles": ["operator"]},
         "parents": []}]


@pytest.fixture
def drift_registry(database_url: str, clock: FrozenClock) -> Iterator[AgentRegistry]:
    store = open_store(database_url)
    try:
        yield AgentRegistry(store, clock, TrustConfig("acme.example"))
    finally:
        store.close()


def _engine() -> PolicyEngine:
    engine = PolicyEngine(CATALOG)
    engine.activate(engine.compile({"guardrails.cedar": POLICIES}, revision=1))
    return engine


def _lookup(engine: PolicyEngine, clock: FrozenClock) -> tuple[Outcome, tuple[str, ...]]:
    decision = engine.decide(DecisionRequest(
        EntityRef("Agent", CODER), "tool:crm/lookup_customer",
        EntityRef("Tool", "crm/lookup_customer"),
        call_context(now=clock.now(), args={"customer_id": "c-1"}),
    ))
    return decision.outcome, decision.policy_ids


def test_drift_flow_denies_sensitive_tools_until_a_human_reviews(
    drift_registry: AgentRegistry, clock: FrozenClock,
) -> None:
    registry, engine = drift_registry, _engine()
    registry.register(CODER, owner="bob@acme.example", groups=["support-agents"],
                      proof=OwnKeyProof(public_jwk(ECKey.generate_key("P-256"))),
                      manifest=manifest())
    sync_principals(engine, registry, BASE)
    assert _lookup(engine, clock) == (Outcome.ALLOW, ("support-crm",))

    registry.present_manifest(CODER, manifest(model_id="claude-opus-4"))
    sync_principals(engine, registry, BASE)
    assert _lookup(engine, clock) == (Outcome.DENY, ("drifted-agent-sensitive-tools",))

    registry.review(CODER, reviewer="erin@acme.example",
                    expected_digest=registry.get(CODER).review_digest)
    sync_principals(engine, registry, BASE)
    assert _lookup(engine, clock) == (Outcome.ALLOW, ("support-crm",))


def test_suspended_and_retired_agents_are_denied_by_policy(
    drift_registry: AgentRegistry, clock: FrozenClock,
) -> None:
    registry, engine = drift_registry, _engine()
    registry.register(CODER, owner="bob@acme.example", groups=["support-agents"],
                      proof=OwnKeyProof(public_jwk(ECKey.generate_key("P-256"))),
                      manifest=manifest())
    changes: list[Callable[[], object]] = [lambda: registry.suspend(CODER, by="erin"),
                                           lambda: registry.retire(CODER, by="erin")]
    for change in changes:
        change()
        sync_principals(engine, registry, BASE)
        assert _lookup(engine, clock) == (Outcome.DENY, ("agent-not-active",))


def test_the_entities_carry_owner_groups_state_and_risk(
    drift_registry: AgentRegistry,
) -> None:
    registry = drift_registry
    registry.register(CODER, owner="alice@acme.example", groups=["coders"],
                      proof=OwnKeyProof(public_jwk(ECKey.generate_key("P-256"))),
                      manifest=manifest())
    registry.set_risk_score(CODER, 40)
    stale = {"uid": {"type": "Agent", "id": CODER}, "attrs": {}, "parents": []}
    entities = agent_principals(registry.list_agents(), [*BASE, stale])
    by_uid: dict[tuple[str, str], dict[str, Any]] = {
        (e["uid"]["type"], e["uid"]["id"]): e for e in entities}
    agent = by_uid[("Agent", CODER)]
    assert agent["attrs"]["trust_state"] == "trusted"
    assert agent["attrs"]["risk_score"] == 40
    assert agent["attrs"]["owner"] == {"__entity": {"type": "Human", "id": "alice@acme.example"}}
    assert agent["parents"] == [{"type": "Group", "id": "coders"}]
    assert by_uid[("Human", "alice@acme.example")]["attrs"] == {"roles": []}
    assert by_uid[("Human", "bob@acme.example")]["attrs"] == {"roles": ["operator"]}
    assert ("Group", "coders") in by_uid
    assert len(entities) == 4
    PolicyEngine(CATALOG).set_principals(entities)  # the schema accepts them

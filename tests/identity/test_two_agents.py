"""Two agents, one proving itself by its own key and one by a JWT-SVID, side by side —
the set-up the end-to-end grant test builds on."""

from __future__ import annotations

from joserfc.jwk import ECKey

from proctor.clock import FrozenClock
from proctor.identity import (
    AgentRegistry,
    Authenticator,
    JwtSvidProof,
    OwnKeyProof,
    ProofMethod,
    agent_principals,
)
from proctor.policy import EntityRef, PolicyEngine, ToolCatalog, ToolSpec, call_context
from proctor.policy.model import DecisionRequest, Outcome

from .factories import (
    BUILDER,
    CODER,
    REQUEST,
    SvidAuthority,
    manifest,
    own_key_proof,
    public_jwk,
)

POLICY = """
@id("builders-time")
permit (principal in Group::"builders", action == Action::"tool:time/get_current_time", resource);
"""


def test_an_own_key_agent_and_a_jwt_svid_agent_authenticate_and_reach_policy(
    registry: AgentRegistry, authenticator: Authenticator, svid_authority: SvidAuthority,
    p256_key: ECKey, wall_clock: FrozenClock,
) -> None:
    registry.register(CODER, owner="alice@acme.example", groups=["builders"],
                      proof=OwnKeyProof(public_jwk(p256_key)), manifest=manifest())
    registry.register(BUILDER, owner="bob@acme.example", groups=["builders"],
                      proof=JwtSvidProof(), manifest=manifest())

    by_key = authenticator.authenticate(own_key_proof(p256_key, CODER, wall_clock.now()),
                                        request=REQUEST)
    by_svid = authenticator.authenticate(svid_authority.svid(BUILDER, wall_clock.now()))
    assert (by_key.agent.id, by_key.identity.method) == (CODER, ProofMethod.OWN_KEY)
    assert (by_svid.agent.id, by_svid.identity.method) == (BUILDER, ProofMethod.JWT_SVID)
    assert by_key.identity.key_thumbprint == registry.get(CODER).key_thumbprint

    engine = PolicyEngine(ToolCatalog([ToolSpec("time", "get_current_time")]),
                          agent_principals(registry.list_agents()))
    engine.activate(engine.compile({"p.cedar": POLICY}, revision=1))
    for result in (by_key, by_svid):
        decision = engine.decide(DecisionRequest(
            EntityRef("Agent", result.agent.id), "tool:time/get_current_time",
            EntityRef("Tool", "time/get_current_time"), call_context(now=wall_clock.now())))
        assert decision.outcome is Outcome.ALLOW

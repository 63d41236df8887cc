"""What the delegation-line tests share: the analyst (a third agent), the public tool the
line hands on, and an exchange of a grant for it."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, issuer_for
from tests.identity.factories import manifest, public_jwk

from .conftest import OWNER, Agents

ANALYST = "spiffe://acme.example/agent/analyst"
TIME = "time/get_current_time"  # public: policy leaves it even to a drifted agent
ARGS = {"timezone": "UTC"}
TOOLS = [{"tool": TIME}]


def with_analyst(runtime: Runtime, agents: Agents) -> Agents:
    """``agents`` with a third agent, the analyst, registered and keyed."""
    key = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(ANALYST, owner=OWNER, groups=["support-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    agents.keys[ANALYST] = private
    runtime.enforcer.refresh_principals()
    return agents


def exchange(runtime: Runtime, agents: Agents, parent: IssuedGrant, to: str) -> object:
    """``parent`` exchanged for a grant of :data:`TOOLS` to ``to``: the grant or a refusal."""
    proof = make_proof(agents.keys[parent.claims.agent_id], parent.token,
                       method=EXCHANGE_METHOD, target=issuer_for(runtime.settings),
                       now=runtime.clock.now())
    return runtime.grants.exchange(parent.token, proof, to_agent=to,
                                   scope=GrantScope.from_json({"tools": TOOLS}),
                                   ttl_seconds=300)


def handed_on(runtime: Runtime, agents: Agents, parent: IssuedGrant, to: str) -> IssuedGrant:
    child = exchange(runtime, agents, parent, to)
    assert isinstance(child, IssuedGrant)
    return child

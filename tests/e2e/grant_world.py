"""What the in-process end-to-end grant tests set up alike: the example policies' engine
with the registry's agents, and a grant authority over a store with a fresh issuer key."""

from __future__ import annotations

import secrets
from functools import partial
from pathlib import Path

from proctor.audit import AuditLog
from proctor.clock import Clock
from proctor.grants import GrantAuthority, IssuerKeyring, RegisteredAgents, TokenCodec
from proctor.identity import AgentRegistry, agent_principals
from proctor.oversight.drifting import attest
from proctor.policy import PolicyEngine, load_bundle
from proctor.store import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
ISSUER = "https://proctor.acme.example"


def example_engine(registry: AgentRegistry, *, bundle_principals: bool = True
                   ) -> PolicyEngine:
    """The example policies, active, over the registry's agents (with the bundle's own
    principals unless ``bundle_principals`` is False)."""
    bundle = load_bundle(EXAMPLES)
    base = bundle.principals if bundle_principals else []
    engine = PolicyEngine(bundle.catalog, agent_principals(registry.list_agents(), base))
    engine.activate(engine.compile(bundle.sources))
    return engine


def grant_authority(store: Store, clock: Clock, registry: AgentRegistry,
                    engine: PolicyEngine, *, audit: AuditLog | None = None
                    ) -> tuple[GrantAuthority, RegisteredAgents]:
    """Grants for the registry's agents, signed by a fresh issuer key; and the agents'
    adapter (which records attested changes in ``audit``)."""
    codec = TokenCodec(IssuerKeyring(store, clock, secrets.token_bytes(32)), issuer=ISSUER,
                       audience="proctor")
    agents = RegisteredAgents(registry, store, clock, attest=None if audit is None else
                              partial(attest, registry, audit, clock))
    return GrantAuthority(store, clock, codec, engine, agents), agents

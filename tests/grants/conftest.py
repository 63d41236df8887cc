"""A grant authority on a real store, with the example policies and real agent keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import Connection

from proctor.audit import WriteCursor
from proctor.clock import FrozenClock
from proctor.errors import IdentityError
from proctor.grants import (
    AgentBinding,
    GrantAuthority,
    IssuerKeyring,
    TokenCodec,
    jwk_thumbprint,
)
from proctor.grants.agents import AgentEnded
from proctor.grants.proofs import PrivateKey, public_jwk
from proctor.policy import PolicyEngine, load_bundle
from proctor.store import Store, open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
CODER = "spiffe://acme.example/agent/coder"
SUPPORT = "spiffe://acme.example/agent/support"
FINANCE = "spiffe://acme.example/agent/finance"
ISSUER = "https://proctor.acme.example"


@dataclass
class KeyedAgents:
    """Agents with their private keys, as the grants part sees them (key thumbprint,
    active or not). The identity registry provides the same in production, and
    agents without a registered key (tests/e2e/test_grant_lifecycle.py)."""

    keys: dict[str, PrivateKey] = field(default_factory=dict)
    inactive: set[str] = field(default_factory=set)
    hooks: list[AgentEnded] = field(default_factory=list)

    def add(self, agent_id: str, key: PrivateKey) -> None:
        self.keys[agent_id] = key

    def binding(self, agent_id: str) -> AgentBinding | None:
        key = self.keys.get(agent_id)
        if key is None:
            return None
        return AgentBinding(agent_id, jwk_thumbprint(public_jwk(key)),
                            agent_id not in self.inactive)

    def binding_seen(self, agent_id: str) -> AgentBinding | None:
        return self.binding(agent_id)

    def prove(self, identity_proof: str) -> str:
        raise IdentityError("proof_method_mismatch",
                            "these agents prove their identity with their own keys")

    def state_in(self, tx: WriteCursor, agent_id: str) -> str | None:
        if agent_id not in self.keys:
            return None
        return "suspended" if agent_id in self.inactive else "trusted"

    def binding_in(self, tx: WriteCursor, agent_id: str) -> AgentBinding | None:
        found = self.binding(agent_id)
        state = self.state_in(tx, agent_id)
        return None if found is None or state is None else replace(found, trust_state=state)

    def confirm_active(self, conn: Connection, agent_id: str) -> bool:
        return agent_id in self.keys and agent_id not in self.inactive

    def on_deactivated(self, hook: AgentEnded) -> None:
        self.hooks.append(hook)

    def suspend(self, store: Store, agent_id: str) -> None:
        """What the registry does: mark the agent inactive and run the hooks in one
        transaction, then what they asked to run after the commit."""
        with store.transaction() as conn:
            self.inactive.add(agent_id)
            then = [hook(conn, agent_id, "agent suspended") for hook in self.hooks]
        for step in then:
            step()


@dataclass
class Setup:
    authority: GrantAuthority
    agents: KeyedAgents
    clock: FrozenClock
    keyring: IssuerKeyring
    codec: TokenCodec
    store: Store
    engine: PolicyEngine
    master_key: bytes


@pytest.fixture
def setup(database_url: str, clock: FrozenClock) -> Iterator[Setup]:
    yield from make_setup(database_url, clock)


@pytest.fixture
def postgres_setup(postgres_url: str, clock: FrozenClock) -> Iterator[Setup]:
    """The same on PostgreSQL only, for what only PostgreSQL does (NOTIFY)."""
    yield from make_setup(postgres_url, clock)


def make_setup(url: str, clock: FrozenClock) -> Iterator[Setup]:
    store = open_store(url)
    bundle = load_bundle(EXAMPLES)
    engine = PolicyEngine(bundle.catalog, bundle.principals)
    engine.activate(engine.compile(bundle.sources))
    master_key = secrets.token_bytes(32)
    keyring = IssuerKeyring(store, clock, master_key)
    codec = TokenCodec(keyring, issuer=ISSUER, audience="proctor")
    agents = KeyedAgents()
    agents.add(CODER, ec.generate_private_key(ec.SECP256R1()))
    agents.add(SUPPORT, ed25519.Ed25519PrivateKey.generate())
    agents.add(FINANCE, ec.generate_private_key(ec.SECP256R1()))
    authority = GrantAuthority(store, clock, codec, engine, agents)
    yield Setup(authority, agents, clock, keyring, codec, store, engine, master_key)
    authority.leases.settle(timeout=30)  # descendants of its revocations: marked
    store.close()

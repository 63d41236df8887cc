"""A whole runtime (store, engine, registry, grants, audit, approvals, enforcer) on a
real store with the example policies, and agents holding real keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.clock import FrozenClock, SystemClock
from proctor.config import Settings
from proctor.enforcement import CallVerdict, ToolCall
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.issuance import DecidedOn
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from tests.identity.factories import manifest, public_jwk

SUPPORT = "spiffe://acme.example/agent/support"
CODER = "spiffe://acme.example/agent/coder"
OWNER = "bob@acme.example"
APPROVER = "erin@acme.example"
TARGET = "mcp://gateway/tools/call"


@dataclass
class Agents:
    runtime: Runtime
    keys: dict[str, ec.EllipticCurvePrivateKey]

    def grant(self, agent_id: str, tools: list[dict[str, Any]], *, purpose: str = "help a customer",
              max_uses: int | None = None) -> IssuedGrant:
        task = self.runtime.grants.start_task(agent_id, purpose=purpose, on_behalf_of=OWNER)
        return self.runtime.grants.issue(task.id, GrantScope.from_json({"tools": tools}),
                                         max_uses=max_uses)

    def call(self, grant: IssuedGrant, tool: str, args: dict[str, Any]) -> CallVerdict:
        return self.runtime.enforcer.decide_call(grant.token, self.proof(grant),
                                                 ToolCall(tool, args, target=TARGET))

    def proof(self, grant: IssuedGrant) -> str:
        key = self.keys[grant.claims.agent_id]
        return make_proof(key, grant.token, method="tools/call", target=TARGET,
                          now=self.runtime.clock.now())


@pytest.fixture
def frozen() -> FrozenClock:
    return FrozenClock(SystemClock().now().replace(microsecond=0))


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, frozen: FrozenClock) -> Iterator[Runtime]:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    runtime = open_runtime(settings, clock=frozen)
    yield runtime
    runtime.close()


@pytest.fixture
def other(runtime: Runtime) -> Iterator[Runtime]:
    """Another node on the same database."""
    node = open_runtime(runtime.settings, clock=runtime.clock)
    yield node
    node.close()


RISKY_GRANTS = ('@id("no-grants-for-risky-agents")\n@reason("no new grants at a risk over 50")\n'
                'forbid (principal, action == Action::"grant:issue", resource)\n'
                'when { principal.risk_score > 50 };\n')


def rise_after_first_read(runtime: Runtime, other: Runtime, watched: str,
                          risen: int) -> list[int]:
    """From now on ``runtime`` decides issuances on agents as it reads them, and ``other``
    commits ``risen`` as ``watched``'s risk score right after ``runtime`` first read that
    agent (after the read, before the issuance's write). Returns the scores read of it,
    in order, as they come.

    Decide with ``runtime``'s news held (``news_held``): on PostgreSQL its feed hears the
    commit on its own thread and puts the risen score into its engine, maybe before the
    first decision is evaluated, which is then taken on the risen score (read once; a
    deny over 50 is not written to be refused ``agent_changed``)."""
    read: list[int] = []

    def read_then_risen(agent_id: str, *, strict: bool) -> DecidedOn | None:
        state = runtime.enforcer.ensure_current(agent_id, strict=strict)
        if agent_id == watched and state is not None:
            read.append(state.risk[0])
            if len(read) == 1:
                other.registry.set_risk_score(watched, risen)
        return state

    runtime.grants.decide_on_current(read_then_risen)
    return read


@pytest.fixture
def agents(runtime: Runtime) -> Agents:
    keys: dict[str, ec.EllipticCurvePrivateKey] = {}
    for agent_id, group in ((SUPPORT, "support-agents"), (CODER, "coding-agents")):
        key = ECKey.generate_key("P-256", private=True)
        runtime.registry.register(agent_id, owner=OWNER, groups=[group],
                                  proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
        private = key.private_key
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        keys[agent_id] = private
    runtime.enforcer.refresh_principals()
    return Agents(runtime, keys)


def refund(amount_cents: int) -> dict[str, Any]:
    return {"customer_id": "c-1001", "amount_cents": amount_cents}



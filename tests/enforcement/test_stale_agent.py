"""A change to an agent committed by another node while the news is still on its way: the
decision this node takes on what it held must not allow. The decision's write reads the
agent's trust state as committed, and an allow taken on another state is refused
``agent_changed`` (the agent asks again and is decided on the state as it is)."""

from __future__ import annotations

from proctor.identity.agent import TrustState
from proctor.runtime import Runtime
from tests.identity.factories import manifest

from .conftest import SUPPORT, TARGET, Agents

LOOKUP = "crm/lookup_customer"  # confidential: forbidden to a drifted agent
ARGS = {"customer_id": "c-1"}


def test_the_write_confirms_the_trust_state_an_allow_was_decided_on(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    use = runtime.grants.prepare(grant.token, agents.proof(grant), method="tools/call",
                                 target=TARGET, tool_id=LOOKUP, args=ARGS)
    use.decided_state = TrustState.TRUSTED.value  # what the decision saw
    runtime.registry.present_manifest(SUPPORT, manifest(model_id="other"))  # committed first
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "agent_changed"
    assert use.uses_left is None  # nothing counted


def test_the_write_confirms_the_manifest_the_grant_was_issued_for(
        runtime: Runtime, agents: Agents) -> None:
    """The grant check reads the agent from the process's view (no store read): a review
    onto another manifest, committed before the write, is refused there."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    use = runtime.grants.prepare(grant.token, agents.proof(grant), method="tools/call",
                                 target=TARGET, tool_id=LOOKUP, args=ARGS)
    use.decided_state = TrustState.TRUSTED.value
    runtime.registry.review(SUPPORT, reviewer="erin@acme.example",
                            manifest=manifest(model_id="other"))  # trusted, on another one
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "grant_manifest_changed"
    assert use.uses_left is None

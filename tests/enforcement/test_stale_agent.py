"""A change to an agent committed by another node while the news is still on its way: the
decision this node takes on what it held must not allow. The decision's write reads the
agent's trust state as committed, and an allow taken on another state is refused
``agent_changed`` (the agent asks again and is decided on the state as it is)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

from proctor.errors import GrantError
from proctor.grants import GrantScope
from proctor.grants.issuance import DecidedOn
from proctor.identity.agent import TrustState
from proctor.runtime import Runtime
from tests.identity.factories import manifest

from .conftest import OWNER, SUPPORT, TARGET, Agents

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


def test_an_issuance_confirms_the_trust_state_it_was_decided_on(
        runtime: Runtime, agents: Agents) -> None:
    """An issuance is decided on the agent as this process's view holds it; a drift that
    commits before the grant's write (or on another node, not heard of yet) refuses it,
    and it is decided once more on the state as it is now: a drifted agent may not."""
    task = runtime.grants.start_task(SUPPORT, purpose="help a customer", on_behalf_of=OWNER)
    seen: list[DecidedOn | None] = []

    def decided_then_drifted(agent_id: str, *, strict: bool) -> DecidedOn | None:
        state = runtime.enforcer.ensure_current(agent_id, strict=strict)
        seen.append(state)
        runtime.registry.present_manifest(SUPPORT, manifest(model_id="other"))
        return state

    runtime.grants.decide_on_current(decided_then_drifted)
    # on PostgreSQL the drift's own NOTIFY could reach the engine before policy is asked
    # (a busy machine: `issuance_denied`); the listener delivers under the feed's lock
    held = nullcontext() if runtime.feed.sees_every_commit else runtime.feed._lock
    with held, pytest.raises(GrantError) as refused:
        runtime.grants.issue(task.id, GrantScope.from_json({"tools": [{"tool": LOOKUP}]}))
    assert refused.value.code == "issuance_denied"
    # refused `agent_changed` by its write, then decided once more on the drifted agent
    assert [s.state if s else None for s in seen] == [TrustState.TRUSTED.value,
                                                      TrustState.DRIFTED.value]
    assert runtime.grants.tree(task.id) == runtime.grants.tree(task.id)[:1]  # the task alone


def test_an_issuance_confirms_the_manifest_it_was_read_with(
        runtime: Runtime, agents: Agents) -> None:
    """An issuance reads the agent (its key, the manifest it runs) from this process's
    view, on either backend; a review onto another manifest that commits before the
    grant's write (the trust state stays `trusted`) refuses the grant, which would carry
    the manifest it was read with; decided once more, the grant carries the new one."""
    task = runtime.grants.start_task(SUPPORT, purpose="help a customer", on_behalf_of=OWNER)
    asked: list[DecidedOn | None] = []

    def decided_then_reviewed(agent_id: str, *, strict: bool) -> DecidedOn | None:
        state = runtime.enforcer.ensure_current(agent_id, strict=strict)
        asked.append(state)
        if len(asked) == 1:
            runtime.registry.review(SUPPORT, reviewer="erin@acme.example",
                                    manifest=manifest(model_id="other"))
        return state

    runtime.grants.decide_on_current(decided_then_reviewed)
    held = nullcontext() if runtime.feed.sees_every_commit else runtime.feed._lock
    with held:
        grant = runtime.grants.issue(task.id, GrantScope.from_json({"tools": [{"tool": LOOKUP}]}))
    assert len(asked) == 2  # refused `agent_changed` by its write, then decided once more
    assert grant.claims.manifest_digest == runtime.registry.get(SUPPORT).manifest_digest
    assert len(runtime.grants.tree(task.id)) == 2  # the task and this one grant

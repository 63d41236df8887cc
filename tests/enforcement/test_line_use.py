"""A delegated grant's use is re-gated by every agent of its line, not by its holder alone.

The coder (A) hands a grant on to the support agent (B), which may hand it on to the
analyst (C). A changed manifest re-gates access: if A drifts, B and C may no longer use
authority A handed on, each call refused ``delegator_not_trusted`` (audited) until a
human reviews A, after which the line's grants work again (nothing was revoked). A
retired delegator revoked the line. B may not hand on what a drifted A gave it, and a
drift committed by another node after B's call was decided is caught by its write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from proctor.audit import EventFilter, search_events
from proctor.enforcement import CallVerdict, ToolCall
from proctor.errors import GrantError
from proctor.policy import Decision, DecisionRequest, Outcome
from proctor.runtime import Runtime
from tests.identity.factories import manifest

from .conftest import CODER, SUPPORT, TARGET, Agents
from .lines import ANALYST, ARGS, TIME, TOOLS, exchange, handed_on, with_analyst


@pytest.fixture
def line(runtime: Runtime, agents: Agents) -> Agents:
    return with_analyst(runtime, agents)




def _drift(runtime: Runtime, agent_id: str) -> None:
    runtime.registry.present_manifest(agent_id, manifest(model_id="some-other-model"))


def _reviewed_back(runtime: Runtime, agent_id: str) -> None:
    """The agent presents its reviewed manifest again and a human reviews it: trusted on
    the manifest its grants were issued for."""
    runtime.registry.present_manifest(agent_id, manifest())
    runtime.registry.review(agent_id, reviewer="erin@acme.example",
                            expected_digest=runtime.registry.get(agent_id).review_digest)
    assert runtime.registry.get(agent_id).trust_state.value == "trusted"


def _refusals(runtime: Runtime, code: str) -> list[Mapping[str, Any]]:
    return [e.event for e in search_events(runtime.store, EventFilter())
            if e.event["outcome"] == "denied" and e.event["detail"].get("code") == code]


def test_a_drifted_delegator_re_gates_the_calls_of_the_grant_ithanded_on(
        runtime: Runtime, agents: Agents) -> None:
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    assert agents.call(child, TIME, ARGS).is_allowed
    _drift(runtime, CODER)
    verdict = agents.call(child, TIME, ARGS)
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "delegator_not_trusted")
    assert CODER in verdict.reasons[0]
    [event] = _refusals(runtime, "delegator_not_trusted")
    assert (event["actor"]["id"], event["action"], event["task"]) == (
        SUPPORT, f"tool:{TIME}", held.claims.task_id)
    assert verdict.event_id == event["id"]
    # reviewed back to trusted, the line's grant works again: nothing was revoked
    _reviewed_back(runtime, CODER)
    assert agents.call(child, TIME, ARGS).is_allowed


@pytest.mark.parametrize("on_loop", [False, True])
def test_every_agent_of_the_line_counts_and_none_hands_on_for_a_drifted_one(
        runtime: Runtime, line: Agents, on_loop: bool) -> None:
    held = line.grant(CODER, TOOLS, purpose="tell the time")
    middle = handed_on(runtime, line, held, SUPPORT)
    last = handed_on(runtime, line, middle, ANALYST)
    assert (last.claims.actor_chain, line.call(last, TIME, ARGS).is_allowed) == (
        (SUPPORT, CODER), True)
    _drift(runtime, CODER)
    if on_loop:  # the gateway's path: the agents from the view, on the event loop
        async def call() -> CallVerdict:
            return await runtime.enforcer.decide_call_on_loop(
                last.token, line.proof(last), ToolCall(TIME, ARGS, target=TARGET))
        verdict = anyio.run(call)
    else:
        verdict = line.call(last, TIME, ARGS)
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "delegator_not_trusted")
    assert line.call(middle, TIME, ARGS).code == "delegator_not_trusted"
    # the support agent may not hand on what the drifted coder gave it, nor the coder
    for parent, to in ((middle, ANALYST), (held, ANALYST)):
        with pytest.raises(GrantError) as refused:
            exchange(runtime, line, parent, to)
        assert refused.value.code == "delegator_not_trusted", refused.value.message
    # a drifted agent in the middle of the line re-gates the end of it likewise
    _reviewed_back(runtime, CODER)
    assert line.call(last, TIME, ARGS).is_allowed
    _drift(runtime, SUPPORT)
    assert line.call(last, TIME, ARGS).code == "delegator_not_trusted"
    assert line.call(held, TIME, ARGS).is_allowed  # the coder's own: its line is empty


def test_a_retired_delegator_ends_the_line(runtime: Runtime, agents: Agents) -> None:
    """Retiring revokes the agent's grants and all derived from them (a regression test:
    this held before the line was checked)."""
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    runtime.registry.retire(CODER, by="erin@acme.example", reason="decommissioned")
    verdict = agents.call(child, TIME, ARGS)
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_revoked")
    assert verdict.event_id is not None


def test_a_drift_committed_after_the_decision_is_caught_by_the_write(
        runtime: Runtime, other: Runtime, agents: Agents,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The call is decided on the coder as this node's view holds it (trusted); another
    node commits the coder's drift after policy allowed the call and before its write:
    the write reads the line's agents as committed and refuses it."""
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    engine = runtime.enforcer._engine
    decide = engine.decide
    drifted: list[Decision] = []

    def decided_then_drifted(request: DecisionRequest, **kwargs: Any) -> Decision:
        decision = decide(request, **kwargs)
        if not drifted and request.principal.id == SUPPORT:
            drifted.append(decision)
            _drift(other, CODER)  # committed by another process
        return decision

    monkeypatch.setattr(engine, "decide", decided_then_drifted)
    verdict = agents.call(child, TIME, ARGS)
    assert drifted and drifted[0].outcome is Outcome.ALLOW  # policy allowed it first
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "delegator_not_trusted")
    [event] = _refusals(runtime, "delegator_not_trusted")
    assert event["id"] == verdict.event_id
    assert not [e for e in search_events(runtime.store, EventFilter(action=f"tool:{TIME}"))
                if e.event["outcome"] == "allowed" and e.event["actor"]["id"] == SUPPORT
                and e.event["id"] == verdict.event_id]


def test_a_use_confirms_the_line_in_its_write(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """The grant check reads the line from this process's view; a drift committed by
    another node before the use's write is refused there, nothing counted."""
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    use = runtime.grants.prepare(child.token, agents.proof(child), method="tools/call",
                                 target=TARGET, tool_id=TIME, args=ARGS)
    _drift(other, CODER)
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "delegator_not_trusted"
    assert use.accessor is None  # nothing counted

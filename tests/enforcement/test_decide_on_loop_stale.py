"""A decision on the caller's event loop whose allow was decided on a view another node
had changed meanwhile: its write refuses it (``agent_changed``) and the call is decided
once more, off the loop, on the agent as committed, one event naming why."""

from __future__ import annotations

import anyio
import pytest

from proctor.enforcement import ToolCall
from proctor.grants import make_proof
from proctor.identity.agent import TrustState
from proctor.policy import Outcome
from proctor.runtime import Runtime
from tests.identity.factories import manifest

from .conftest import SUPPORT, TARGET, Agents
from .test_stale_views import ARGS, LOOKUP, _call_events, news_held

pytestmark = pytest.mark.anyio

WAIT = 60  # seconds: a bound on every wait, never a pause


async def test_an_allow_on_a_stale_view_decided_on_the_loop_is_decided_once_more(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    before = len(_call_events(runtime, LOOKUP))
    with news_held(runtime):
        drifted = other.registry.present_manifest(SUPPORT, manifest(model_id="other"))
        assert drifted.trust_state is TrustState.DRIFTED
        proof = make_proof(agents.keys[SUPPORT], grant.token, method="tools/call",
                           target=TARGET, now=runtime.clock.now())
        runtime.task_view.task(grant.claims.task_id)  # held, as a steady stream keeps it
        loop_before = runtime.enforcer.decided_on_loop
        with anyio.fail_after(WAIT):
            verdict = await runtime.enforcer.decide_call_on_loop(
                grant.token, proof, ToolCall(LOOKUP, ARGS, target=TARGET))
        assert runtime.enforcer.decided_on_loop == loop_before + 1  # its CPU on the loop
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("drifted-agent-sensitive-tools",))
    [event] = _call_events(runtime, LOOKUP)[before:]
    assert (event["id"], event["outcome"]) == (verdict.event_id, "denied")
    assert event["detail"]["decided_again"]["code"] == "agent_changed"

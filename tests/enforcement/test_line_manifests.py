"""A grant handed on is bound to the manifest its delegator's own grant was issued under.

When a human reviews the coder (A) onto a new manifest (its drift accepted: a new model
or prompt), A's own grant, issued for the old one, is refused ``grant_manifest_changed``:
what runs is not what the grant was issued for. The grants A handed on under the old
manifest are refused the same way, at each use and each hand-on (they were usable before:
their tokens did not carry A's manifest). A reviewed back onto the manifest it handed
them on under, they work again, as A's own grant does (nothing is revoked).
"""

from __future__ import annotations

import pytest

from proctor.errors import GrantError
from proctor.grants import GrantScope
from proctor.grants.tokens import GrantClaims
from proctor.policy import Outcome
from proctor.runtime import Runtime
from tests.identity.factories import manifest

from .conftest import CODER, SUPPORT, TARGET, Agents
from .lines import ANALYST, ARGS, TIME, TOOLS, exchange, handed_on, with_analyst

NEW = {"model_id": "the-next-model"}




def _reviewed_onto(runtime: Runtime, agent_id: str, **changes: str) -> None:
    """The agent presents ``manifest(**changes)`` and a human accepts it."""
    runtime.registry.present_manifest(agent_id, manifest(**changes))
    runtime.registry.review(agent_id, reviewer="erin@acme.example",
                            expected_digest=runtime.registry.get(agent_id).review_digest)
    assert runtime.registry.get(agent_id).trust_state.value == "trusted"


@pytest.fixture
def line(runtime: Runtime, agents: Agents) -> Agents:
    return with_analyst(runtime, agents)


def test_a_delegator_reviewed_onto_a_new_manifest_re_gates_what_ithanded_on(
        runtime: Runtime, agents: Agents) -> None:
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    assert child.claims.line_manifests == (held.claims.manifest_digest,)
    assert agents.call(child, TIME, ARGS).is_allowed
    _reviewed_onto(runtime, CODER, **NEW)
    own = agents.call(held, TIME, ARGS)  # the coder's own grant: issued for the old one
    assert (own.outcome, own.code) == (Outcome.DENY, "grant_manifest_changed")
    verdict = agents.call(child, TIME, ARGS)
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_manifest_changed")
    assert CODER in verdict.reasons[0] and verdict.event_id is not None
    # a new grant of the coder's, on what runs now, hands on again
    again = handed_on(runtime, agents, agents.grant(CODER, TOOLS, purpose="tell the time"),
                       SUPPORT)
    assert agents.call(again, TIME, ARGS).is_allowed
    # reviewed back onto the manifest it handed the first grant on under: usable again
    _reviewed_onto(runtime, CODER)
    assert agents.call(child, TIME, ARGS).is_allowed
    assert agents.call(again, TIME, ARGS).code == "grant_manifest_changed"


def test_every_agent_of_the_line_is_held_to_its_manifest(
        runtime: Runtime, line: Agents) -> None:
    held = line.grant(CODER, TOOLS, purpose="tell the time")
    middle = handed_on(runtime, line, held, SUPPORT)
    last = handed_on(runtime, line, middle, ANALYST)
    assert last.claims.line_manifests == (middle.claims.manifest_digest,
                                          held.claims.manifest_digest)
    _reviewed_onto(runtime, CODER, **NEW)  # the first of the line
    assert line.call(last, TIME, ARGS).code == "grant_manifest_changed"
    with pytest.raises(GrantError) as refused:  # nor is it handed on further
        exchange(runtime, line, middle, ANALYST)
    assert refused.value.code == "grant_manifest_changed"
    _reviewed_onto(runtime, CODER)
    _reviewed_onto(runtime, SUPPORT, **NEW)  # the middle one
    assert line.call(last, TIME, ARGS).code == "grant_manifest_changed"
    assert line.call(held, TIME, ARGS).is_allowed


def test_the_write_refuses_a_review_committed_after_the_check(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    use = runtime.grants.prepare(child.token, agents.proof(child), method="tools/call",
                                 target=TARGET, tool_id=TIME, args=ARGS)
    _reviewed_onto(other, CODER, **NEW)
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "grant_manifest_changed"


def test_the_act_chain_carries_each_delegators_manifest() -> None:
    claims = GrantClaims("g", "b", "t", "iss", "aud", 1, 1, 2, GrantScope.from_json(
        {"tools": TOOLS}), "jkt", ("p2", "p1"), ("a2", "a1"), manifest_digest="mb",
        actor_manifests=("m2", None))
    act = claims.as_claims()["act"]
    assert act == {"sub": "a2", "mfd": "m2", "act": {"sub": "a1"}}
    assert GrantClaims.from_claims(claims.as_claims()) == claims
    old = {**claims.as_claims(), "act": {"sub": "a2", "act": {"sub": "a1"}}}
    assert GrantClaims.from_claims(old).line_manifests == (None, None)  # not checked

"""A part of a call already allowed (the agent's answer to an upstream's request during
it) is decided on that call's grant: no new proof, no use, and every other check kept
(scope, expiry, revocation confirmed in the write, the agent, Cedar, the audit event)."""

from __future__ import annotations

from sqlalchemy import delete

from proctor.audit import EventFilter, search_events
from proctor.clock import FrozenClock
from proctor.enforcement import ToolCall
from proctor.policy import Outcome
from proctor.runtime import Runtime
from proctor.store import tables

from .conftest import SUPPORT, TARGET, Agents, refund

CRM = [{"tool": "crm/*"}]
LOOKUP = ToolCall("crm/lookup_customer", {"customer_id": "c-1001"}, method="sampling/x")


def _outcomes(runtime: Runtime, tool: str) -> list[tuple[str, str]]:
    events = search_events(runtime.store, EventFilter(action=f"tool:{tool}"), newest_first=False)
    return [(e.event["outcome"], e.event["actor"]["type"]) for e in events]


def test_a_part_of_an_allowed_call_is_decided_on_its_grant_without_a_use_and_audited(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, CRM, max_uses=1)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    assert call.is_allowed
    within = runtime.enforcer.decide_within(call, LOOKUP)
    assert (within.outcome, within.code) == (Outcome.ALLOW, "allow")
    assert within.event_id is not None and within.event_id != call.event_id
    # the grant's one use went to the call; a second one is refused
    assert agents.call(grant, "crm/issue_refund", refund(100)).code == "grant_uses_exhausted"
    assert _outcomes(runtime, "crm/lookup_customer") == [("allowed", "agent")]


def test_a_part_of_a_call_is_refused_when_the_grant_went_meanwhile_or_does_not_cover_it(
        runtime: Runtime, agents: Agents, frozen: FrozenClock) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/issue_refund"}])
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    assert runtime.enforcer.decide_within(call, LOOKUP).code == "grant_out_of_scope"

    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    runtime.grants.revoke(grant.accessor, "incident")
    assert runtime.enforcer.decide_within(call, LOOKUP).code == "grant_revoked"

    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    runtime.registry.suspend(SUPPORT, by="erin@acme.example", reason="odd behaviour")
    assert runtime.enforcer.decide_within(call, LOOKUP).code == "agent_not_active"
    assert _outcomes(runtime, "crm/lookup_customer") == [("denied", "agent")] * 3


def test_a_part_of_a_call_is_refused_once_the_grant_expired_or_if_the_call_was_not_allowed(
        runtime: Runtime, agents: Agents, frozen: FrozenClock) -> None:
    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    denied = runtime.enforcer.decide_call(grant.token, "not a proof", ToolCall(
        "crm/issue_refund", refund(2500), target=TARGET))
    assert runtime.enforcer.decide_within(denied, LOOKUP).code == "enforcement_error"
    frozen.advance(seconds=grant.claims.expires_at - frozen.now().timestamp() + 120)
    assert runtime.enforcer.decide_within(call, LOOKUP).code == "grant_expired"


def test_a_part_of_a_call_with_arguments_no_json_can_carry_is_refused_as_such(
        runtime: Runtime, agents: Agents) -> None:
    # the agent's answer is built from what it sent: a NaN or a lone surrogate there is
    # refused arguments_invalid, written, as a call's is (not an enforcement_error)
    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    for args in ({"customer_id": float("nan")}, {"customer_id": "\ud800"}):
        within = runtime.enforcer.decide_within(call, ToolCall(
            "crm/lookup_customer", args, method="sampling/x"))
        assert within.code == "arguments_invalid" and within.event_id is not None
    assert _outcomes(runtime, "crm/lookup_customer") == [("denied", "agent")] * 2


def test_a_part_of_a_call_whose_task_is_gone_is_refused_task_unknown_as_a_call_is(
        runtime: Runtime, agents: Agents) -> None:
    # the steps after the grant's checks are a call's (it came out enforcement_error)
    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    with runtime.store.transaction() as conn:
        conn.execute(delete(tables.tasks).where(tables.tasks.c.id == grant.claims.task_id))
    within = runtime.enforcer.decide_within(call, LOOKUP)
    assert (within.code, within.claims) == ("task_unknown", grant.claims)
    assert within.event_id is not None
    assert _outcomes(runtime, "crm/lookup_customer") == [("denied", "agent")]


def test_a_part_of_a_call_whose_agent_is_gone_is_refused_agent_unknown_as_a_call_is(
        runtime: Runtime, agents: Agents) -> None:
    # an agent no longer registered is not one suspended (it came out agent_not_active)
    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    with runtime.store.transaction() as conn:
        conn.execute(delete(tables.agents).where(tables.agents.c.id == SUPPORT))
    within = runtime.enforcer.decide_within(call, LOOKUP)
    assert (within.code, within.claims) == ("agent_unknown", grant.claims)
    assert within.event_id is not None
    assert _outcomes(runtime, "crm/lookup_customer") == [("denied", "agent")]


def test_a_part_of_a_call_naming_a_tool_no_json_can_carry_is_refused_and_written(
        runtime: Runtime, agents: Agents) -> None:
    # a lone surrogate in the tool's name: the refusal's event names it escaped (it
    # named it as it was, which no store can hold: the refusal went unwritten)
    grant = agents.grant(SUPPORT, CRM)
    call = agents.call(grant, "crm/issue_refund", refund(2500))
    within = runtime.enforcer.decide_within(call, ToolCall("crm/\ud800", {},
                                                           method="sampling/x"))
    assert within.code == "arguments_invalid" and within.event_id is not None
    assert _outcomes(runtime, "crm/\\ud800") == [("denied", "agent")]

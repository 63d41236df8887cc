"""A grant held by the deciding process (the stdio wrapper's): its key is checked once,
when it is held, and each call is decided without a proof, with every other check kept
(revocation, agent, task, scope, uses, expiry) and the events saying how it was held."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from proctor.audit import EventFilter, search_events
from proctor.clock import FrozenClock
from proctor.enforcement import HELD_IN_PROCESS, ToolCall
from proctor.errors import GrantError
from proctor.grants import HeldGrant
from proctor.policy import Outcome
from proctor.runtime import Runtime
from proctor.store.tables import proof_nonces

from .conftest import APPROVER, CODER, SUPPORT, TARGET, Agents, refund

REFUND = [{"tool": "crm/issue_refund"}]


def _event(runtime: Runtime, event_id: str | None) -> Mapping[str, Any]:
    [event] = [e.event for e in search_events(runtime.store, EventFilter())
               if e.event["id"] == event_id]
    return event


def _nonces(runtime: Runtime) -> int:
    with runtime.store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(proof_nonces)).scalar_one())


def _call(args: dict[str, Any]) -> ToolCall:
    return ToolCall("crm/issue_refund", args, target=TARGET)


def test_a_held_grant_is_decided_without_a_proof_and_its_event_says_it_was_held(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    held = runtime.grants.hold(grant.token, agents.keys[SUPPORT])
    verdict = runtime.enforcer.decide_held_call(held, _call(refund(2500)))
    assert (verdict.outcome, verdict.code) == (Outcome.ALLOW, "allow")
    assert _nonces(runtime) == 0  # no proof: no nonce to store
    event = _event(runtime, verdict.event_id)
    assert event["detail"]["holder"] == HELD_IN_PROCESS
    assert event["actor"]["id"] == SUPPORT and event["grant"] == grant.accessor
    # a call with a proof stores its nonce, and its event names no holder
    proven = agents.call(grant, "crm/issue_refund", refund(2500))
    assert proven.is_allowed and _nonces(runtime) == 1
    assert "holder" not in _event(runtime, proven.event_id)["detail"]


def test_a_key_that_is_not_the_grants_is_refused_when_the_grant_is_held(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    for key in (agents.keys[CODER], ec.generate_private_key(ec.SECP256R1())):
        with pytest.raises(GrantError) as refused:
            runtime.grants.hold(grant.token, key)
        assert refused.value.code == "proof_wrong_key"


def test_a_held_grant_is_made_only_by_holding_it_with_its_key(agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    with pytest.raises(TypeError):
        HeldGrant(grant.token, grant.claims, object())


def test_a_revoked_grant_is_refused_when_held_and_on_every_held_call_after(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    held = runtime.grants.hold(grant.token, agents.keys[SUPPORT])
    runtime.grants.revoke(grant.accessor, "incident")
    verdict = runtime.enforcer.decide_held_call(held, _call(refund(100)))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_revoked")
    assert _event(runtime, verdict.event_id)["detail"]["holder"] == HELD_IN_PROCESS
    with pytest.raises(GrantError) as refused:
        runtime.grants.hold(grant.token, agents.keys[SUPPORT])
    assert refused.value.code == "grant_revoked"


def test_a_suspended_agents_held_grant_is_denied(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(CODER, [{"tool": "git/*"}], purpose="fix the build")
    held = runtime.grants.hold(grant.token, agents.keys[CODER])
    runtime.registry.suspend(CODER, by="erin@acme.example", reason="odd behaviour")
    verdict = runtime.enforcer.decide_held_call(
        held, ToolCall("git/git_log", {"repo_path": "/srv/repos/app"}, target=TARGET))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "agent_not_active")


def test_max_uses_counts_held_calls(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND, max_uses=2)
    held = runtime.grants.hold(grant.token, agents.keys[SUPPORT])
    codes = [runtime.enforcer.decide_held_call(held, _call(refund(100))).code
             for _ in range(3)]
    assert codes == ["allow", "allow", "grant_uses_exhausted"]


def test_a_held_grant_expires_and_its_scope_holds(runtime: Runtime, agents: Agents,
                                                  frozen: FrozenClock) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/issue_refund",
                                    "args": {"amount_cents": {"max": 1000}}}])
    held = runtime.grants.hold(grant.token, agents.keys[SUPPORT])
    outside = runtime.enforcer.decide_held_call(held, _call(refund(2500)))
    assert outside.code == "grant_out_of_scope"
    frozen.advance(seconds=grant.claims.expires_at - frozen.now().timestamp() + 120)
    assert runtime.enforcer.decide_held_call(held, _call(refund(100))).code == "grant_expired"


def test_a_held_calls_events_after_its_approval_say_it_was_held(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    held = runtime.grants.hold(grant.token, agents.keys[SUPPORT])
    pending = runtime.enforcer.decide_held_call(held, _call(refund(25_000)))
    assert pending.outcome is Outcome.APPROVAL_REQUIRED and pending.approval is not None
    assert _event(runtime, pending.event_id)["detail"]["holder"] == HELD_IN_PROCESS
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    allowed = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert allowed.is_allowed and allowed.event_id != pending.event_id
    assert _event(runtime, allowed.event_id)["detail"]["holder"] == HELD_IN_PROCESS

    # refused after its approval (the grant revoked while it waited): said too
    waiting = runtime.enforcer.decide_held_call(held, _call(refund(26_000)))
    assert waiting.approval is not None
    runtime.approvals.decide(waiting.approval.id, approver=APPROVER, approve=True)
    runtime.grants.revoke(grant.accessor, "incident")
    refused = anyio.run(lambda: runtime.enforcer.await_approval(waiting, timeout=5))
    assert refused.code == "grant_revoked"
    assert _event(runtime, refused.event_id)["detail"]["holder"] == HELD_IN_PROCESS

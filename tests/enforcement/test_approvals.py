"""Calls that wait for a human: bound to the exact call, single use, expiring,
decided only by a human who is not the agent's owner."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import anyio
import pytest
from sqlalchemy import delete, text

from proctor.approvals import ApprovalStatus
from proctor.audit import ActorType, ChainHead, EventFilter, EventRow, WriteCursor, search_events
from proctor.clock import FrozenClock
from proctor.enforcement import CallVerdict, ToolCall
from proctor.errors import ApprovalError, StoreError
from proctor.grants.tokens import LEEWAY_SECONDS
from proctor.policy import Outcome
from proctor.runtime import Runtime
from proctor.store import tables

from .conftest import APPROVER, OWNER, SUPPORT, TARGET, Agents, refund
from .lock_waits import until_waiting_on_a_lock

REFUND = [{"tool": "crm/issue_refund"}]


def test_an_approved_call_runs_once_and_the_approval_is_used_up(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert (pending.outcome, pending.code) == (Outcome.APPROVAL_REQUIRED, "approval_required")
    approval = pending.approval
    assert approval is not None and approval.status is ApprovalStatus.PENDING
    assert approval.request["reasons"] == ["refunds over 50.00 need a human's approval"]
    assert approval.request["trust_state"] == "trusted"
    assert approval.on_behalf_of == OWNER

    runtime.approvals.decide(approval.id, approver=APPROVER, approve=True, comment="ok")
    allowed = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (allowed.outcome, allowed.code) == (Outcome.ALLOW, "allow")
    assert runtime.approvals.get(approval.id).status is ApprovalStatus.USED

    again = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert again.outcome is Outcome.APPROVAL_REQUIRED
    assert again.approval is not None and again.approval.id != approval.id


def test_an_approval_does_not_cover_other_arguments(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    other = agents.call(grant, "crm/issue_refund", refund(26_000))
    assert other.outcome is Outcome.APPROVAL_REQUIRED
    assert other.approval is not None and other.approval.id != pending.approval.id
    # the first approval is still there for the call it was given for
    assert agents.call(grant, "crm/issue_refund", refund(25_000)).is_allowed


def test_the_same_pending_call_shares_one_request(agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    first = agents.call(grant, "crm/issue_refund", refund(25_000))
    second = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert first.approval is not None and second.approval is not None
    assert first.approval.id == second.approval.id


def test_a_denied_approval_denies_the_waiting_call(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=False,
                             comment="not this customer")
    denied = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (denied.outcome, denied.code) == (Outcome.DENY, "approval_denied")


def test_a_call_nobody_decides_times_out_naming_its_approval(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    waited = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=0.3))
    assert (waited.outcome, waited.code) == (Outcome.APPROVAL_REQUIRED, "approval_timeout")
    assert waited.approval is not None and pending.approval is not None
    assert waited.approval.id == pending.approval.id


def test_a_grant_revoked_while_its_call_waits_is_denied(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    runtime.grants.revoke(grant.accessor, "task cancelled")
    verdict = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_revoked")
    # the deny is its own event, the agent's, after the pending one
    assert verdict.event_id is not None and verdict.event_id != pending.event_id
    [event] = [e.event for e in search_events(runtime.store, EventFilter())
               if e.event["id"] == verdict.event_id]
    assert (event["actor"]["id"], event["outcome"]) == (SUPPORT, "denied")
    assert event["detail"]["code"] == "grant_revoked"


def test_an_agent_suspended_while_its_call_waits_is_denied(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    runtime.registry.suspend(SUPPORT, by=APPROVER, reason="odd behaviour")
    verdict = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    # suspending the agent revoked its grants: the approved call dies with them
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_revoked")
    # the approval is not spent on a call that did not run
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.APPROVED


@pytest.mark.parametrize("how", ["gone", "store_down"])
def test_an_agent_gone_or_unreadable_while_its_call_waits_is_refused_as_a_call_is(
    runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    # after an approval an agent no longer registered came out agent_not_active (a
    # call's is agent_unknown) and a store error enforcement_error (a call's: its code)
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    if how == "gone":
        with runtime.store.transaction() as conn:
            conn.execute(delete(tables.agents).where(tables.agents.c.id == SUPPORT))
    else:
        def down(agent_id: str) -> None:
            raise StoreError("the store is unreachable")
        monkeypatch.setattr(runtime.registry, "find", down)
    verdict = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (verdict.outcome, verdict.code) == (
        Outcome.DENY, "agent_unknown" if how == "gone" else "store_unavailable")


def test_a_replayed_proof_of_the_approved_call_does_not_spend_its_approval(
    runtime: Runtime, agents: Agents,
) -> None:
    """Whoever replays the proof of the call that asked for approval is refused
    ``proof_replayed`` by the write; the approval it had taken is given back, and the
    agent's own call, with a proof of its own, is allowed on it."""
    grant = agents.grant(SUPPORT, REFUND)
    proof = agents.proof(grant)
    call = ToolCall("crm/issue_refund", refund(25_000), target=TARGET)
    pending = runtime.enforcer.decide_call(grant.token, proof, call)
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    replayed = runtime.enforcer.decide_call(grant.token, proof, call)
    assert (replayed.outcome, replayed.code) == (Outcome.DENY, "proof_replayed")
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.APPROVED
    assert agents.call(grant, "crm/issue_refund", refund(25_000)).is_allowed
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.USED


def test_a_call_asked_again_while_the_first_waits_does_not_spend_its_approval(
    runtime: Runtime, agents: Agents,
) -> None:
    """A grant with one use: the waiting call counted it. The agent asks again while it
    waits; that call, allowed on the approval by policy, has no use left
    (``grant_uses_exhausted``) and gives the approval back, so the waiting call, whose
    use was counted, goes on with it."""
    grant = agents.grant(SUPPORT, REFUND, max_uses=1)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    again = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert (again.outcome, again.code) == (Outcome.DENY, "grant_uses_exhausted")
    verdict = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (verdict.outcome, verdict.code) == (Outcome.ALLOW, "allow")
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.USED


def test_a_grant_that_expires_while_its_call_waits_is_denied(
    runtime: Runtime, agents: Agents, frozen: FrozenClock,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    frozen.advance(seconds=grant.claims.expires_at - grant.claims.issued_at + LEEWAY_SECONDS)
    verdict = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_expired")


def test_data_read_while_a_call_waits_counts_when_it_goes_on(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}, {"tool": "email/*"}])
    email = {"to": "someone@example.org", "subject": "hi", "body": "..."}
    pending = agents.call(grant, "email/send_email", email)
    assert pending.outcome is Outcome.APPROVAL_REQUIRED and pending.approval is not None
    # meanwhile the task reads confidential data, then a human approves the email
    assert agents.call(grant, "crm/lookup_customer", {"customer_id": "c-1"}).is_allowed
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)
    verdict = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("no-external-email-after-confidential",))


def test_the_owner_the_agent_acts_for_may_not_approve(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    with pytest.raises(ApprovalError) as refused:
        runtime.approvals.decide(pending.approval.id, approver=OWNER, approve=True)
    assert refused.value.code == "approval_own_request"
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.PENDING
    # unless the deployment allows it
    approved = runtime.approvals.decide(pending.approval.id, approver=OWNER, approve=True,
                                        allow_owner=True)
    assert approved.status is ApprovalStatus.APPROVED


def test_approving_twice_or_too_late_is_refused(
    runtime: Runtime, agents: Agents, frozen: FrozenClock,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    first = agents.call(grant, "crm/issue_refund", refund(25_000))
    late = agents.call(grant, "crm/issue_refund", refund(30_000))
    assert first.approval is not None and late.approval is not None
    runtime.approvals.decide(first.approval.id, approver=APPROVER, approve=True)
    with pytest.raises(ApprovalError) as twice:
        runtime.approvals.decide(first.approval.id, approver=APPROVER, approve=False)
    assert twice.value.code == "approval_already_decided"
    frozen.advance(seconds=601)
    with pytest.raises(ApprovalError) as expired:
        runtime.approvals.decide(late.approval.id, approver=APPROVER, approve=True)
    assert expired.value.code == "approval_expired"
    # an approval past its expiry is not used either
    assert runtime.approvals.consume(first.approval.binding) is None


def test_the_humans_decision_is_its_own_event_linked_to_the_agents(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True,
                             comment="customer verified")
    [human] = [e.event for e in search_events(runtime.store,
                                              EventFilter(actor_type=ActorType.HUMAN))]
    assert human["action"] == "approval.grant"
    assert human["actor"]["id"] == APPROVER
    assert human["concerns"] == pending.event_id
    assert human["detail"] == {"reason": "customer verified"}


def test_unknown_approvals_are_named(runtime: Runtime) -> None:
    with pytest.raises(ApprovalError) as unknown:
        runtime.approvals.decide("apr_nope", approver=APPROVER, approve=True)
    assert unknown.value.code == "approval_unknown"


class _FailsDecisions:
    """The audit writer's observer (the runtime's own kept): fails the write of every
    batch holding a decision event, as a lost database would."""

    def __init__(self, runtime: Runtime) -> None:
        self.kept = runtime.audit._observer

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        if any(r.action.startswith("tool:") for r in rows):
            raise RuntimeError("the write of the decision fails")
        if self.kept is not None:
            self.kept.appending(tx, head, rows)

    def appended(self, head: ChainHead) -> None:
        if self.kept is not None:
            self.kept.appended(head)


@pytest.mark.parametrize("how", ["proof_replayed", "grant_uses_exhausted", "audit_unavailable"])
def test_a_call_whose_write_refuses_it_leaves_no_approval_to_decide(
    runtime: Runtime, agents: Agents, how: str,
) -> None:
    """Policy asks a human about the call, and its own write (its proof's nonce, its use,
    its event) refuses it: no request is made, none a human could approve, none in the
    log; the approval of a call that was denied would be an approval of nothing."""
    grant = agents.grant(SUPPORT, REFUND, max_uses=1 if how == "grant_uses_exhausted"
                         else None)
    proof = agents.proof(grant)
    assert runtime.enforcer.decide_call(grant.token, proof, ToolCall(
        "crm/issue_refund", refund(1_000), target=TARGET)).is_allowed
    failing = _FailsDecisions(runtime)
    if how == "audit_unavailable":
        runtime.audit.observe(failing)
    try:
        asked = runtime.enforcer.decide_call(
            grant.token, proof if how == "proof_replayed" else agents.proof(grant),
            ToolCall("crm/issue_refund", refund(25_000), target=TARGET))
    finally:
        runtime.audit.observe(failing.kept)  # type: ignore[arg-type]
    assert (asked.outcome, asked.code, asked.approval) == (Outcome.DENY, how, None)
    assert runtime.approvals.list() == []
    assert search_events(runtime.store, EventFilter(action="approval.request")) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_call_whose_grant_is_revoked_before_its_write_commits_leaves_no_approval(
    runtime: Runtime, agents: Agents,
) -> None:
    """The revocation of the call's grant, committed by another connection while the
    call's write waits for it: the call is refused ``grant_revoked``, and no request
    for it is made."""
    grant = agents.grant(SUPPORT, REFUND)
    verdicts: list[CallVerdict] = []
    with runtime.store.engine.connect() as revoking:
        revoking.execute(text("UPDATE leases SET revoked_at = now(), revoked_reason = 'leaked' "
                              "WHERE id = :grant"), {"grant": grant.grant_id})
        caller = threading.Thread(target=lambda: verdicts.append(
            agents.call(grant, "crm/issue_refund", refund(25_000))))
        caller.start()
        until_waiting_on_a_lock(revoking, caller, verdicts)
        revoking.commit()
    caller.join(30)
    assert [(v.outcome, v.code, v.approval) for v in verdicts] == [
        (Outcome.DENY, "grant_revoked", None)]
    assert runtime.approvals.list() == []
    assert search_events(runtime.store, EventFilter(action="approval.request")) == []

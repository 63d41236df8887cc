""""Approve similar within this task": a narrow, short, use-limited pre-approval grant."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from proctor.approvals import ApprovalStatus, SimilarApprovals, similar_scope
from proctor.audit import ActorType, ChainHead, EventFilter, EventRow, WriteCursor, search_events
from proctor.clock import FrozenClock
from proctor.errors import ApprovalError, GrantError, ProctorError
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.policy import Outcome
from proctor.runtime import Runtime, issuer_for
from tests.enforcement.conftest import APPROVER, CODER, OWNER, SUPPORT, Agents, refund
from tests.enforcement.lock_waits import until_waiting_on_a_lock

REFUND = [{"tool": "crm/issue_refund"}]
EMAIL = [{"tool": "email/send_email"}]


def delegated_refunds(runtime: Runtime, agents: Agents, to_agent: str = SUPPORT
                      ) -> tuple[IssuedGrant, IssuedGrant]:
    """The coder's grant of refunds, and the child it hands on to ``to_agent`` (five
    minutes)."""
    parent = agents.grant(CODER, REFUND)
    proof = make_proof(agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                       target=issuer_for(runtime.settings), now=runtime.clock.now())
    child = runtime.grants.exchange(parent.token, proof, to_agent=to_agent, ttl_seconds=300,
                                    scope=GrantScope.from_json({"tools": REFUND}))
    assert isinstance(child, IssuedGrant)
    return parent, child


def similar(runtime: Runtime) -> SimilarApprovals:
    return SimilarApprovals(runtime.store, runtime.clock, runtime.approvals, runtime.grants)


def test_similar_calls_of_the_task_run_without_asking_until_the_uses_run_out(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    approval, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER,
                                             max_uses=2, comment="same customer, today")
    assert approval.status is ApprovalStatus.APPROVED
    assert (pre.tool_id, pre.max_uses, pre.approved_by) == ("crm/issue_refund", 2, APPROVER)
    # the waiting call itself runs on its own (exact) approval
    done = anyio.run(lambda: runtime.enforcer.await_approval(pending, timeout=5))
    assert done.is_allowed
    # two similar calls: same customer, at most the approved amount
    for amount in (20_000, 25_000):
        verdict = agents.call(grant, "crm/issue_refund", refund(amount))
        assert (verdict.outcome, verdict.code) == (Outcome.ALLOW, "allow")
        assert verdict.approval is not None and verdict.approval.id == approval.id
        assert any(r.startswith("approved:") for r in verdict.reasons)
    assert similar(runtime).get(pre.grant_id).uses == 2
    spent = agents.call(grant, "crm/issue_refund", refund(20_000))
    assert spent.outcome is Outcome.APPROVAL_REQUIRED


def test_other_arguments_more_arguments_or_a_larger_amount_ask_again(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    similar(runtime).approve(pending.approval.id, approver=APPROVER)
    other_customer = {"customer_id": "c-2002", "amount_cents": 10_000}
    more_arguments = {**refund(10_000), "reason": "goodwill"}
    for args in (other_customer, refund(25_001), more_arguments):
        verdict = agents.call(grant, "crm/issue_refund", args)
        assert verdict.outcome is Outcome.APPROVAL_REQUIRED, args
        assert verdict.approval is not None and verdict.approval.id != pending.approval.id


def test_arguments_named_in_vary_may_differ(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, EMAIL)
    first = {"to": "ana@partner.example", "subject": "Your refund", "body": "Done."}
    pending = agents.call(grant, "email/send_email", first)
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER,
                                      vary=["subject", "body"])
    assert pre.scope.as_json() == {"tools": [
        {"tool": "email/send_email", "args": {"to": {"in": ["ana@partner.example"]}}}]}
    follow_up = {"to": "ana@partner.example", "subject": "Follow-up", "body": "Anything else?"}
    assert agents.call(grant, "email/send_email", follow_up).is_allowed
    elsewhere = {**follow_up, "to": "eve@evil.example"}
    assert agents.call(grant, "email/send_email", elsewhere).outcome \
        is Outcome.APPROVAL_REQUIRED


def test_the_pre_approval_is_a_revocable_node_of_the_tasks_lease_tree(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER)
    tree = runtime.grants.tree(grant.claims.task_id)
    node = next(n for n in tree if n.id == pre.grant_id)
    assert (node.parent_id, node.kind) == (grant.claims.task_id, "grant")
    runtime.grants.revoke(pre.accessor, "changed my mind")
    assert agents.call(grant, "crm/issue_refund", refund(10_000)).outcome \
        is Outcome.APPROVAL_REQUIRED


def test_it_expires_and_never_reaches_another_task(
    runtime: Runtime, agents: Agents, frozen: FrozenClock,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    similar(runtime).approve(pending.approval.id, approver=APPROVER, ttl_seconds=120)
    other_task = agents.grant(SUPPORT, REFUND)
    assert agents.call(other_task, "crm/issue_refund", refund(10_000)).outcome \
        is Outcome.APPROVAL_REQUIRED
    frozen.advance(seconds=121)
    assert agents.call(grant, "crm/issue_refund", refund(10_000)).outcome \
        is Outcome.APPROVAL_REQUIRED


def test_the_approvers_grant_is_audited_as_their_own_event(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER)
    events = [e.event for e in search_events(runtime.store,
                                             EventFilter(actor_type=ActorType.HUMAN))]
    by_action = {e["action"]: e for e in events}
    assert sorted(by_action) == ["approval.grant", "approval.similar"]
    event = by_action["approval.similar"]
    assert (event["actor"]["id"], event["target"]) == (APPROVER, f'Grant::"{pre.accessor}"')
    assert event["concerns"] == pending.event_id
    assert "c-1001" not in str(event)  # argument values stay out of the log


@pytest.mark.parametrize(("args", "vary", "code"), [
    ({"customer_id": "[masked]", "amount_cents": 9000}, [], "approval_similar_masked"),
    ({"customer_id": ["c-1"], "amount_cents": 9000}, [], "approval_similar_unsupported"),
    ({"customer_id": "c-1", "amount_cents": 9000}, ["nope"], "approval_similar_invalid"),
    ({"customer_id": "c-1"}, ["customer_id"], "approval_similar_invalid"),
])
def test_a_scope_that_cannot_be_pinned_is_refused(args: dict[str, object], vary: list[str],
                                                  code: str) -> None:
    with pytest.raises(ApprovalError) as refused:
        similar_scope("crm/issue_refund", args, vary)
    assert refused.value.code == code


def test_a_refused_similar_approval_changes_nothing(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    with pytest.raises(ApprovalError) as own:
        similar(runtime).approve(pending.approval.id, approver=OWNER)
    assert own.value.code == "approval_own_request"
    with pytest.raises(ApprovalError) as too_long:
        similar(runtime).approve(pending.approval.id, approver=APPROVER, ttl_seconds=7200)
    assert too_long.value.code == "approval_similar_invalid"
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.PENDING
    assert similar(runtime).for_task(grant.claims.task_id) == []
    assert [n.kind for n in runtime.grants.tree(grant.claims.task_id)] == ["task", "grant"]


@pytest.mark.parametrize("revoked", ["grant", "delegator"])
def test_a_revocation_committing_after_the_check_of_the_approved_calls_line_issues_nothing(
    runtime: Runtime, other: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch,
    revoked: str,
) -> None:
    """The approved call's grant line was checked through this node's lease view before
    the write, and the write confirmed the task's line only: a revocation of that grant
    or its delegator committing on another node in between left an approved request and
    a pre-approval grant listed live (never spendable: a spend walks the line again) with
    its ``approval.similar`` event. The write now reads that line itself."""
    parent, child = delegated_refunds(runtime, agents)
    pending = agents.call(child, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    approving = similar(runtime)
    check = approving._check_live
    checked: list[object] = []

    def then_revoked(approval: Any) -> Any:
        found = check(approval)
        checked.append(found)  # the line read live: now it is revoked, on another node
        other.grants.revoke((child if revoked == "grant" else parent).accessor, "leaked")
        return found

    monkeypatch.setattr(approving, "_check_live", then_revoked)
    before = search_events(runtime.store, EventFilter(action="grant:issue"))
    with pytest.raises(GrantError) as refused:
        approving.approve(pending.approval.id, approver=APPROVER)
    assert checked and refused.value.code == "grant_revoked"
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.PENDING
    assert similar(runtime).for_task(parent.claims.task_id) == []
    assert [n.id for n in runtime.grants.tree(parent.claims.task_id)] == [
        parent.claims.task_id, parent.grant_id, child.grant_id]
    for action in ("approval.grant", "approval.similar"):
        assert search_events(runtime.store, EventFilter(action=action)) == []
    assert search_events(runtime.store, EventFilter(action="grant:issue")) == before


@pytest.mark.parametrize("revoked", ["grant", "parent", "expired"])
def test_the_calls_of_a_revoked_or_expired_grant_are_never_pre_approved(
    runtime: Runtime, agents: Agents, frozen: FrozenClock, revoked: str,
) -> None:
    # The grant of the waiting call was revoked (it leaked; its delegator's line was
    # stopped) or expired before a human approved similar calls: the pre-approval was
    # issued all the same, live for the agent in the task, bound to the dead grant's key
    # (found by review).
    parent, child = delegated_refunds(runtime, agents)
    pending = agents.call(child, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    if revoked == "expired":
        frozen.advance(seconds=301)
    else:
        runtime.grants.revoke((child if revoked == "grant" else parent).accessor, "leaked")
    with pytest.raises(GrantError) as refused:
        similar(runtime).approve(pending.approval.id, approver=APPROVER)
    assert refused.value.code == ("grant_expired" if revoked == "expired"
                                  else "grant_revoked")
    assert runtime.approvals.get(pending.approval.id).status is ApprovalStatus.PENDING
    assert similar(runtime).for_task(parent.claims.task_id) == []


def test_approving_similar_twice_is_refused_and_issues_nothing(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    similar(runtime).approve(pending.approval.id, approver=APPROVER)
    with pytest.raises(ApprovalError) as twice:
        similar(runtime).approve(pending.approval.id, approver=APPROVER)
    assert twice.value.code == "approval_already_decided"
    assert len(similar(runtime).for_task(grant.claims.task_id)) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pre_approval_revoked_before_the_calls_write_commits_allows_nothing(
    runtime: Runtime, agents: Agents,
) -> None:
    """Strict revocation: the call spent the pre-approval, then its revocation committed,
    then the call's write; the write confirmed the grant's line only, and the call was
    allowed on a revoked pre-approval. (The audit head held by the test orders the three,
    on PostgreSQL. The revocation is the lease tree's own, as one made alone while the log
    cannot be written: an audited revocation is written by the audit writer, behind that
    head, and would never commit while the test holds it.)"""
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER)
    verdicts: list[Any] = []
    with runtime.store.engine.connect() as holding:
        holding.exec_driver_sql("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        caller = threading.Thread(target=lambda: verdicts.append(
            agents.call(grant, "crm/issue_refund", refund(10_000))))
        caller.start()
        while similar(runtime).get(pre.grant_id).uses == 0:  # spent; its write waits
            assert caller.is_alive(), verdicts
            caller.join(0.01)
        revoker = threading.Thread(target=lambda: runtime.grants.leases.revoke_subtree(
            [pre.grant_id], "changed my mind"))
        revoker.start()
        revoker.join(30)  # committed, the call's write still waiting on the head
        assert not revoker.is_alive()
        assert similar(runtime).get(pre.grant_id).revoked_at
        holding.rollback()
    caller.join(30)
    revoker.join(30)
    assert len(verdicts) == 1
    assert not verdicts[0].is_allowed
    assert verdicts[0].code == "grant_revoked"


def test_a_pre_approval_under_an_ended_task_is_listed_revoked_before_it_is_marked(
    runtime: Runtime, agents: Agents,
) -> None:
    """The listing shows what the checks decide: the task's revocation, marked alone
    (its process died before the marker thread ran), revokes the grant under it."""
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER)
    with runtime.store.transaction() as conn:
        runtime.grants.leases.revoke_in(conn, [grant.claims.task_id], "ended")
    node = runtime.grants.leases.node(pre.grant_id)
    assert node is not None and not node.is_revoked  # not marked
    listed = similar(runtime).for_task(grant.claims.task_id)
    assert [(s.grant_id, s.as_json()["revoked"]) for s in listed] == [(pre.grant_id, True)]


def test_similar_calls_of_a_delegated_agent_are_pre_approved_for_that_agent(
    runtime: Runtime, agents: Agents,
) -> None:
    # The coder's task; the coder hands crm/issue_refund on to the support agent, whose
    # large refund waits for a human. Approving similar calls issues the pre-approval
    # grant for the support agent (the agent whose calls it approves, bound to the key of
    # its approved call's grant), decided and audited as the support agent's issuance,
    # not the task's agent's (found by review: it was the coder's grant).
    parent, child = delegated_refunds(runtime, agents)
    pending = agents.call(child, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None and pending.approval.agent_id == SUPPORT
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER)
    node = next(n for n in runtime.grants.tree(child.claims.task_id) if n.id == pre.grant_id)
    assert node.agent_id == SUPPORT
    issued = [e.event for e in search_events(runtime.store, EventFilter(action="grant:issue"))
              if e.event["target"] == 'Tool::"crm/issue_refund"']
    # the coder's grant and the exchange (decided for the coder as delegator and for the
    # support agent), then the pre-approval: the support agent's
    assert sorted(e["actor"]["id"] for e in issued) == [CODER, CODER, SUPPORT, SUPPORT]
    assert agents.call(child, "crm/issue_refund", refund(20_000)).is_allowed
    # the coder's own calls in the task are never pre-approved by it
    assert agents.call(parent, "crm/issue_refund", refund(20_000)).outcome \
        is not Outcome.ALLOW


class _Kept:
    """An observer of the audit writer that passes each batch on to the runtime's own."""

    def __init__(self, runtime: Runtime) -> None:
        self.kept = runtime.audit._observer

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        if self.kept is not None:
            self.kept.appending(tx, head, rows)

    def appended(self, head: ChainHead) -> None:
        if self.kept is not None:
            self.kept.appended(head)


class _Meanwhile:
    """The clock "approve similar" reads once it has found the request decidable: at its
    first reading, another approver's denial of the request commits (their own write,
    through the queue), or the request's time runs out."""

    def __init__(self, runtime: Runtime, frozen: FrozenClock, approval_id: str,
                 what: str) -> None:
        self.runtime, self.frozen = runtime, frozen
        self.approval_id, self.what = approval_id, what
        self.done = False

    def now(self) -> datetime:
        if not self.done:
            self.done = True
            if self.what == "denied":
                self.runtime.approvals.decide(self.approval_id, approver="dave@acme.example",
                                              approve=False)
            else:
                self.frozen.advance(seconds=self.runtime.approvals.ttl_seconds)
        return self.frozen.now()

    def monotonic(self) -> float:
        return self.frozen.monotonic()


@pytest.mark.parametrize("what", ["denied", "expired"])
def test_an_approval_decided_or_expired_while_approving_similar_gives_nothing(
    runtime: Runtime, agents: Agents, frozen: FrozenClock, what: str,
) -> None:
    """The approval's decision and what it gives are one write: a request another
    approver denied (committed), or whose time ran out, after "approve similar" found it
    pending and before its write, is refused, and no grant was issued for it (before,
    the pre-approval grant was issued, audited, first, and revoked once the decision
    failed: a grant of an approval never given, live until that revocation, and for
    good if the revocation failed too)."""
    runtime.approvals.ttl_seconds = 60  # the request's time runs out before its grant's
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    meanwhile = _Meanwhile(runtime, frozen, pending.approval.id, what)
    approving = SimilarApprovals(runtime.store, meanwhile, runtime.approvals, runtime.grants)
    with pytest.raises(ApprovalError) as refused:
        approving.approve(pending.approval.id, approver=APPROVER)
    denied = what == "denied"
    assert meanwhile.done and refused.value.code == (
        "approval_already_decided" if denied else "approval_expired")
    assert runtime.approvals.get(pending.approval.id).status is (
        ApprovalStatus.DENIED if denied else ApprovalStatus.EXPIRED)
    assert similar(runtime).for_approval(pending.approval.id) == []
    assert [n.id for n in runtime.grants.tree(grant.claims.task_id)] == [
        grant.claims.task_id, grant.grant_id]
    issued = search_events(runtime.store, EventFilter(action="grant:issue"))
    assert [e.event["actor"]["id"] for e in issued] == [SUPPORT]  # the call's own grant
    assert search_events(runtime.store, EventFilter(action="approval.grant")) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_denial_committing_while_approve_similar_writes_gives_nothing(
    runtime: Runtime, agents: Agents,
) -> None:
    """Another approver's denial holds the request's row while "approve similar" writes
    (past every check made before its write): the write waits for it, then finds the
    request decided and writes nothing, no grant (before, the grant was written first,
    alone, then revoked when the approval could not be decided)."""
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    failed: list[ProctorError] = []

    def approve() -> None:
        try:
            similar(runtime).approve(approval_id, approver=APPROVER)
        except ProctorError as exc:
            failed.append(exc)

    approval_id = pending.approval.id
    with runtime.store.engine.connect() as denying:
        denying.execute(text("UPDATE approvals SET status = 'denied', decided_by = :by, "
                             "decided_at = now() WHERE id = :id"),
                        {"by": "dave@acme.example", "id": approval_id})
        approving = threading.Thread(target=approve)
        approving.start()
        until_waiting_on_a_lock(denying, approving, failed)
        denying.commit()
    approving.join(30)
    assert [e.code for e in failed] == ["approval_already_decided"]
    assert runtime.approvals.get(approval_id).status is ApprovalStatus.DENIED
    assert similar(runtime).for_approval(approval_id) == []
    assert [n.id for n in runtime.grants.tree(grant.claims.task_id)] == [
        grant.claims.task_id, grant.grant_id]
    assert search_events(runtime.store, EventFilter(action="approval.grant")) == []


class _SeenAndFailed(_Kept):
    """The audit writer's observer (the runtime's own kept): in the write of an
    ``approval.grant`` event, reads the approval as any other process would (its own
    connection, outside the write) and fails the write, as a lost database would."""

    def __init__(self, runtime: Runtime, approval_id: str, action: str) -> None:
        super().__init__(runtime)
        self.runtime, self.approval_id = runtime, approval_id
        self.action = action
        self.seen: list[ApprovalStatus] = []

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        if any(r.action == self.action for r in rows):
            self.seen.append(self.runtime.approvals.get(self.approval_id).status)
            raise RuntimeError("the write of the approval's event fails")
        if self.kept is not None:
            self.kept.appending(tx, head, rows)


@pytest.mark.parametrize("failing", ["approval.grant", "grant:issue", "approval.similar"])
def test_an_approval_is_never_seen_approved_before_its_event_is_written(
    runtime: Runtime, agents: Agents, failing: str,
) -> None:
    """A human's decision on an approval and its event are one write: while the event is
    being written nobody sees the request approved (before, the decision committed
    first and the event after it: a waiting call could consume an approval whose event
    then failed, and was undone to pending after the call ran), and a failed write
    leaves the request pending, no event, nothing to undo. "Approve similar"'s
    ``approval.similar`` event goes in the same write (before, after it: the request
    stayed approved, its pre-approval revoked), and so does its grant with its
    issuance's events (before, issued first, in a write of its own, and revoked when the
    approval's failed): no grant was issued."""
    grant = agents.grant(SUPPORT, REFUND)
    asked = agents.call(grant, "crm/issue_refund", refund(25_000))
    approval_id = asked.approval.id if asked.approval is not None else ""
    meanwhile = _SeenAndFailed(runtime, approval_id, failing)
    runtime.audit.observe(meanwhile)
    try:
        with pytest.raises(ProctorError) as failed:
            similar(runtime).approve(approval_id, approver=APPROVER)
    finally:
        runtime.audit.observe(meanwhile.kept)  # type: ignore[arg-type]
    assert (failed.value.code, meanwhile.seen) == ("audit_unavailable",
                                                   [ApprovalStatus.PENDING])
    assert runtime.approvals.get(approval_id).status is ApprovalStatus.PENDING
    assert [n.id for n in runtime.grants.tree(grant.claims.task_id)] == [
        grant.claims.task_id, grant.grant_id]
    issued = search_events(runtime.store, EventFilter(action="grant:issue"))
    assert [e.event["actor"]["id"] for e in issued] == [SUPPORT]  # the call's own grant
    # decided again once the log is back: approved, with its one event
    approved = runtime.approvals.decide(approval_id, approver=APPROVER, approve=True)
    assert approved.status is ApprovalStatus.APPROVED
    events = search_events(runtime.store, EventFilter(action="approval.grant"))
    assert [e.event["target"] for e in events] == [f"Approval::\"{approval_id}\""]


def test_a_pinned_amount_allows_no_negative_or_lower_signed_value(
    runtime: Runtime, agents: Agents,
) -> None:
    # A deployment where every refund waits for a human. Approving similar refunds of
    # 250.00 pinned the amount to "at most 250.00": a refund of -10,000.00 (a charge
    # to the customer) is at most that, and spent the pre-approval (found by review).
    path = runtime.settings.policy_dir / "support.cedar"
    text = path.read_text()
    gated = "when { context.args.amount_cents > 5000 };"
    assert text.count(gated) == 1
    path.write_text(text.replace(gated, ";"))
    runtime.policies.load_directory(runtime.settings.policy_dir)
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER, max_uses=5)
    for amount in (-1_000_000, -1):
        verdict = agents.call(grant, "crm/issue_refund", refund(amount))
        assert verdict.outcome is Outcome.APPROVAL_REQUIRED, amount
    assert agents.call(grant, "crm/issue_refund", refund(0)).is_allowed  # 0 to 250.00
    assert agents.call(grant, "crm/issue_refund", refund(24_000)).is_allowed
    assert similar(runtime).get(pre.grant_id).uses == 2
    # an approved negative value is pinned exactly: nothing lower, nothing higher
    negative = agents.call(grant, "crm/issue_refund", refund(-500))
    assert negative.approval is not None
    _, exact = similar(runtime).approve(negative.approval.id, approver=APPROVER)
    assert exact.scope.as_json()["tools"][0]["args"]["amount_cents"] == {"in": [-500]}
    for amount in (-100_000, -499):
        assert agents.call(grant, "crm/issue_refund", refund(amount)).outcome \
            is Outcome.APPROVAL_REQUIRED, amount
    assert agents.call(grant, "crm/issue_refund", refund(-500)).is_allowed


def test_a_pre_approval_is_spent_only_along_the_line_its_approver_was_checked_for(
    runtime: Runtime, agents: Agents,
) -> None:
    # Dan approves similar refunds of the support agent, handed them by the coder: he
    # owns neither, so he may (separation of duties is checked for the call's line).
    # Then Dan's own agent takes part: the coder hands the refunds to it, and it hands
    # them on to the support agent. Dan may not approve a call of that line himself
    # (93ca59c), yet the pre-approval he gave for the other line let its large refunds
    # through without asking (found by review). A pre-approval is spent only by calls
    # along the line of the call it approved now.
    from cryptography.hazmat.primitives.asymmetric import ec
    from joserfc.jwk import ECKey

    from proctor.identity import OwnKeyProof
    from tests.identity.factories import manifest, public_jwk

    dans = "spiffe://acme.example/agent/dans-bot"
    key = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(dans, owner="dan@acme.example", groups=["support-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    agents.keys[dans] = private
    runtime.enforcer.refresh_principals()
    parent, child = delegated_refunds(runtime, agents)
    pending = agents.call(child, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    similar(runtime).approve(pending.approval.id, approver="dan@acme.example")
    assert agents.call(child, "crm/issue_refund", refund(20_000)).is_allowed  # its line

    def handed(holder: IssuedGrant, to_agent: str) -> IssuedGrant:
        proof = make_proof(agents.keys[holder.claims.agent_id], holder.token,
                           method=EXCHANGE_METHOD, target=issuer_for(runtime.settings),
                           now=runtime.clock.now())
        made = runtime.grants.exchange(holder.token, proof, to_agent=to_agent,
                                       ttl_seconds=240,
                                       scope=GrantScope.from_json({"tools": REFUND}))
        assert isinstance(made, IssuedGrant)
        return made

    through_dans = handed(handed(parent, dans), SUPPORT)
    verdict = agents.call(through_dans, "crm/issue_refund", refund(20_000))
    assert verdict.outcome is Outcome.APPROVAL_REQUIRED
    assert verdict.approval is not None
    with pytest.raises(ApprovalError) as refused:  # and Dan may not approve it himself
        runtime.approvals.decide(verdict.approval.id, approver="dan@acme.example",
                                 approve=True)
    assert refused.value.code == "approval_own_request"


def test_spending_a_pre_approval_requires_the_calls_delegation_line(runtime: Runtime) -> None:
    # `line` defaulted to no line at all: a caller that forgot it spent a pre-approval
    # made for a direct call on a delegated one, the line's check skipped
    from proctor.approvals.preapproval import use_similar

    call: dict[str, Any] = {"agent_id": SUPPORT, "task_id": "task-x", "tool_id": "crm/issue_refund",
            "args": {}}
    with pytest.raises(TypeError, match="line"):
        runtime.approvals.consume_similar(**call)
    with pytest.raises(TypeError, match="line"):
        use_similar(runtime.store, runtime.clock, **call)
    assert runtime.approvals.consume_similar(**call, line=[SUPPORT]) is None


def another_on_the_line(runtime: Runtime, agents: Agents, parent: IssuedGrant,
                        revoked: str) -> IssuedGrant:
    """Another grant of the support agent in the task, handed on by the coder as the
    approved call's was: from ``parent`` itself (``revoked`` the approved call's grant)
    or from a new grant of the task (``revoked`` its delegator, ``parent``)."""
    again = (parent if revoked == "grant" else
             runtime.grants.issue(parent.claims.task_id, GrantScope.from_json({"tools": REFUND})))
    proof = make_proof(agents.keys[CODER], again.token, method=EXCHANGE_METHOD,
                       target=issuer_for(runtime.settings), now=runtime.clock.now())
    other = runtime.grants.exchange(again.token, proof, to_agent=SUPPORT, ttl_seconds=300,
                                    scope=GrantScope.from_json({"tools": REFUND}))
    assert isinstance(other, IssuedGrant)
    return other


def approved_for_a_delegated_call(runtime: Runtime, agents: Agents, ttl_seconds: int = 600
                                  ) -> tuple[IssuedGrant, IssuedGrant, Any]:
    """The coder's grant, the child it handed on to the support agent (five minutes), and
    the pre-approval of calls similar to the child's waiting call."""
    parent, child = delegated_refunds(runtime, agents)
    pending = agents.call(child, "crm/issue_refund", refund(25_000))
    assert pending.approval is not None
    _, pre = similar(runtime).approve(pending.approval.id, approver=APPROVER,
                                      ttl_seconds=ttl_seconds)
    return parent, child, pre


@pytest.mark.parametrize("revoked", ["grant", "delegator"])
def test_a_pre_approval_ends_with_the_grant_of_the_call_it_approved(
    runtime: Runtime, agents: Agents, revoked: str,
) -> None:
    # approving similar calls is refused for the calls of a revoked grant (it leaked, its
    # delegator's line was stopped): the pre-approval stands on that grant. Revoked after
    # the approval, it lived on: another grant of the same agent in the task, along the
    # same line, spent it without asking anyone
    parent, child, pre = approved_for_a_delegated_call(runtime, agents)
    runtime.grants.revoke((child if revoked == "grant" else parent).accessor, "leaked")
    other = another_on_the_line(runtime, agents, parent, revoked)
    verdict = agents.call(other, "crm/issue_refund", refund(20_000))
    assert verdict.outcome is Outcome.APPROVAL_REQUIRED, verdict.reasons
    assert similar(runtime).get(pre.grant_id).uses == 0


@pytest.mark.parametrize("revoked", ["grant", "delegator"])
def test_a_revocation_of_the_approved_calls_line_before_the_write_commits_allows_nothing(
    runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch, revoked: str,
) -> None:
    """Strict revocation: the call spent the pre-approval (the approved call's grant
    and its line read unrevoked then), then a revocation of that grant or its delegator
    committed, then the call's write. The write confirmed the call's own line and the
    pre-approval's node only, so the call was allowed on a pre-approval whose grant had
    been revoked before the call's own write committed. The revocation is made right
    after the spend returns, before the enforcer goes on to the write."""
    parent, child, pre = approved_for_a_delegated_call(runtime, agents)
    other = another_on_the_line(runtime, agents, parent, revoked)
    spend = runtime.approvals.consume_similar
    spent: list[object] = []

    def then_revoked(**call: Any) -> Any:
        got = spend(**call)
        spent.append(got)
        if got is not None:  # spent: the revocation commits before the call's write
            runtime.grants.revoke((child if revoked == "grant" else parent).accessor,
                                  "leaked")
        return got

    monkeypatch.setattr(runtime.approvals, "consume_similar", then_revoked)
    verdict = agents.call(other, "crm/issue_refund", refund(20_000))
    assert spent and spent[0] is not None  # the window was reached: spent, then revoked
    assert not verdict.is_allowed, verdict.reasons
    assert verdict.code == "grant_revoked"
    assert "pre-approval" in verdict.reasons[0]
    assert similar(runtime).get(pre.grant_id).uses == 1  # final: that use stays spent
    monkeypatch.undo()  # and no later call of that line spends it
    assert agents.call(other, "crm/issue_refund", refund(20_000)).outcome \
        is Outcome.APPROVAL_REQUIRED


def test_a_pre_approval_ends_when_the_grant_of_the_call_it_approved_expires(
    runtime: Runtime, agents: Agents, frozen: FrozenClock,
) -> None:
    # the approved call's grant was handed on for five minutes: what was approved for it
    # stood ten (the default), so after that grant had expired another grant of the agent
    # along the same line spent it without asking anyone
    # asked for half an hour (the issuance policy would refuse a trusted agent more than
    # 15 minutes): what is issued ends with the approved call's grant, five minutes
    parent, child, pre = approved_for_a_delegated_call(runtime, agents, ttl_seconds=1800)
    assert pre.expires_at is not None and child.claims.expires_at is not None
    assert pre.expires_at.timestamp() <= child.claims.expires_at
    frozen.advance(seconds=301)
    other = another_on_the_line(runtime, agents, parent, "delegator")
    verdict = agents.call(other, "crm/issue_refund", refund(20_000))
    assert verdict.outcome is Outcome.APPROVAL_REQUIRED, verdict.reasons
    assert similar(runtime).get(pre.grant_id).uses == 0

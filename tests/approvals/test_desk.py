"""The approver's desk: separation of duties comes from the deployment's policies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proctor.approvals import ApprovalDesk, ApprovalStatus, SimilarTerms
from proctor.cli.runtime import Runtime
from proctor.errors import ApprovalError
from tests.enforcement.conftest import APPROVER, OWNER, SUPPORT, Agents, refund

REFUND = [{"tool": "crm/issue_refund"}]


def desk(runtime: Runtime) -> ApprovalDesk:
    return ApprovalDesk(runtime.store, runtime.clock, runtime.approvals, runtime.grants,
                        runtime.engine, audit=runtime.audit)


def let_owners_approve_large_refunds(runtime: Runtime) -> None:
    path = runtime.settings.policy_dir / "support.cedar"
    text = path.read_text()
    marked = '@approval("refunds over 50.00 need a human\'s approval")\n'
    assert marked in text
    path.write_text(text.replace(marked, marked + '@owner_may_approve("true")\n'))
    runtime.policies.load_directory(runtime.settings.policy_dir)


def test_by_default_the_owner_may_deny_but_not_approve(runtime: Runtime,
                                                         agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    first = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    second = agents.call(grant, "crm/issue_refund", refund(30_000)).approval
    assert first is not None and second is not None
    assert not desk(runtime).may_decide(first, OWNER)
    with pytest.raises(ApprovalError) as own:
        desk(runtime).decide(first.id, approver=OWNER, approve=True)
    assert own.value.code == "approval_own_request"
    with pytest.raises(ApprovalError):
        desk(runtime).decide(first.id, approver=OWNER, approve=True, similar=SimilarTerms())
    assert runtime.approvals.get(first.id).status is ApprovalStatus.PENDING
    denied = desk(runtime).decide(second.id, approver=OWNER, approve=False, comment="no")
    assert denied.approval.status is ApprovalStatus.DENIED


def test_a_policy_may_let_the_owner_approve(runtime: Runtime, agents: Agents) -> None:
    let_owners_approve_large_refunds(runtime)
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    assert desk(runtime).may_decide(pending, OWNER)
    decided = desk(runtime).decide(pending.id, approver=OWNER, approve=True)
    assert decided.approval.status is ApprovalStatus.APPROVED
    assert decided.approval.decided_by == OWNER


def test_a_policy_removed_since_the_request_counts_as_no(runtime: Runtime,
                                                           agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    forged = pending.request | {"policy_ids": ["no-such-policy"]}
    assert desk(runtime).owner_may_approve(pending) is False  # the default
    let_owners_approve_large_refunds(runtime)
    assert desk(runtime).owner_may_approve(pending) is True
    assert desk(runtime).owner_may_approve(replace(pending, request=forged)) is False


def test_similar_terms_issue_a_pre_approval_grant(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    decided = desk(runtime).decide(pending.id, approver=APPROVER, approve=True,
                                   similar=SimilarTerms(ttl_seconds=300, max_uses=3))
    assert decided.similar is not None
    shown = decided.as_json()
    assert shown["similar_grant"]["max_uses"] == 3
    assert shown["approval"]["status"] == "approved"
    assert agents.call(grant, "crm/issue_refund", refund(1_000 + 5_000)).is_allowed

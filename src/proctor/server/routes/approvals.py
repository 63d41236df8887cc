"""Approvals: the calls waiting for a human — list, read, approve, deny.

Deciding is ``api:approval.decide``, a governing action: the control-plane
policies give it to humans with the approver (or admin) role and forbid it to
every agent — an agent's attempt is a 403 and an audit event. The approver
is the authenticated human, never a field of the body. Separation of duties
comes from the deployment's policies (``@owner_may_approve``, see
``docs/approvals.md``). Arguments are shown masked, as the request keeps them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from proctor.approvals import (
    Approval,
    ApprovalDesk,
    ApprovalStatus,
    Decided,
    SimilarTerms,
    approval_json,
)
from proctor.approvals.similar import DEFAULT_MAX_USES, DEFAULT_TTL_SECONDS, MAX_USES
from proctor.codes import Code
from proctor.errors import ApprovalError
from proctor.server.bodies import RequestBody
from proctor.server.control import entity, service
from proctor.server.deps import Call, CallContext
from proctor.server.problems import problem_responses

__all__ = ["approval_resource", "desk_for", "router"]

router = APIRouter(tags=["approvals"])

ApprovalId = Annotated[str, Path(min_length=1, max_length=64)]
Comment = Annotated[str, Field(max_length=2000)]


class Similar(RequestBody):
    """Also approve similar calls within the task: a narrow pre-approval grant."""

    vary: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)] = Field(
        default_factory=list, description="Arguments that may differ; every other is pinned")
    ttl_seconds: Annotated[int, Field(ge=1, le=3600)] = DEFAULT_TTL_SECONDS
    max_uses: Annotated[int, Field(ge=1, le=MAX_USES)] = DEFAULT_MAX_USES


class Approve(RequestBody):
    comment: Comment = ""
    similar: Similar | None = None


class Deny(RequestBody):
    comment: Comment = ""


class ApprovalView(BaseModel):
    id: str
    status: str
    agent: str
    task: str
    tool: str
    grant: str
    on_behalf_of: str
    request: dict[str, Any] = Field(description=(
        "What the approver sees: masked arguments, reasons, policy ids, purpose, "
        "delegation chain, trust state, risk score, the decision event's id"))
    created_at: str
    expires_at: str
    decided_by: str | None
    decided_at: str | None
    comment: str | None
    used_at: str | None

    @classmethod
    def of(cls, approval: Approval) -> ApprovalView:
        return cls(**approval_json(approval))


class ApprovalList(BaseModel):
    approvals: list[ApprovalView]


class DecisionView(BaseModel):
    approval: ApprovalView
    similar_grant: dict[str, Any] | None = None

    @classmethod
    def of(cls, decided: Decided) -> DecisionView:
        return cls(approval=ApprovalView.of(decided.approval),
                   similar_grant=decided.similar.as_json() if decided.similar else None)


def approval_resource(approval: Approval) -> dict[str, Any]:
    return entity("Approval", approval.id, agent=("Agent", approval.agent_id),
                  on_behalf_of=approval.on_behalf_of)


def _approval(call: CallContext, approval_id: str, action: str) -> Approval:
    """The request, once ``action`` on it is allowed; a caller who may not act on any
    request (an agent) is refused even for an id that does not exist."""
    try:
        approval = call.runtime.approvals.get(approval_id)
    except ApprovalError:
        call.require(action, entity("Approval", approval_id, agent=("Agent", ""),
                                    on_behalf_of=""))
        raise
    call.require(action, approval_resource(approval))
    return approval


def desk_for(call: CallContext) -> ApprovalDesk:
    runtime = call.runtime
    return ApprovalDesk(runtime.store, runtime.clock, runtime.approvals, runtime.grants,
                        runtime.engine)


_DECIDE: tuple[Code, ...] = ("approval_unknown", "approval_already_decided", "approval_expired",
           "approval_own_request", "approval_comment_too_long", "reviewer_invalid")
_SIMILAR: tuple[Code, ...] = ("approval_similar_invalid", "approval_similar_masked",
            "approval_similar_unsupported", "issuance_denied", "task_ended", "proof_missing",
            "agent_not_active", "grant_revoked", "grant_expired")


@router.get("/v1/approvals", responses=problem_responses())
def list_approvals(
    call: Call, status: Annotated[ApprovalStatus | None, Query()] = ApprovalStatus.PENDING,
    task: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ApprovalList:
    """Approval requests, newest first; pending (unexpired) ones unless asked otherwise."""
    call.require("api:approval.read", service("approvals"))
    found = call.runtime.approvals.list(status=status, task_id=task, limit=limit)
    return ApprovalList(approvals=[ApprovalView.of(a) for a in found])


@router.get("/v1/approvals/{approval_id}", responses=problem_responses("approval_unknown"))
def read_approval(approval_id: ApprovalId, call: Call) -> ApprovalView:
    """One request with everything an approver needs to decide."""
    approval = _approval(call, approval_id, "api:approval.read")
    return ApprovalView.of(approval)


@router.post("/v1/approvals/{approval_id}/approve",
             responses=problem_responses(*_DECIDE, *_SIMILAR))
def approve(approval_id: ApprovalId, body: Approve, call: Call) -> DecisionView:
    """Approve the waiting call — with ``similar``, also calls like it within its task."""
    approval = _approval(call, approval_id, "api:approval.decide")
    terms = None if body.similar is None else SimilarTerms(
        tuple(body.similar.vary), body.similar.ttl_seconds, body.similar.max_uses)
    decided = desk_for(call).decide(approval.id, approver=call.principal.id, approve=True,
                                    comment=body.comment, similar=terms, source=call.source)
    return DecisionView.of(decided)


@router.post("/v1/approvals/{approval_id}/deny", responses=problem_responses(*_DECIDE))
def deny(approval_id: ApprovalId, body: Deny, call: Call) -> DecisionView:
    """Deny the waiting call."""
    approval = _approval(call, approval_id, "api:approval.decide")
    decided = desk_for(call).decide(approval.id, approver=call.principal.id, approve=False,
                                    comment=body.comment, source=call.source)
    return DecisionView.of(decided)

"""The approver's desk: the one way every human channel (CLI, API, console) decides.

Separation of duties is configured in the deployment's Cedar policies, on the
permit that asks for approval::

    @id("support-large-refund")
    @approval("refunds over 50.00 need a human's approval")
    @owner_may_approve("true")        // default: the owner may not
    permit (principal in Group::"support-agents", ...);

By default the human an agent acts for (its task's ``on_behalf_of``), and the
agent's own owner (they differ for an agent a grant of another's task was delegated
to), may not approve that agent's requests; the ids are compared in canonical form
(:mod:`proctor.human_ids`), so ``Bob@Acme.example`` is ``bob@acme.example``.
A request's owner may approve it only when every ``@approval`` policy that
asked for it says ``@owner_may_approve("true")`` in the policy set active at
the moment of the decision; a policy that has since been removed counts as "no".
Denying is always allowed: stopping a call is never a conflict of interest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proctor.approvals.queue import Approval, ApprovalQueue
from proctor.approvals.similar import (
    DEFAULT_MAX_USES,
    DEFAULT_TTL_SECONDS,
    SimilarApprovals,
    SimilarGrant,
)
from proctor.clock import Clock
from proctor.grants import GrantAuthority
from proctor.identity.people import check_human
from proctor.policy import PolicyEngine
from proctor.store import Store

__all__ = ["OWNER_ANNOTATION", "ApprovalDesk", "Decided", "SimilarTerms"]

OWNER_ANNOTATION = "owner_may_approve"


@dataclass(frozen=True, slots=True)
class SimilarTerms:
    """What "approve similar within this task" may cover: see :mod:`.similar`."""

    vary: tuple[str, ...] = ()
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    max_uses: int = DEFAULT_MAX_USES


@dataclass(frozen=True, slots=True)
class Decided:
    approval: Approval
    similar: SimilarGrant | None = None

    def as_json(self) -> dict[str, Any]:
        return {"approval": approval_json(self.approval),
                "similar_grant": self.similar.as_json() if self.similar else None}


class ApprovalDesk:
    """Deciding approval requests as a human, with separation of duties from policy."""

    def __init__(self, store: Store, clock: Clock, queue: ApprovalQueue,
                 grants: GrantAuthority, engine: PolicyEngine) -> None:
        self.queue = queue
        self._engine = engine
        self.similar = SimilarApprovals(store, clock, queue, grants)

    def owner_may_approve(self, approval: Approval) -> bool:
        """True if every ``@approval`` policy behind the request lets its owner approve."""
        active = self._engine.active
        ids = [str(i) for i in approval.request.get("policy_ids") or ()]
        if active is None or not ids:
            return False
        asking = []
        for pid in ids:
            policy = active.policies.get(pid)
            if policy is None:
                return False
            if "approval" in policy.annotations:
                asking.append(policy)
        return bool(asking) and all(
            p.annotations.get(OWNER_ANNOTATION, "").strip().lower() == "true" for p in asking)

    def may_decide(self, approval: Approval, approver: str, *, approve: bool = True) -> bool:
        """Whether ``approver`` could decide ``approval`` now (for showing buttons)."""
        if not approval.is_pending:
            return False
        return not approve or not self.queue.is_owner(approval, approver) or \
            self.owner_may_approve(approval)

    def decide(self, approval_id: str, *, approver: str, approve: bool, comment: str = "",
               similar: SimilarTerms | None = None, source: str | None = None) -> Decided:
        """Approve (optionally with similar calls of the task) or deny, as ``approver``.

        ``approver`` must be an authenticated human with the approver role: the
        channel checks that. Raises :class:`~proctor.errors.ApprovalError` (or a
        :class:`~proctor.errors.GrantError` when a similar grant is refused); then
        nothing changed.
        """
        approver = check_human(approver, "approver")  # an agent never decides
        current = self.queue.get(approval_id)
        allow_owner = not approve or self.owner_may_approve(current)
        if approve and similar is not None:
            approval, grant = self.similar.approve(
                approval_id, approver=approver, comment=comment, vary=similar.vary,
                ttl_seconds=similar.ttl_seconds, max_uses=similar.max_uses,
                allow_owner=allow_owner, source=source)
            return Decided(approval, grant)
        return Decided(self.queue.decide(approval_id, approver=approver, approve=approve,
                                         comment=comment, allow_owner=allow_owner,
                                         source=source))


def approval_json(approval: Approval) -> dict[str, Any]:
    """An approval as the channels show it: masked arguments only, never a token."""
    return {
        "id": approval.id, "status": approval.status.value, "agent": approval.agent_id,
        "task": approval.task_id, "tool": approval.tool_id, "grant": approval.accessor,
        "on_behalf_of": approval.on_behalf_of, "request": approval.request,
        "created_at": approval.created_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(), "decided_by": approval.decided_by,
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "comment": approval.comment,
        "used_at": approval.used_at.isoformat() if approval.used_at else None,
    }

""""Approve similar within this task": a narrow, short, use-limited grant — not a rule.

Approving one call approves that call only (its binding). When a human expects
the agent to repeat it — refunds to the same customer, mail to the same
address — they may *approve similar within this task*. That decides the
pending request (approved, as usual) and issues a **pre-approval grant**, in one
write of the audit log (the decision, the grant, the pre-approval and their events,
or none of them):

- a real grant (``GrantAuthority.issue_with``, so an issuance decision with
  ``context.approved``, audited) for the agent whose call was approved (the
  task's, or one a grant of the task was delegated to), a lease-tree node
  under the task: revoking it, or ending the task, ends it at once;
- its scope is the one tool, and every argument of the approved call pinned:
  strings and booleans to the exact value, integers from 0 to the approved value
  (a negative one exactly: "at most" an amount never reaches below zero, where a
  refund becomes a charge; :func:`~proctor.approvals.preapproval.use_similar`
  holds the floor); only arguments the approver names in ``vary`` may differ; a
  similar call may carry no argument the approved call did not have;
- short (``ttl_seconds``, 10 minutes by default) and use-limited (``max_uses``,
  5 by default), counted in the grant's own use counter.

Its token is never handed out (proctor keeps only its hash, as for every
grant). When the same agent, in the same task, makes a call that policy says
needs approval and no exact approval exists, the enforcer asks
:func:`~proctor.approvals.preapproval.use_similar`: a live pre-approval grant
whose scope allows the call spends one use, and the call is decided again with
``context.approved`` — every ``forbid`` still applies. Nothing is written into
policy: the next task asks a human again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from proctor.approvals.queue import Approval, ApprovalQueue
from proctor.audit import AuditEvent, WriteCursor, human_event
from proctor.audit.masking import MASK
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import ApprovalError, GrantError, ProctorError
from proctor.grants import GrantAuthority, GrantScope, IssuedGrant
from proctor.grants.issuance import UnstoredGrant
from proctor.grants.use import any_revoked
from proctor.grants.writes import NewGrant
from proctor.human_ids import canonical_human_id
from proctor.store import Store, as_utc
from proctor.store.tables import approval_grants, grants, leases

__all__ = ["SimilarApprovals", "SimilarGrant", "similar_scope"]

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 600
MAX_TTL_SECONDS = 3600
DEFAULT_MAX_USES = 5
MAX_USES = 50


@dataclass(frozen=True, slots=True)
class SimilarGrant:
    """A pre-approval grant: which approval it came from, who gave it, what it allows."""

    grant_id: str
    accessor: str
    approval_id: str
    task_id: str
    agent_id: str
    tool_id: str
    scope: GrantScope
    arg_names: tuple[str, ...]
    approved_by: str
    created_at: datetime
    expires_at: datetime | None
    max_uses: int
    uses: int
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"grant_id": self.grant_id, "accessor": self.accessor,
                "approval": self.approval_id, "task": self.task_id, "agent": self.agent_id,
                "tool": self.tool_id, "scope": self.scope.as_json(),
                "arguments": list(self.arg_names), "approved_by": self.approved_by,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "max_uses": self.max_uses, "uses": self.uses,
                "revoked": self.revoked_at is not None}


def similar_scope(tool_id: str, args: Mapping[str, Any], vary: Collection[str] = ()
                  ) -> GrantScope:
    """The narrow scope for calls like ``tool_id(args)``: each argument pinned, but those
    named in ``vary``; raises :class:`ApprovalError` for an argument that cannot be pinned.

    >>> similar_scope("crm/issue_refund", {"customer_id": "c-1", "amount_cents": 900}).as_json()
    {'tools': [{'tool': 'crm/issue_refund', 'args': {'amount_cents': {'max': 900}, \
'customer_id': {'in': ['c-1']}}}]}
    """
    unknown = sorted(set(vary) - set(args))
    if unknown:
        raise ApprovalError("approval_similar_invalid",
                            f"`{unknown[0][:80]}` is not an argument of the approved call")
    pinned: dict[str, Any] = {}
    for name, value in args.items():
        if name in vary:
            continue
        if isinstance(value, str) and MASK[:-1] in value:
            raise ApprovalError("approval_similar_masked", f"argument `{name}` holds a masked "
                                "value: it can only be approved exactly, or named in vary")
        if isinstance(value, bool | str) or (isinstance(value, int) and value < 0):
            pinned[name] = {"in": [value]}
        elif isinstance(value, int):
            pinned[name] = {"max": value}
        else:
            raise ApprovalError("approval_similar_unsupported",
                                f"argument `{name}` is not a string, integer or boolean: "
                                "it can only be approved exactly, or named in vary")
    if args and not pinned:
        raise ApprovalError("approval_similar_invalid",
                            "at least one argument must stay pinned to its approved value")
    return GrantScope.from_json({"tools": [{"tool": tool_id, **({"args": pinned}
                                                                 if pinned else {})}]})


class SimilarApprovals:
    """Approving a request together with similar calls of its task."""

    def __init__(self, store: Store, clock: Clock, queue: ApprovalQueue,
                 grants: GrantAuthority) -> None:
        self._store = store
        self._clock = clock
        self._queue = queue
        self._grants = grants

    def approve(self, approval_id: str, *, approver: str, comment: str = "",
                vary: Collection[str] = (), ttl_seconds: int = DEFAULT_TTL_SECONDS,
                max_uses: int = DEFAULT_MAX_USES, allow_owner: bool = False,
                source: str | None = None) -> tuple[Approval, SimilarGrant]:
        """Approve the request and issue its pre-approval grant; all or nothing: one
        write of the audit log (the queue's, which "approve similar" needs).

        Raises :class:`ApprovalError` (as :meth:`ApprovalQueue.decide`, or
        ``approval_similar_*``), :class:`GrantError` (the issuance was refused, the
        task has ended) or :class:`AuditUnavailableError` — then nothing was approved
        and no grant issued.
        """
        if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise ApprovalError("approval_similar_invalid",
                                f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
        if not 1 <= max_uses <= MAX_USES:
            raise ApprovalError("approval_similar_invalid",
                                f"max uses must be between 1 and {MAX_USES}")
        approver = canonical_human_id(approver)
        current = self._queue.get(approval_id)
        self._queue.check_decidable(current, approver=approver, allow_owner=allow_owner)
        ends, line = self._check_live(current)
        if ends is not None:  # never outlives the approved call's grant or its line
            left = int((ends - self._clock.now()).total_seconds())
            if left < 1:
                raise GrantError("grant_expired", "the grant of the approved call, or one it "
                                 "derives from, expires now: approve the call alone, or deny it")
            ttl_seconds = min(ttl_seconds, left)
        args = current.request.get("args")
        scope = similar_scope(current.tool_id, args if isinstance(args, Mapping) else {}, vary)

        def decide(unstored: UnstoredGrant) -> Approval:
            # the approval's decision, its grant, the pre-approval (what a similar call
            # looks for) and their events are one write of the audit log: an approval
            # another approver decided meanwhile, one that expired, a grant refused or a
            # write that fails leave nothing of any of them
            issued = unstored.issued
            pre_approval = {
                "grant_id": issued.grant_id, "approval_id": current.id,
                "task_id": current.task_id, "agent_id": current.agent_id,
                "tool_id": current.tool_id, "arg_names": sorted(args or {}),
                "approved_by": approver, "created_at": self._clock.now()}
            return self._queue.decide(
                approval_id, approver=approver, approve=True, comment=comment,
                allow_owner=allow_owner, source=source, also=(approval_grants, pre_approval),
                gives=_OnLiveLine(line, unstored.new),
                more=[*unstored.events, self._event(current, issued, approver, vary, source)])
        # for the agent whose call was approved (in a delegated grant's task, not the
        # task's own agent), bound to the key it proved for that call: never handed out,
        # but a grant is only ever bound to a key its agent proved
        issued, decided = self._grants.issue_with(
            current.task_id, scope, decide, ttl_seconds=ttl_seconds, max_uses=max_uses,
            approved=True, same_key_as=current.grant_id, agent_id=current.agent_id)
        return decided, self.get(issued.grant_id)

    def _check_live(self, approval: Approval) -> tuple[datetime | None, tuple[str, ...]]:
        """Refuse to pre-approve the calls of a grant that can no longer be used: revoked
        (itself, one it derives from, or its task) or expired. The pre-approval is bound
        to that grant's key and stands for its agent in the task, so a grant revoked
        because it leaked or its delegator was stopped would live on in it; likewise a
        grant past its expiry: the earliest expiry on the line is returned (None: none
        expires), and the pre-approval ends by then. With it, the line's nodes (that
        grant's up to its task), which the write confirms (:class:`_OnLiveLine`): this
        reads the lease view, which may not yet show a revocation committing now."""
        node_id: str | None = approval.grant_id
        first = True
        ends: datetime | None = None
        line: list[str] = []
        while node_id is not None:
            node = self._grants.leases.node(node_id)
            if node is None or node.is_revoked:
                raise GrantError("grant_revoked", "the grant of the approved call, one it "
                                 "derives from, or its task was revoked: approve the call "
                                 "alone, or deny it")
            if first and node.expires_at is not None and node.expires_at <= self._clock.now():
                raise GrantError("grant_expired", "the grant of the approved call has "
                                 "expired: approve the call alone, or deny it")
            if node.expires_at is not None and (ends is None or node.expires_at < ends):
                ends = node.expires_at
            line.append(node_id)
            node_id, first = node.parent_id, False
        return ends, tuple(line)

    def get(self, grant_id: str) -> SimilarGrant:
        found = self._select(approval_grants.c.grant_id == grant_id)
        if not found:
            raise ApprovalError("approval_unknown", f"pre-approval grant `{grant_id[:80]}` "
                                "does not exist")
        return found[0]

    def for_approval(self, approval_id: str) -> list[SimilarGrant]:
        """The pre-approval grant issued with ``approval_id``, if there is one."""
        return self._select(approval_grants.c.approval_id == approval_id)

    def for_task(self, task_id: str) -> list[SimilarGrant]:
        """The task's pre-approval grants, oldest first, live or not."""
        return self._select(approval_grants.c.task_id == task_id)

    def _select(self, where: Any) -> list[SimilarGrant]:
        task = leases.alias("task")  # its parent: ending it revokes that node first
        query = (select(approval_grants, grants.c.accessor, grants.c.scope, grants.c.max_uses,
                        grants.c.uses, leases.c.expires_at,
                        func.coalesce(leases.c.revoked_at, task.c.revoked_at)
                        .label("revoked_at"))
                 .join(grants, grants.c.id == approval_grants.c.grant_id)
                 .join(leases, leases.c.id == approval_grants.c.grant_id)
                 .outerjoin(task, task.c.id == leases.c.parent_id)
                 .where(where).order_by(approval_grants.c.created_at))
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        return [SimilarGrant(
            r.grant_id, r.accessor, r.approval_id, r.task_id, r.agent_id, r.tool_id,
            GrantScope.from_json(r.scope), tuple(r.arg_names), r.approved_by,
            as_utc(r.created_at), as_utc(r.expires_at) if r.expires_at else None,
            int(r.max_uses or 0), int(r.uses), as_utc(r.revoked_at) if r.revoked_at else None,
        ) for r in rows]

    def _event(self, approval: Approval, issued: IssuedGrant, approver: str,
               vary: Collection[str], source: str | None) -> AuditEvent:
        pinned = sorted(issued.claims.scope.tools[0].args)
        reason = (f"similar calls of `{approval.tool_id}` within the task; pinned: "
                  f"{', '.join(pinned) or 'none'}; may vary: {', '.join(sorted(vary)) or 'none'}")
        return human_event(approver, "approval.similar", f'Grant::"{issued.accessor}"',
                           "granted", now=self._clock.now(), task=approval.task_id,
                           concerns=str(approval.request.get("event_id") or "") or None,
                           reason=reason, source=source)


class _OnLiveLine:
    """The pre-approval grant's write (:class:`~proctor.grants.writes.NewGrant`, which
    confirms the task's line only), first confirming the approved call's grant line
    (``line``, read ``FOR SHARE`` on PostgreSQL) in the audit writer's transaction: a
    revocation of that grant, a grant it derives from or its task that committed after
    :meth:`SimilarApprovals._check_live` read the lease view is seen here, and nothing
    is written (the request stays pending, no event; ``grant_revoked``, as that check
    answers it)."""

    def __init__(self, line: tuple[str, ...], new: NewGrant) -> None:
        self._line = line
        self._new = new
        self._refusal: GrantError | None = None

    @property
    def refusal(self) -> ProctorError | None:
        return self._refusal or self._new.refusal

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self._refusal = None  # applied again from the start if the batch is retried
        if any_revoked(tx, self._line):
            self._refusal = GrantError(
                "grant_revoked", "the grant of the approved call, one it derives from, or "
                "its task was revoked: approve the call alone, or deny it")
            return WITHDRAWN
        return self._new.apply(tx)

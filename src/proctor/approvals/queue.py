"""The approval queue: pending requests, decisions by humans, use, expiry."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import anyio
from sqlalchemy import Row, Table, and_, insert, select, update

from proctor.approvals.binding import binding_digest
from proctor.approvals.preapproval import use_similar
from proctor.audit import (
    Actor,
    ActorType,
    AuditEvent,
    AuditLog,
    WriteCursor,
    human_event,
    new_event_id,
)
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import ApprovalError, ProctorError
from proctor.human_ids import canonical_human_id, is_same_human
from proctor.store import Store, as_utc
from proctor.store.tables import agents, approvals, grants

__all__ = ["REQUESTED_ACTION", "Approval", "ApprovalQueue", "ApprovalStatus", "Gives",
           "NewApproval", "approval_requested_event"]

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 600
MAX_COMMENT = 2000
_POLL_SECONDS = 0.1
_OWNERS_KEPT = 4096
# the audit event of a new request, which the webhook's delivery streams
REQUESTED_ACTION = "approval.request"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval request. ``request`` is what an approver sees: the masked
    arguments, the policy's reasons and ids, the delegation chain, the agent's
    trust state and risk, and the id of the decision event it concerns."""

    id: str
    binding: str
    status: ApprovalStatus
    agent_id: str
    task_id: str
    tool_id: str
    grant_id: str
    accessor: str
    on_behalf_of: str
    request: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None
    used_at: datetime | None

    @property
    def is_pending(self) -> bool:
        return self.status is ApprovalStatus.PENDING


class ApprovalQueue:
    """Approval requests in the store; every process sees the same queue."""

    def __init__(self, store: Store, clock: Clock, *, audit: AuditLog | None = None,
                 ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self.ttl_seconds = ttl_seconds
        self._listeners: list[Callable[[Approval], None]] = []
        self._owners: dict[str, str] = {}  # agent id -> its owner (never changes)
        self._closers: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[Approval], None], *,
                  close: Callable[[], None] | None = None) -> None:
        """Call ``listener(approval)`` after each new request this process creates
        (the webhook); a listener's failure is logged, never raised to the caller.
        ``close`` runs when the queue is closed."""
        self._listeners.append(listener)
        if close is not None:
            self._closers.append(close)

    def close(self) -> None:
        """Close the listeners (a webhook delivers what it has queued)."""
        for close in self._closers:
            close()
        self._closers.clear()

    # asking

    def request(self, *, agent_id: str, task_id: str, tool_id: str, args: Mapping[str, Any],
                grant_id: str, accessor: str, on_behalf_of: str,
                shown: Mapping[str, Any]) -> Approval:
        """The pending request for this exact call: the one already waiting, or a new one.

        ``shown`` is what the approver will see; it must already be masked.
        ``on_behalf_of`` is kept in its canonical form.
        """
        on_behalf_of = canonical_human_id(on_behalf_of)
        binding = binding_digest(agent_id=agent_id, task_id=task_id, tool_id=tool_id,
                                 args=args, grant_id=grant_id)
        now = self._clock.now()
        values = {
            "id": f"apr_{secrets.token_hex(12)}", "binding": binding, "status": "pending",
            "agent_id": agent_id, "task_id": task_id, "tool_id": tool_id,
            "grant_id": grant_id, "accessor": accessor, "on_behalf_of": on_behalf_of,
            "request": dict(shown), "created_at": now,
            "expires_at": now + timedelta(seconds=self.ttl_seconds),
        }
        if self._audit is not None:
            # the request and its `approval.request` event commit together: the event is
            # what the webhook's delivery streams (webhook.py), so none is ever missed
            new = NewApproval(values)
            self._audit.record_with(None, new)
            if new.existing is not None:
                return self.get(new.existing)
        else:
            with self._store.transaction() as conn:
                row = conn.execute(select(approvals).where(and_(
                    approvals.c.binding == binding, approvals.c.status == "pending",
                    approvals.c.expires_at > now)).limit(1)).first()
                if row is not None:
                    return self._approval(row, now)
                conn.execute(insert(approvals).values(**values))
        created = self.get(str(values["id"]))
        for listener in self._listeners:
            try:
                listener(created)
            except Exception:
                log.exception("an approval listener failed")
        return created

    def consume(self, binding: str) -> Approval | None:
        """Use the approved, unused, unexpired approval of this call, if there is one.

        Atomic: of two calls racing for one approval, exactly one gets it.
        """
        now = self._clock.now()
        with self._store.transaction() as conn:
            row = conn.execute(select(approvals.c.id).where(and_(
                approvals.c.binding == binding, approvals.c.status == "approved",
                approvals.c.expires_at > now)).order_by(approvals.c.decided_at)
                .limit(1)).first()
            if row is None:
                return None
            used = conn.execute(update(approvals).where(and_(
                approvals.c.id == row.id, approvals.c.status == "approved"))
                .values(status="used", used_at=now)).rowcount
        return self.get(row.id) if used == 1 else None

    def consume_similar(self, *, agent_id: str, task_id: str, tool_id: str,
                        args: Mapping[str, Any], line: Sequence[str]
                        ) -> tuple[Approval, str, tuple[str, ...]] | None:
        """Spend one use of a live pre-approval grant ("approve similar within this
        task") that allows this call, made along the delegation chain ``line`` (first
        holder first) as the approved call was; the approval it came from, the grant's
        id, and the lease nodes the call's allow rests on (that grant, and the grant of
        the call it approved with the nodes it derives from, up to its task), which the
        call's write confirms unrevoked (``GrantUse.also_live``); or None."""
        spent = use_similar(self._store, self._clock, agent_id=agent_id,
                            task_id=task_id, tool_id=tool_id, args=args, line=line)
        return (self.get(spent[0]), spent[1], spent[2]) if spent is not None else None

    def give_back(self, approval: Approval, similar: str | None = None) -> None:
        """Undo :meth:`consume` (or, with the pre-approval grant's id ``similar``,
        :meth:`consume_similar`) for a call that was refused all the same for a reason
        that is not final for that exact call (a replayed proof, an allow decided on
        what another process had changed, the audit write failing...): the approval is
        approved and unused again, the pre-approval's use is not counted. Only the
        call that spent it gives it back, so no one else's use is undone. A write
        refused because a node the allow rests on was revoked (``grant_revoked``: the
        pre-approval, or the line of the call it approved) is final: that use stays
        spent, and the pre-approval is spent no more."""
        with self._store.transaction() as conn:
            if similar is None:
                conn.execute(update(approvals).where(and_(
                    approvals.c.id == approval.id, approvals.c.status == "used"))
                    .values(status="approved", used_at=None))
            else:
                conn.execute(update(grants).where(and_(grants.c.id == similar,
                                                       grants.c.uses > 0))
                             .values(uses=grants.c.uses - 1))

    # deciding

    def decide(self, approval_id: str, *, approver: str, approve: bool, comment: str = "",
               allow_owner: bool = False, source: str | None = None,
               also: tuple[Table, Mapping[str, Any]] | None = None,
               more: Sequence[AuditEvent] = (), gives: Gives | None = None) -> Approval:
        """Record a human's decision on a pending request.

        ``approver`` is the id of an authenticated human with the approver role: the
        caller checks that; this checks the request is pending and unexpired, and that
        the approver is not the owner the agent acts for (unless ``allow_owner``).
        The decision is audited as the human's own event, linked to the decision
        event the request came from, written in the decision's own transaction (the
        audit writer's): no process sees the request decided before its event, and one
        that cannot be audited is not taken. The approver is recorded in canonical
        form. ``also`` (a table and a row) is inserted with the decision, in its
        transaction, only if this decision is the one taken (what stands only with it:
        "approve similar"'s pre-approval), and ``more`` (events) written after its event.
        ``gives`` (effects: what the approval gives, "approve similar"'s grant) is applied
        in that transaction first, once the request is found pending (and locked): if it
        refuses (its ``refusal``, raised here), the request is left pending and nothing
        of the decision is written, but what ``gives`` wrote in its place (its refusal's
        event). It needs the audit log.
        """
        approver = canonical_human_id(approver)
        if len(comment) > MAX_COMMENT:
            raise ApprovalError("approval_comment_too_long",
                                f"a comment is limited to {MAX_COMMENT} characters")
        current = self.get(approval_id)
        self.check_decidable(current, approver=approver, allow_owner=allow_owner)
        now = self._clock.now()
        status = "approved" if approve else "denied"
        if self._audit is not None:
            decision = _Decision(approval_id, status, approver, now, comment, also, gives)
            self._audit.record_with(self._event(current, approver, status, comment, source),
                                    decision, more=more)
            if gives is not None and gives.refusal is not None:
                raise gives.refusal
            changed = 1 if decision.taken else 0
        elif gives is not None:
            raise ApprovalError("approval_similar_invalid", "what an approval gives is "
                                "written with its decision's event: there is no audit log")
        else:
            with self._store.transaction() as conn:
                changed = conn.execute(update(approvals).where(and_(
                    approvals.c.id == approval_id, approvals.c.status == "pending",
                    approvals.c.expires_at > now)).values(
                    status=status, decided_by=approver, decided_at=now,
                    comment=comment or None,
                )).rowcount
                if changed == 1 and also is not None:
                    conn.execute(insert(also[0]).values(**also[1]))
        if changed != 1:
            raise ApprovalError("approval_already_decided",
                                f"approval `{approval_id}` was decided or expired meanwhile")
        return self.get(approval_id)

    def check_decidable(self, approval: Approval, *, approver: str,
                        allow_owner: bool = False) -> None:
        """Raise :class:`ApprovalError` unless ``approver`` may decide ``approval`` now.

        The approver and the owners are compared in canonical form: a different letter
        case or Unicode spelling of an owner's id is that owner.
        """
        if approval.status is ApprovalStatus.EXPIRED:
            raise ApprovalError("approval_expired", f"approval `{approval.id}` has expired")
        if not approval.is_pending:
            raise ApprovalError("approval_already_decided",
                                f"approval `{approval.id}` is already {approval.status}")
        if not allow_owner and self.is_owner(approval, approver):
            raise ApprovalError("approval_own_request", "the human the agent acts for, or the "
                                "owner of the agent or of one that delegated it the grant, "
                                "may not approve its request (separation of duties)")

    def is_owner(self, approval: Approval, human: str) -> bool:
        """Whether ``human`` is one of the request's owners: the human the task acts for,
        the owner of the agent whose call it is, or the owner of an agent of its grant's
        delegation line (the delegators, ``request['delegation_chain']``, written by the
        enforcer). They differ for a call of an agent a grant was delegated to (Carol's
        agent working in Bob's task): Carol vouching for her own agent is as much a
        conflict of interest as Bob vouching for his task, and so is Dan, whose agent
        handed the grant on to Carol's, vouching for the delegate he chose. An agent
        whose row is gone (never, agents are retired) counts as owned by all."""
        if is_same_human(human, approval.on_behalf_of):
            return True
        chain = approval.request.get("delegation_chain")
        line = [a for a in chain if isinstance(a, str)] if isinstance(chain, list) else []
        return any(self._owned_by(agent_id, human) for agent_id in (approval.agent_id, *line))

    def _owned_by(self, agent_id: str, human: str) -> bool:
        owner = self._owners.get(agent_id)
        if owner is None:  # an agent's owner never changes: read once per agent
            with self._store.reading() as conn:
                found = conn.execute(select(agents.c.owner).where(
                    agents.c.id == agent_id)).scalar()
            if found is None:
                return True
            if len(self._owners) >= _OWNERS_KEPT:
                self._owners.clear()
            owner = self._owners[agent_id] = str(found)
        return is_same_human(human, owner)

    def _event(self, approval: Approval, approver: str, status: str, comment: str,
               source: str | None) -> AuditEvent:
        return human_event(
            approver, "approval.grant" if status == "approved" else "approval.deny",
            f"Approval::\"{approval.id}\"", status, now=self._clock.now(),
            concerns=str(approval.request.get("event_id") or "") or None,
            task=approval.task_id, reason=comment, source=source)

    # reading

    def get(self, approval_id: str) -> Approval:
        with self._store.reading() as conn:
            row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
        if row is None:
            raise ApprovalError("approval_unknown", f"approval `{approval_id[:80]}` does not exist")
        return self._approval(row, self._clock.now())

    def list(self, *, status: ApprovalStatus | None = None, task_id: str | None = None,
             limit: int = 100) -> list[Approval]:
        """Newest first. ``status`` pending lists only unexpired requests."""
        now = self._clock.now()
        query = select(approvals).order_by(approvals.c.created_at.desc()).limit(limit)
        if status is ApprovalStatus.EXPIRED:
            query = query.where(and_(approvals.c.status == "pending",
                                     approvals.c.expires_at <= now))
        elif status is ApprovalStatus.PENDING:
            query = query.where(and_(approvals.c.status == "pending",
                                     approvals.c.expires_at > now))
        elif status is not None:
            query = query.where(approvals.c.status == status.value)
        if task_id is not None:
            query = query.where(approvals.c.task_id == task_id)
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        return [self._approval(row, now) for row in rows]

    async def wait(self, approval_id: str, *, timeout: float) -> Approval:
        """The request once it is no longer pending, or as it is when ``timeout`` passes.

        Polls the store, so a decision taken by any process is seen.
        """
        approval = await anyio.to_thread.run_sync(self.get, approval_id)
        with anyio.move_on_after(timeout):
            while approval.is_pending:
                await anyio.sleep(_POLL_SECONDS)
                approval = await anyio.to_thread.run_sync(self.get, approval_id)
        return approval

    @staticmethod
    def _approval(row: Row[Any], now: datetime) -> Approval:
        expires_at = as_utc(row.expires_at)
        status = ApprovalStatus(row.status)
        if status is ApprovalStatus.PENDING and expires_at <= now:
            status = ApprovalStatus.EXPIRED
        return Approval(
            id=row.id, binding=row.binding, status=status, agent_id=row.agent_id,
            task_id=row.task_id, tool_id=row.tool_id, grant_id=row.grant_id,
            accessor=row.accessor, on_behalf_of=canonical_human_id(row.on_behalf_of),
            request=dict(row.request),
            created_at=as_utc(row.created_at), expires_at=expires_at,
            decided_by=row.decided_by,
            decided_at=as_utc(row.decided_at) if row.decided_at else None,
            comment=row.comment, used_at=as_utc(row.used_at) if row.used_at else None)


_PENDING = ("SELECT id FROM approvals WHERE binding = {p} AND status = 'pending' "
            "AND expires_at > {p}")
_INSERT = ("INSERT INTO approvals (id, binding, status, agent_id, task_id, tool_id, grant_id, "
           "accessor, on_behalf_of, request, created_at, expires_at) "
           "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})")


_DECIDE = ("UPDATE approvals SET status = {p}, decided_by = {p}, decided_at = {p}, "
           "comment = {p} WHERE id = {p} AND status = 'pending' AND expires_at > {p}")
_STILL_PENDING = ("SELECT id FROM approvals WHERE id = {p} AND status = 'pending' "
                  "AND expires_at > {p}")


class Gives(Protocol):
    """What an approval gives, written with its decision (:meth:`ApprovalQueue.decide`):
    effects of the audit writer's transaction whose check may refuse (``refusal``)."""

    @property
    def refusal(self) -> ProctorError | None: ...

    def apply(self, tx: WriteCursor) -> AuditEvent | None: ...


class _Decision:
    """A human's decision on a pending request as the effect of its event, in the audit
    writer's transaction: the request decided (and ``also``'s row inserted, and what
    it ``gives`` written first) and the event written together, or neither (decided or
    expired meanwhile: ``taken`` False, no event; ``gives`` refused: what it wrote in
    its place)."""

    def __init__(self, approval_id: str, status: str, approver: str, now: datetime,
                 comment: str, also: tuple[Table, Mapping[str, Any]] | None,
                 gives: Gives | None = None) -> None:
        self.decided = (status, approver, comment or None, approval_id)
        self.now = now
        self.also = also
        self.gives = gives
        self.taken = False

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        status, approver, comment, approval_id = self.decided
        now = tx.time(self.now)
        self.taken = False
        if self.gives is not None:
            # the request pending, locked (PostgreSQL; SQLite's writer holds the database)
            # until this commits: no other decision between this check and the update
            lock = "" if tx.is_sqlite else " FOR UPDATE"
            if not tx.rows(_STILL_PENDING + lock, [approval_id, now]):
                return WITHDRAWN
            instead = self.gives.apply(tx)
            if instead is not None:  # refused: it wrote nothing, the request stays pending
                return instead
        self.taken = tx.execute(_DECIDE, [status, approver, now, comment, approval_id,
                                          now]) == 1
        if not self.taken:
            return WITHDRAWN
        if self.also is not None:
            table, row = self.also
            names = list(row)
            tx.execute(f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
                       f"VALUES ({', '.join('{p}' for _ in names)})",
                       [_stored(tx, row[name]) for name in names])
        return None


def _stored(tx: WriteCursor, value: Any) -> Any:
    """``value`` as a raw statement stores it: a time as the backend does, JSON as text."""
    if isinstance(value, datetime):
        return tx.time(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


class NewApproval:
    """Storing a new approval request as the effect of its ``approval.request`` event, in
    the audit writer's transaction: the request pending for the same call already, if
    there is one (``existing``, and no event), else the new row and its event."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values
        self.existing: str | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        v = self.values
        found = tx.rows(_PENDING + " LIMIT 1", [v["binding"], tx.time(v["created_at"])])
        if found:
            self.existing = str(found[0][0])
            return None
        self.existing = None
        tx.execute(_INSERT, [v["id"], v["binding"], v["status"], v["agent_id"], v["task_id"],
                             v["tool_id"], v["grant_id"], v["accessor"], v["on_behalf_of"],
                             json.dumps(v["request"]), tx.time(v["created_at"]),
                             tx.time(v["expires_at"])])
        return approval_requested_event(v)


def approval_requested_event(values: Mapping[str, Any]) -> AuditEvent:
    """The system's event of a new approval request (``approval.request``): the request's
    id, agent and tool, linked by ``concerns`` to the decision that asked for it."""
    now: datetime = values["created_at"]
    return AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, "proctor"),
        action=REQUESTED_ACTION, target=f"Approval::\"{values['id']}\"", outcome="pending",
        task=str(values["task_id"]),
        concerns=str(values["request"].get("event_id") or "") or None,
        detail={"approval": values["id"], "agent": values["agent_id"],
                "tool": values["tool_id"]})

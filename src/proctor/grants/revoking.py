"""Revoking grants, by grant or by agent, and auditing each revocation.

A revocation goes through the lease tree (:mod:`proctor.grants.leases`): the
revoking transaction marks the roots, which puts their subtrees out of force at
once, and the descendants are marked after it, by the tree's marker thread.
Suspending or retiring an agent revokes its grants in the transaction of that
state change
(:meth:`Revoker.end_agent_grants`, which the grant authority registers with the
agent directory). A revocation by grant, by agent or by task is the effects of its own
audit event (:class:`Revoking`): the roots are revoked in the audit writer's transaction,
so the log holds the event if and only if the revocation took effect. If the audit log
cannot write it, the revocation is made all the same, in a transaction of its own, and
the missing event is logged loudly: an audit failure never turns into an un-revocation.
A suspension or retirement (:func:`~proctor.oversight.standing.change_standing`, the
only way proctor suspends or retires an agent) is the effects of its own audit event
too: its grants are revoked in the audit writer's transaction, with the state change
and the event (or, when the log cannot write it, with the change alone, in a transaction
of its own, and no event: as a revocation's). The registry's own ``suspend``/``retire``
is the store's primitive under it (tests, and code embedding proctor without an audit
log): its transaction revokes the grants (:meth:`Revoker.end_agent_grants`) and writes
no event, for an event written after that commit is the one a process that died
between the two lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Connection, select

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.clock import Clock
from proctor.errors import AuditError, GrantError
from proctor.grants.leases import LeaseTree, revoke_roots, writing
from proctor.grants.offers import cancel_offers
from proctor.grants.tasks import end_task
from proctor.store import Store
from proctor.store.tables import grants
from proctor.store.tables import leases as lease_table

__all__ = ["SYSTEM", "Revoker", "Revoking"]

log = logging.getLogger(__name__)

SYSTEM = Actor(ActorType.SYSTEM, "proctor")

_AGENT_GRANTS = ("SELECT id FROM leases WHERE agent_id = {p} AND kind = 'grant' "
                 "AND revoked_at IS NULL")


def _revoke(tx: WriteCursor, roots: Sequence[str], reason: str, now: datetime, *,
            agent_id: str | None = None, task_id: str | None = None) -> list[str]:
    """The one revocation of :class:`Revoking` and :class:`Revoker`, in ``tx``'s
    transaction (the audit writer's with the event, or one of its own): ``task_id``'s
    task ended; with ``agent_id``, its open offers cancelled and its live grants the
    roots; the roots revoked. Returns those newly revoked."""
    if task_id is not None:
        end_task(tx, task_id, reason, now)
    if agent_id is not None:
        cancel_offers(tx, agent_id, reason, now)
        roots = [row[0] for row in tx.rows(_AGENT_GRANTS, [agent_id])]
    return revoke_roots(tx, roots, reason, now)


@dataclass(slots=True)
class Revoking:
    """A revocation as the effects of its audit event, in the audit writer's transaction:
    ``roots`` revoked (or, with ``agent_id``, every live grant of that agent, its open
    offers cancelled), ``task_id``'s task marked ended; the event written names the roots
    newly revoked (``roots``, their subtrees out of force with them, marked afterwards by
    the lease tree's marker) and how many (``revoked``). After the commit,
    :attr:`revoked` holds the roots newly revoked."""

    roots: Sequence[str]
    reason: str
    now: datetime
    event: AuditEvent
    agent_id: str | None = None
    task_id: str | None = None
    revoked: list[str] = field(default_factory=list)

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.revoked = revoked = _revoke(tx, self.roots, self.reason, self.now,
                                         agent_id=self.agent_id, task_id=self.task_id)
        # what this transaction changed, and nothing more: counting the subtrees here would
        # hold every decision (they share this transaction) behind a recursive query
        return replace(self.event, detail={**self.event.detail, "roots": revoked,
                                           "revoked": len(revoked)})


class Revoker:
    """Revocations by grant and by agent, and their audit events."""

    def __init__(self, store: Store, clock: Clock, leases: LeaseTree,
                 audit: AuditLog | None) -> None:
        self._store = store
        self._clock = clock
        self._leases = leases
        self._audit = audit

    def revoke(self, grant_or_accessor: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke a grant (by id or accessor) and everything derived from it."""
        with self._store.reading() as conn:
            row = conn.execute(
                select(grants.c.id, grants.c.accessor, lease_table.c.task_id)
                .join(lease_table, lease_table.c.id == grants.c.id)
                .where((grants.c.id == grant_or_accessor)
                       | (grants.c.accessor == grant_or_accessor))
            ).first()
        if row is None:
            shown = "(a token)" if grant_or_accessor.count(".") == 2 else grant_or_accessor[:80]
            raise GrantError("grant_unknown", f"grant `{shown}` does not exist: revoke takes "
                             "the accessor or the grant id")
        event = self._event("grant.revoke", row.accessor, row.task_id, reason, by)
        return self._commit(Revoking([row.id], reason, event.time, event))

    def revoke_agent(self, agent_id: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke every grant held by ``agent_id`` (and all derived from them), and cancel
        the offers made to it."""
        event = self._event("agent.revoke_grants", f'Agent::"{agent_id}"', "", reason, by)
        return self._commit(Revoking((), reason, event.time, event, agent_id=agent_id))

    def end_task(self, task_id: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """End the task and revoke everything issued under it."""
        event = self._event("task.end", f'Task::"{task_id}"', task_id, reason, by)
        return self._commit(Revoking([task_id], reason, event.time, event, task_id=task_id))

    def _event(self, action: str, target: str, task: str, reason: str, by: Actor
               ) -> AuditEvent:
        now = self._clock.now()
        return AuditEvent(id=new_event_id(now), time=now, actor=by, action=action,
                          target=target, outcome="revoked", task=task,
                          detail={"reason": reason})

    def _commit(self, revoking: Revoking) -> list[str]:
        """Make ``revoking`` with its event, in one transaction; if the audit log cannot
        write it, the same revocation is made without it, in a transaction of its own
        (said in the log)."""
        if self._audit is not None:
            try:
                self._audit.record_with(revoking.event, revoking)
            except AuditError:
                log.error("revocation %s of %s could not be audited; it is made all the "
                          "same", revoking.event.action, revoking.event.target)
            else:
                return self._leases.revoked_after(revoking.revoked, revoking.reason)
        with self._store.transaction() as conn, writing(conn) as tx:
            revoking.apply(tx)
        return self._leases.revoked_after(revoking.revoked, revoking.reason)

    def end_agent_grants(self, conn: Connection, agent_id: str, reason: str
                         ) -> Callable[[], None]:
        """Revoke the agent's grants (its roots: their subtrees out of force with them) in
        ``conn``'s transaction, the registry's own suspension or retirement; returns what
        to do once that has committed (announce, and mark the subtrees). No event: that
        transaction is not the audit writer's (the module docstring)."""
        with writing(conn) as tx:
            revoked = _revoke(tx, (), reason, self._clock.now(), agent_id=agent_id)

        def after_commit() -> None:
            self._leases.revoked_after(revoked, reason)
        return after_commit

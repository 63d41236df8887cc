"""Revoking grants, by grant or by agent, and auditing each revocation.

A revocation goes through the lease tree (:mod:`proctor.grants.leases`): the
revoking transaction marks the roots, which puts their subtrees out of force at
once, and the descendants are marked after it, by the tree's marker thread.
Suspending or retiring an agent revokes its grants in the transaction of that
state change
(:meth:`Revoker.end_agent_grants`, which the grant authority registers with the
agent directory). Each revocation is audited after it took effect; an audit failure
is logged loudly, never turned into an un-revocation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, and_, select

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id
from proctor.clock import Clock
from proctor.errors import AuditError, GrantError
from proctor.grants.leases import LeaseTree
from proctor.grants.offers import cancel_offers
from proctor.store import Store
from proctor.store.tables import grants
from proctor.store.tables import leases as lease_table

__all__ = ["SYSTEM", "Revoker"]

log = logging.getLogger(__name__)

SYSTEM = Actor(ActorType.SYSTEM, "proctor")


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
        revoked = self._leases.revoke_subtree([row.id], reason)
        self.record("grant.revoke", row.accessor, row.task_id, reason, revoked, by)
        return revoked

    def revoke_agent(self, agent_id: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke every grant held by ``agent_id`` (and all derived from them), and cancel
        the offers made to it."""
        with self._store.transaction() as conn:
            revoked = self._revoke_agent_in(conn, agent_id, reason)
        revoked = self._leases.revoked_after(revoked, reason)
        self.record("agent.revoke_grants", f'Agent::"{agent_id}"', "", reason, revoked, by)
        return revoked

    def _revoke_agent_in(self, conn: Connection, agent_id: str, reason: str) -> list[str]:
        cancel_offers(conn, agent_id, reason, self._clock.now())
        ids = [r.id for r in conn.execute(select(lease_table.c.id).where(and_(
            lease_table.c.agent_id == agent_id, lease_table.c.kind == "grant",
            lease_table.c.revoked_at.is_(None)))).all()]
        return self._leases.revoke_in(conn, ids, reason) if ids else []

    def end_agent_grants(self, conn: Connection, agent_id: str, reason: str,
                         by: str | None) -> Callable[[], None]:
        """Revoke the agent's grants in ``conn``'s transaction (its suspension or
        retirement); returns what to do once that has committed."""
        revoked = self._revoke_agent_in(conn, agent_id, reason)
        if not by:
            actor = SYSTEM
        elif by.startswith("system:"):  # an automatic suspension (oversight)
            actor = Actor(ActorType.SYSTEM, by)
        else:
            actor = Actor(ActorType.HUMAN, by)

        def after_commit() -> None:
            done = self._leases.revoked_after(revoked, reason)
            self.record("agent.revoke_grants", f'Agent::"{agent_id}"', "", reason, done,
                        actor)
        return after_commit

    def record(self, action: str, target: str, task: str, reason: str,
               revoked: Sequence[str], by: Actor) -> None:
        """Audit a revocation. It has already taken effect: an audit failure is logged
        loudly, never turned into an un-revocation."""
        if self._audit is None:
            return
        now = self._clock.now()
        event = AuditEvent(id=new_event_id(now), time=now, actor=by, action=action,
                           target=target, outcome="revoked", task=task,
                           detail={"reason": reason, "revoked": len(revoked)})
        try:
            self._audit.record(event)
        except AuditError:
            log.error("revocation %s of %s took effect but could not be audited", action,
                      target)

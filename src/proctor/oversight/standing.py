"""Suspending and retiring an agent, with its audit event, in one transaction.

A human (or a ``system:`` actor, oversight's own) suspends or retires an agent: its
trust state changes, every grant it holds is revoked (their subtrees with them: the
grants it handed on) and the offers made to it are cancelled. All of that is the
effects of the change's own audit event (``agent.suspend`` / ``agent.retire``), made
in the audit writer's transaction: the log holds the event if and only if the change
took effect. It used to be written after the change had committed, so a process that
died between the two left an agent suspended (its grants revoked) with nothing in the
log saying who did it, or that anyone did.

The event names the roots that transaction revoked (``detail.roots``, their number in
``detail.revoked``), as a revocation's event does (:class:`~proctor.grants.revoking.
Revoking`). Suspending a suspended agent (retiring a retired one) changes nothing and
its event says so (``detail.unchanged``); a retired agent cannot be suspended
(``agent_state_invalid``): no event, nothing changed.

If the audit log cannot write the event, the change is made all the same: the same
effects (the state, the grants' roots revoked, the offers cancelled) in a transaction of
its own, with no event, and :class:`~proctor.errors.AuditUnavailableError` says it took
effect unaudited: an audit outage never keeps an agent from being stopped
(:mod:`proctor.oversight.audited`), as a revocation whose event cannot be written is
made alone (:mod:`proctor.grants.revoking`). Nothing is written to the log after that
commit: the change used to be made by the registry's own ``suspend``/``retire``, whose
revocation then wrote an ``agent.revoke_grants`` event after the commit, so a log that
came back in between held the end of the grants with no suspension.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import AgentError, IdentityError, ProctorError, RequestError
from proctor.grants.leases import LeaseTree, writing
from proctor.grants.revoking import Revoking
from proctor.identity import Agent, AgentRegistry, TrustState
from proctor.identity.people import SYSTEM_PREFIX, check_human
from proctor.identity.spiffe_id import parse_agent_id
from proctor.oversight.audited import commit_with_event

__all__ = ["MAX_REASON", "change_standing"]

MAX_REASON = 1000

_READ = "SELECT trust_state FROM agents WHERE id = {p}"
_SET = ("UPDATE agents SET trust_state = {p}, state_changed_by = {p}, state_reason = {p}, "
        "updated_at = {p} WHERE id = {p}")
_ENDED = (TrustState.SUSPENDED.value, TrustState.RETIRED.value)


@dataclass(slots=True)
class _Standing:
    """The state change as the effects of its event, in the audit writer's transaction."""

    agent_id: str
    state: TrustState
    by: str
    reason: str
    now: datetime
    event: AuditEvent
    refusal: ProctorError | None = None
    revoked: tuple[str, ...] = ()
    revoke_reason: str = ""

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal, self.revoked = None, ()  # a retried batch applies it again
        found = tx.rows(_READ + ("" if tx.is_sqlite else " FOR UPDATE"), [self.agent_id])
        if not found:
            self.refusal = AgentError("agent_unknown",
                                      f"agent `{self.agent_id}` is not registered")
            return WITHDRAWN
        current = str(found[0][0])
        if current == self.state.value:
            return replace(self.event, detail={**self.event.detail, "unchanged": True})
        if current == TrustState.RETIRED.value:
            self.refusal = IdentityError("agent_state_invalid", f"agent `{self.agent_id}` "
                                         "is retired; retirement is final")
            return WITHDRAWN
        tx.execute(_SET, [self.state.value, self.by, self.reason or None, tx.time(self.now),
                          self.agent_id])
        if current in _ENDED:  # suspended, now retired: its grants ended with the suspension
            return None
        # what the registry's own change does (identity.registry._change): the reason of
        # the revocation names the new state
        self.revoke_reason = f"agent {self.state.value}" + (
            f": {self.reason}" if self.reason else "")
        revoking = Revoking((), self.revoke_reason, self.now, self.event,
                            agent_id=self.agent_id)
        written = revoking.apply(tx)
        self.revoked = tuple(revoking.revoked)
        return written


def change_standing(registry: AgentRegistry, audit: AuditLog, clock: Clock,
                    leases: LeaseTree | None, agent_id: str, state: TrustState, *,
                    by: str, reason: str = "", source: str | None = None,
                    detail: dict[str, Any] | None = None) -> Agent:
    """Suspend or retire ``agent_id`` (``state``) as ``by`` did, with its event; the
    agent as it is now. ``leases`` marks the revoked grants' descendants after the
    commit (None: the lease sweep does). Raises ``reviewer_invalid`` for an actor that
    is not a human or ``system:`` id, ``agent_unknown``, ``agent_state_invalid``, or
    :class:`~proctor.errors.AuditUnavailableError` once the change took effect without
    its event."""
    if state not in (TrustState.SUSPENDED, TrustState.RETIRED):
        raise ValueError(f"not a state a human puts an agent in: {state}")
    by = check_human(by, "actor")
    if len(reason) > MAX_REASON:
        raise RequestError(f"a reason is at most {MAX_REASON} characters")
    key = parse_agent_id(agent_id).id
    now = clock.now()
    actor = Actor(ActorType.SYSTEM if by.startswith(SYSTEM_PREFIX) else ActorType.HUMAN, by)
    verb = "suspend" if state is TrustState.SUSPENDED else "retire"
    event = AuditEvent(id=new_event_id(now), time=now, actor=actor, action=f"agent.{verb}",
                       target=f'Agent::"{key}"', outcome=state.value, source=source,
                       detail={**(detail or {}), **({"reason": reason} if reason else {})})
    standing = _Standing(key, state, by, reason, now, event)

    def alone() -> None:
        # an outage: the same effects alone (it takes access away), and the caller told
        with audit.store.transaction() as conn, writing(conn) as tx:
            standing.apply(tx)
        if standing.refusal is not None:
            raise standing.refusal
        _committed(registry, leases, standing)

    commit_with_event(audit, event, standing, alone=alone)
    _committed(registry, leases, standing)
    return registry.get(key)


def _committed(registry: AgentRegistry, leases: LeaseTree | None, standing: _Standing
               ) -> None:
    """After the change's commit: this process's views drop the agent, and the revoked
    roots' subtrees are announced and marked (None: the lease sweep marks them)."""
    registry.changed(standing.agent_id)
    if leases is not None and standing.revoked:
        leases.revoked_after(standing.revoked, standing.revoke_reason)

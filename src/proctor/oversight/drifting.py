"""An agent's presented manifest and its ``agent.drift`` event, in one transaction.

An agent presents the manifest it runs now (``POST /v1/agents/{id}/manifest``), or an
enforcement point presents the one it is configured with when a session opens
(:mod:`proctor.gateway.manifests`: the wrapper's, the HTTP gateway's). One that differs
from the reviewed manifest makes the agent drifted at once. That change is the effects
of its own ``agent.drift`` event (outcome: the state it leaves, ``detail.presented_digest``
and the ``fields`` that differ from the reviewed manifest), in the audit writer's
transaction: the log holds the event if and only if the change took effect. It used to be
made by the registry, then written after that commit, so a process that died between
the two left an agent drifted and nothing in the log saying who presented what.

A presentation that changes nothing writes nothing. A drift takes trust away: if the log
cannot write its event it is made all the same, by the registry in a transaction of its
own, and :class:`~proctor.errors.AuditUnavailableError` says it took effect unaudited
(:mod:`proctor.oversight.audited`).

A workload token's attested claims (:mod:`proctor.identity.authentication`) go the same
way (:func:`attest`): the drift they make, or the ``unattested`` state a token attesting
too little leaves, is the effects of its ``agent.drift`` or ``agent.unattested`` event,
by proctor on the platform's word. Both take trust away and are made alone when the log
is down; a token that attests the reviewed manifest again, lifting ``unattested``, gives
trust back and is then not made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import AgentError, ProctorError
from proctor.identity import (
    Agent,
    AgentRegistry,
    Attestation,
    AttestationChange,
    Manifest,
    TrustState,
)
from proctor.identity.spiffe_id import parse_agent_id
from proctor.oversight.audited import commit_with_event, update_rows
from proctor.oversight.trusting import agent_in
from proctor.store.tables import agents

__all__ = ["attest", "attestation_event", "present_manifest"]


@dataclass(slots=True)
class _Presenting:
    """The columns a presentation changes, decided on the agent's row as the transaction
    reads it (locked, on PostgreSQL) by the registry's own rule (``values``), and the
    event they are the effects of (``event``, of the agent as it was and those columns)."""

    key: str
    now: datetime
    values: Callable[[Agent], dict[str, Any] | None]
    event: Callable[[Agent, dict[str, Any]], AuditEvent]
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        try:
            agent = agent_in(tx, self.key)
            values = self.values(agent)
        except AgentError as refused:
            self.refusal = refused
            return WITHDRAWN
        if values is None:
            return WITHDRAWN  # nothing changes: no event
        update_rows(tx, agents, {**values, "updated_at": self.now}, "id = {p}", [self.key])
        return self.event(agent, values)


def _commit(registry: AgentRegistry, audit: AuditLog, event: AuditEvent,
            presenting: _Presenting, alone: Callable[[], object] | None) -> Agent:
    try:
        commit_with_event(audit, event, presenting, alone=alone)
    finally:  # made with its event, or alone: this process's views drop the agent
        registry.changed(presenting.key)
    return registry.get(presenting.key)


def present_manifest(registry: AgentRegistry, audit: AuditLog, clock: Clock, agent_id: str,
                     manifest: Manifest, *, actor: Actor, source: str | None = None
                     ) -> Agent:
    """Present ``manifest`` as what ``agent_id`` runs, as :meth:`AgentRegistry.
    present_manifest` does (never attested), with its ``agent.drift`` event by ``actor``
    if it changes anything; the agent as it is now. Raises ``agent_unknown``,
    ``agent_not_active``, or :class:`~proctor.errors.AuditUnavailableError` once a drift
    took effect without its event."""
    key = parse_agent_id(agent_id).id
    now = clock.now()
    event = AuditEvent(id=new_event_id(now), time=now, actor=actor, action="agent.drift",
                       target=f'Agent::"{key}"', outcome="drifted", source=source)

    def drift(agent: Agent, values: dict[str, Any]) -> AuditEvent:
        return replace(event, outcome=values["trust_state"], detail={
            **event.detail, "presented_digest": values.get("presented_digest") or "",
            "fields": sorted(agent.manifest.differences(manifest))})

    return _commit(registry, audit, event, _Presenting(
        key, now, lambda agent: registry.presenting(agent, manifest), drift),
        alone=lambda: registry.present_manifest(key, manifest))


def attest(registry: AgentRegistry, audit: AuditLog, clock: Clock,
           attestation: Attestation) -> Agent:
    """Make what a workload token attests (:class:`~proctor.identity.Attestation`) with
    its event (:func:`attestation_event`), if it changes anything; the agent as it is
    now. Raises ``agent_not_active``, or :class:`~proctor.errors.AuditUnavailableError`
    when the log is down: a drift or ``unattested`` made all the same, a return to
    ``trusted`` not made."""
    before = attestation.agent
    now = clock.now()
    first = attestation.values(registry, before)
    gives = first is not None and first["trust_state"] == TrustState.TRUSTED.value

    event_id = new_event_id(now)

    def event(agent: Agent, values: dict[str, Any]) -> AuditEvent:
        return replace(attestation_event(attestation.change(agent, values["trust_state"]),
                                         now), id=event_id)

    return _commit(registry, audit, event(before, first or {"trust_state": "drifted"}),
                   _Presenting(before.id, now,
                               lambda agent: attestation.values(registry, agent), event),
                   alone=None if gives else lambda: attestation.alone(registry))


def attestation_event(change: AttestationChange, now: datetime) -> AuditEvent:
    """``agent.drift`` (the token attests another manifest) or ``agent.unattested`` (it
    attests too little), by proctor on the platform's word; field names and digests
    only."""
    action = "agent.drift" if change.after_digest is not None else "agent.unattested"
    return AuditEvent(id=new_event_id(now), time=now,
                      actor=Actor(ActorType.SYSTEM, "proctor-attestation"), action=action,
                      target=f'Agent::"{change.agent_id}"', outcome=change.trust_state,
                      detail={"agent": change.agent_id, **change.as_detail()})

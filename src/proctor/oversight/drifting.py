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
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from proctor.audit import Actor, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import AgentError, ProctorError
from proctor.identity import Agent, AgentRegistry, Manifest
from proctor.identity.spiffe_id import parse_agent_id
from proctor.oversight.audited import commit_with_event, update_rows
from proctor.oversight.trusting import agent_in
from proctor.store.tables import agents

__all__ = ["present_manifest"]


@dataclass(slots=True)
class _Presenting:
    """The presented manifest's columns, decided on the agent's row as the transaction
    reads it (locked, on PostgreSQL) by the registry's own rule."""

    registry: AgentRegistry
    key: str
    manifest: Manifest
    now: datetime
    event: AuditEvent
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        try:
            agent = agent_in(tx, self.key)
            values = self.registry.presenting(agent, self.manifest)
        except AgentError as refused:
            self.refusal = refused
            return WITHDRAWN
        if values is None:
            return WITHDRAWN  # nothing changes: no event
        update_rows(tx, agents, {**values, "updated_at": self.now}, "id = {p}", [self.key])
        return replace(self.event, outcome=values["trust_state"], detail={
            **self.event.detail, "presented_digest": values.get("presented_digest") or "",
            "fields": sorted(agent.manifest.differences(self.manifest))})


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
    presenting = _Presenting(registry, key, manifest, now, event)
    try:
        commit_with_event(audit, event, presenting,
                          alone=lambda: registry.present_manifest(key, manifest))
    finally:  # made with its event, or alone: this process's views drop the agent
        registry.changed(key)
    return registry.get(key)

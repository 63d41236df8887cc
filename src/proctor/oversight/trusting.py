"""Registering and reviewing an agent, with the audit event, in one transaction.

A registration trusts an agent and the manifest it gives; a review adopts a manifest
and trusts the agent again (reinstating a suspended one). Both give access, and each is
the effects of its own audit event (``agent.register`` / ``agent.review``), in the
audit writer's transaction (:mod:`proctor.oversight.audited`): the log holds the event
if and only if the change took effect. The event used to be written after the change
had committed, so a process that died between the two left an agent trusted with
nothing in the log saying who trusted it.

If the audit log cannot be written, nothing is made and
:class:`~proctor.errors.AuditUnavailableError` says so (fail closed: the agent stays as
it was; it used to be registered or reviewed, then suspended when its event failed).
The checks are the registry's (:meth:`~proctor.identity.AgentRegistry.registration`,
:func:`~proctor.identity.registry.reviewed`), made on the row as the writer's
transaction reads it (locked, on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import AgentError, IdentityError, ProctorError
from proctor.identity import Agent, AgentRegistry, Manifest, ProofSpec
from proctor.identity.registry import check_review, reviewed
from proctor.identity.rows import agent_from_row
from proctor.identity.spiffe_id import parse_agent_id
from proctor.oversight.audited import commit_with_event, insert_row, read_rows, update_rows
from proctor.store.tables import agents

__all__ = ["agent_in", "register_agent", "review_agent"]

def agent_in(tx: WriteCursor, key: str) -> Agent:
    """The agent's row as ``tx`` reads it (locked, on PostgreSQL), or ``agent_unknown``."""
    found = read_rows(tx, agents, "id = {p}", [key], lock=True)
    if not found:
        raise AgentError("agent_unknown", f"agent `{key}` is not registered")
    return agent_from_row(cast(Any, found[0]))


def _actor(by: str) -> Actor:
    return Actor(ActorType.HUMAN, by)


@dataclass(slots=True)
class _Registration:
    """The new agent's row, inserted unless another registration holds its id, key or
    subject."""

    values: dict[str, Any]
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        if not insert_row(tx, agents, self.values, unless_taken=True):  # another won
            self.refusal = IdentityError("agent_exists", f"agent `{self.values['id']}` or its "
                                         "key or subject is already registered")
            return WITHDRAWN
        return None


def register_agent(registry: AgentRegistry, audit: AuditLog, clock: Clock, agent_id: str, *,
                   owner: str, proof: ProofSpec, manifest: Manifest, groups: Iterable[str] = (),
                   registered_by: str | None = None, source: str | None = None,
                   detail: dict[str, Any] | None = None) -> Agent:
    """Register ``agent_id`` as :meth:`AgentRegistry.register` does, with its
    ``agent.register`` event by ``registered_by`` (else the owner); the agent as
    registered. Raises what the registry refuses, or
    :class:`~proctor.errors.AuditUnavailableError`: then it is not registered."""
    values = registry.registration(agent_id, owner=owner, proof=proof, manifest=manifest,
                                   groups=groups, registered_by=registered_by)
    now = clock.now()
    key = values["id"]
    event = AuditEvent(id=new_event_id(now), time=now, actor=_actor(values["reviewed_by"]),
                       action="agent.register", target=f'Agent::"{key}"',
                       outcome="registered", source=source,
                       detail={**(detail or {}), "manifest_digest": manifest.digest})
    commit_with_event(audit, event, _Registration(values))
    return registry.get(key)


@dataclass(slots=True)
class _Review:
    """The review's columns, decided on the agent's row as the transaction reads it."""

    key: str
    reviewer: str
    manifest: Manifest | None
    expected_digest: str | None
    now: datetime
    event: AuditEvent
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        try:
            values = reviewed(agent_in(tx, self.key), reviewer=self.reviewer,
                              manifest=self.manifest, expected_digest=self.expected_digest,
                              now=self.now)
        except IdentityError as refused:
            self.refusal = refused
            return WITHDRAWN
        values["updated_at"] = self.now
        update_rows(tx, agents, values, "id = {p}", [self.key])
        return replace(self.event, outcome=values["trust_state"], detail={
            **self.event.detail, "manifest_digest": values["manifest_digest"]})


def review_agent(registry: AgentRegistry, audit: AuditLog, clock: Clock, agent_id: str, *,
                 reviewer: str, manifest: Manifest | None = None,
                 expected_digest: str | None = None, source: str | None = None,
                 detail: dict[str, Any] | None = None) -> Agent:
    """Review ``agent_id`` as :meth:`AgentRegistry.review` does, with its ``agent.review``
    event (its outcome the trust state it leaves, ``detail.manifest_digest`` the manifest
    adopted); the agent as it is now. Raises what the registry refuses, or
    :class:`~proctor.errors.AuditUnavailableError`: then nothing changed."""
    key = parse_agent_id(agent_id).id
    reviewer = check_review(key, reviewer, manifest, expected_digest)
    now = clock.now()
    event = AuditEvent(id=new_event_id(now), time=now, actor=_actor(reviewer),
                       action="agent.review", target=f'Agent::"{key}"', outcome="trusted",
                       source=source, detail=dict(detail or {}))
    commit_with_event(audit, event, _Review(key, reviewer, manifest, expected_digest, now,
                                            event))
    registry.changed(key)
    return registry.get(key)

"""Activating a policy revision, or storing a candidate, with its audit event, in one
transaction.

Activation makes a stored revision the active policy set (the one active before it is
retired): it may give access. It is the effects of its own ``policy.activate`` event,
in the audit writer's transaction (:mod:`proctor.oversight.audited`): the log holds the
event if and only if the revision became active. The event used to be written after
the activation had committed, so a process that died between the two left a policy set
in force with nothing in the log saying who put it there.

The revision is validated first (an invalid one raises ``policy_invalid`` and nothing
changes). If the audit log cannot be written, nothing changes and
:class:`~proctor.errors.AuditUnavailableError` says so (fail closed: the revision
active before stays active; it used to be activated, then the one before activated
again).

A policy directory applied (``proctor policy apply``: :func:`apply_sources`) is stored
as a candidate and activated in that one transaction: it used to be stored first, so an
outage or a crash left a candidate that nobody's event had stored. An activation of the
revision being shadowed stops the shadowing in the same transaction, with its own
``policy.shadow`` event (``stopped``): the route used to stop it afterwards with no event
at all.

A candidate uploaded (``policy.upload``) is stored with its event in the same way; the
same text uploaded again is the revision stored already, and its event names it. If the
log cannot be written nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from proctor.audit import Actor, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import NotFoundError, ProctorError
from proctor.oversight.audited import commit_with_event
from proctor.policy.compiled import CompiledPolicies
from proctor.policy.revisions import PolicyStore, digest_sources

__all__ = ["activate_revision", "apply_sources", "upload_candidate"]

_FIND = "SELECT id FROM policy_revisions WHERE id = {p}"
_SAME = "SELECT id FROM policy_revisions WHERE digest = {p} ORDER BY id DESC LIMIT 1"
_STORE = ("INSERT INTO policy_revisions (digest, status, origin, sources, created_at) "
          "VALUES ({p}, 'candidate', {p}, {p}, {p}) RETURNING id")
_RETIRE = "UPDATE policy_revisions SET status = 'retired' WHERE status = 'active'"
_ACTIVATE = "UPDATE policy_revisions SET status = 'active', activated_at = {p} WHERE id = {p}"


_STOP_SHADOW = ("UPDATE policy_shadow SET revision = NULL, changed_by = {p}, changed_at = {p} "
                "WHERE id = 1 AND revision = {p}")


@dataclass(slots=True)
class _Activation:
    """What :meth:`PolicyStore.activate` writes, in the writer's transaction: the
    revision (``candidate``'s, stored first, when there is one) made active, and the
    shadowing of it stopped as ``shadow_by`` (whose event goes with the activation's)."""

    revision: int
    now: datetime
    event: AuditEvent
    candidate: _Candidate | None = None
    shadow_by: str | None = None
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        instead = None
        if self.candidate is not None:
            self.candidate.apply(tx)
            self.revision = self.candidate.revision
            instead = replace(self.event, target=f"PolicyRevision::{self.revision}")
        if not tx.rows(_FIND + ("" if tx.is_sqlite else " FOR UPDATE"), [self.revision]):
            self.refusal = NotFoundError(f"policy revision `{self.revision}` does not exist")
            return WITHDRAWN
        tx.execute(_RETIRE)
        tx.execute(_ACTIVATE, [tx.time(self.now), self.revision])
        if self.shadow_by is not None and not tx.execute(
                _STOP_SHADOW, [self.shadow_by, tx.time(self.now), self.revision]):
            # shadowing another revision by now: the activation's event alone
            instead = replace(self.event)
        return instead


def _event(by: Actor, action: str, target: str, outcome: str, now: datetime,
           source: str | None, detail: Mapping[str, Any] | None = None) -> AuditEvent:
    return AuditEvent(id=new_event_id(now), time=now, actor=by, action=action, target=target,
                      outcome=outcome, source=source, detail=dict(detail or {}))


def activate_revision(policies: PolicyStore, audit: AuditLog, clock: Clock, revision: int, *,
                      by: Actor, source: str | None = None,
                      detail: dict[str, Any] | None = None,
                      compiled: CompiledPolicies | None = None,
                      shadowed: int | None = None) -> CompiledPolicies:
    """Validate ``revision`` (unless ``compiled`` is it, validated) and make it the active
    set, with its ``policy.activate`` event by ``by``, then in this process's engine.
    ``shadowed``: the revision shadowed now; if it is this one, the shadowing stops in the
    same transaction, with its ``policy.shadow`` event. Raises ``policy_invalid``,
    ``not_found``, or :class:`~proctor.errors.AuditUnavailableError`: then nothing
    changed."""
    compiled = compiled if compiled is not None else policies.compile(revision)
    now = clock.now()
    target = f"PolicyRevision::{revision}"
    event = _event(by, "policy.activate", target, "activated", now, source, detail)
    more: Sequence[AuditEvent] = ()
    activation = _Activation(revision, now, event)
    if shadowed == revision:
        activation.shadow_by = by.id
        more = [_event(by, "policy.shadow", target, "stopped", now, source,
                       {"reason": "activated"})]
    commit_with_event(audit, event, activation, more=more)
    policies.activated(compiled)
    return compiled


def apply_sources(policies: PolicyStore, audit: AuditLog, clock: Clock,
                  sources: Mapping[str, str], compiled: CompiledPolicies, *, by: Actor,
                  origin: str, source: str | None = None,
                  detail: dict[str, Any] | None = None) -> CompiledPolicies:
    """Store ``sources`` (``compiled``: validated) as a candidate, unless that text is
    stored already, and make it the active set, with its ``policy.activate`` event by
    ``by``, in one transaction; then in this process's engine. Raises
    :class:`~proctor.errors.AuditUnavailableError`: then nothing was stored or changed."""
    now = clock.now()
    event = _event(by, "policy.activate", "PolicyRevision::", "activated", now, source,
                   detail)
    candidate = _Candidate(sources, digest_sources(sources), origin, now, event)
    activation = _Activation(0, now, event, candidate)
    commit_with_event(audit, event, activation)
    compiled.revision = activation.revision
    policies.activated(compiled)
    return compiled


@dataclass(slots=True)
class _Candidate:
    """The revision with these sources, stored now unless it is already."""

    sources: Mapping[str, str]
    digest: str
    origin: str
    now: datetime
    event: AuditEvent
    revision: int = 0
    refusal: ProctorError | None = None  # none: storing a candidate refuses nothing

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        found = tx.rows(_SAME, [self.digest])
        self.revision = int(found[0][0]) if found else int(tx.rows(_STORE, [
            self.digest, self.origin, json.dumps(dict(self.sources)),
            tx.time(self.now)])[0][0])
        return replace(self.event, target=f"PolicyRevision::{self.revision}")


def upload_candidate(audit: AuditLog, clock: Clock, sources: Mapping[str, str], *,
                     by: Actor, origin: str,
                     source: str | None = None) -> int:
    """Store ``sources`` (validated by the caller) as a candidate revision, as
    :meth:`PolicyStore.add_candidate` does, with its ``policy.upload`` event by ``by``;
    the revision's number. Raises :class:`~proctor.errors.AuditUnavailableError`: then
    nothing was stored."""
    digest = digest_sources(sources)
    now = clock.now()
    event = AuditEvent(id=new_event_id(now), time=now, actor=by, action="policy.upload",
                       target="PolicyRevision::", outcome="stored", source=source,
                       detail={"digest": digest})
    candidate = _Candidate(sources, digest, origin, now, event)
    commit_with_event(audit, event, candidate)
    return candidate.revision

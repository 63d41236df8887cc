"""Building events for decisions and human actions, and auditing every decision.

:func:`decide_and_record` is step 4 of a decision: the decision is made,
its event is written durably, and only then is the answer returned. If the
event cannot be written the answer is a deny with code ``audit_unavailable``,
unless the operator explicitly built the log with ``fail_open=True``.

>>> event = human_event("alice@acme.example", "approval.grant", 'Tool::"git/git_push"',
...                     "approved", concerns="3f0c...",
...                     now=datetime.fromisoformat("2026-01-01T00:00:00+00:00"))
>>> event.actor.type.value, event.concerns
('human', '3f0c...')
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from json.encoder import encode_basestring as _text
from typing import Any, Protocol

from proctor.audit.driver import WriteCursor
from proctor.audit.events import Actor, ActorType, AuditEvent, DecisionRecord, new_event_id
from proctor.audit.masking import mask, mask_labels
from proctor.audit.writer import AuditLog
from proctor.errors import AuditError, AuditUnavailableError, ProctorError
from proctor.policy.model import Decision, DecisionRequest, Outcome, ReasonCode

__all__ = [
    "DecisionPoint",
    "commit_with_event",
    "decide_and_record",
    "decision_event",
    "human_event",
    "record_change",
    "request_digest",
    "unaudited",
]

log = logging.getLogger(__name__)

_OUTCOMES = {
    Outcome.ALLOW: "allowed",
    Outcome.DENY: "denied",
    Outcome.APPROVAL_REQUIRED: "pending_approval",
}
_ACTOR_TYPES = {"Agent": ActorType.AGENT, "Human": ActorType.HUMAN}


class DecisionPoint(Protocol):
    def decide(self, request: DecisionRequest) -> Decision: ...


# Context entries that hold only identifiers, times and flags; every other
# entry (the arguments, the purpose, anything new) is masked before digesting.
_PLAIN_CONTEXT = frozenset({"task", "on_behalf_of", "delegation", "time", "approved",
                            "sensitivity_seen", "source_ip"})
# Entries masked as labels (the same text call after call: one found clean is
# remembered): the task's purpose and the argument names the grant constrains.
_LABEL_CONTEXT = frozenset({"purpose", "grant"})


def request_digest(request: DecisionRequest) -> str:
    """SHA-256 of the masked request as sorted, compact JSON.

    Masked first, so the digest cannot be used to confirm a guessed secret.
    """
    context = {key: value if key in _PLAIN_CONTEXT
               else mask_labels(value) if key in _LABEL_CONTEXT
               else mask(value) for key, value in request.context.items()}
    principal, resource, action = request.principal, request.resource, request.action
    if (type(action) is str and type(principal.id) is str and type(principal.type) is str
            and type(resource.id) is str and type(resource.type) is str):
        # the document's four keys in their sorted order, written around the context's
        # dump: what `_digest_json` of the whole document writes, to the character
        text = "".join((
            '{"action":', _text(action), ',"context":', _digest_json(context),
            ',"principal":{"id":', _text(principal.id), ',"type":', _text(principal.type),
            '},"resource":{"id":', _text(resource.id), ',"type":', _text(resource.type),
            "}}"))
    else:
        text = _digest_json({"principal": principal.as_json(), "action": action,
                             "resource": resource.as_json(), "context": context})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
# default=str)` to the character, without a JSONEncoder built for every decision: its
# C core made once (no circular check: a request's context is a tree of JSON values).
_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # absent without _json
_digest_encoder = None if _make_encoder is None else _make_encoder(
    None, str, _text, None, ":", ",", True, False, True)


def _digest_json(document: Mapping[str, Any]) -> str:
    if _digest_encoder is None:
        return json.dumps(document, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, default=str)
    return "".join(_digest_encoder(document, 0))


def _source(context: Mapping[str, Any]) -> str | None:
    source = context.get("source_ip")
    if isinstance(source, Mapping):
        source = source.get("__extn", {}).get("arg")
    return str(source) if source else None


def decision_event(request: DecisionRequest, decision: Decision, *, now: datetime,
                   grant: str | None = None, event_id: str | None = None,
                   holder: str | None = None,
                   decided_again: tuple[str, str] | None = None) -> AuditEvent:
    """The event of one decision on ``request``; ``grant`` is the grant's accessor,
    ``holder`` how the grant's key was shown when not by a proof (``in_process``),
    ``decided_again`` the code and reason of the write that refused the decision
    taken first (on what another process had changed), which this one replaces."""
    context = request.context
    delegation = context.get("delegation")
    chain = delegation.get("chain", ()) if isinstance(delegation, Mapping) else ()
    purpose = context.get("purpose")
    args = context.get("args")
    principal = request.principal
    # the target and the detail's parts go in unmasked: the event masks them
    return AuditEvent.of_decision(
        event_id or new_event_id(now),  # id
        now,  # time
        _actor(principal.type, principal.id, str(context.get("on_behalf_of", ""))),
        request.action,
        str(request.resource),  # target
        _OUTCOMES[decision.outcome],
        str(context.get("task", "")),
        tuple(str(a) for a in chain),  # delegation chain
        _record_of(decision),
        request_digest(request),
        grant,
        _source(context),
        holder=holder,
        purpose=str(purpose) if purpose else None,
        errors=decision.errors,
        args=args if type(args) is dict or isinstance(args, Mapping) else None,
        decided_again=decided_again,
    )


# The records of the decisions seen last, and their actors: the same few come back
# call after call (a record's reasons are masked once, its JSON written once).
_RECORDS: dict[tuple[Any, ...], DecisionRecord] = {}
_ACTORS: dict[tuple[str, str, str], Actor] = {}
_REMEMBERED_MOST = 1024


def _record_of(decision: Decision) -> DecisionRecord:
    key = (decision.outcome, decision.code, decision.policy_ids, decision.revision,
           decision.reasons)
    try:
        record = _RECORDS.get(key)
    except TypeError:  # a decision built with lists where tuples belong: made each time
        return DecisionRecord(decision.outcome.value, decision.code.value,
                              decision.policy_ids, decision.revision, decision.reasons)
    if record is None:
        record = DecisionRecord(decision.outcome.value, decision.code.value,
                                decision.policy_ids, decision.revision, decision.reasons)
        if record.reasons == decision.reasons:  # never remembered: reasons that held a secret
            if len(_RECORDS) >= _REMEMBERED_MOST:
                _RECORDS.clear()
            _RECORDS[key] = record
    return record


def _actor(principal_type: str, principal_id: str, on_behalf_of: str) -> Actor:
    key = (principal_type, principal_id, on_behalf_of)
    try:
        actor = _ACTORS.get(key)
    except TypeError:  # an id that is not a string (a caller's mistake): made each time
        return Actor(_ACTOR_TYPES.get(principal_type, ActorType.SYSTEM), principal_id,
                     on_behalf_of)
    if actor is None:
        actor = Actor(_ACTOR_TYPES.get(principal_type, ActorType.SYSTEM), principal_id,
                      on_behalf_of)
        if len(_ACTORS) >= _REMEMBERED_MOST:
            _ACTORS.clear()
        _ACTORS[key] = actor
    return actor


def human_event(human_id: str, action: str, target: str, outcome: str, *, now: datetime,
                concerns: str | None = None, task: str = "", reason: str = "",
                source: str | None = None, event_id: str | None = None,
                detail: Mapping[str, Any] | None = None) -> AuditEvent:
    """The event of a human's action, e.g. an approval (``approval.grant``) or a
    revocation (``grant.revoke``), linked by ``concerns`` to the event it is about;
    ``reason`` goes into ``detail`` beside the other entries."""
    return AuditEvent(
        id=event_id or new_event_id(now), time=now, actor=Actor(ActorType.HUMAN, human_id),
        action=action, target=target, outcome=outcome, task=task, source=source,
        concerns=concerns, detail={**(detail or {}), **({"reason": reason} if reason else {})},
    )


def record_change(audit: AuditLog, event: AuditEvent, *,
                  undo: Callable[[], str] | None = None) -> None:
    """Write the event of a change that has already taken effect, or raise.

    If the event cannot be written, ``undo`` (when given) takes the change back
    and says what it did; either way :class:`~proctor.errors.AuditUnavailableError`
    names the change, so that no caller reports an unaudited change as a success.
    A change that takes access away gets no ``undo``: it stands.
    """
    try:
        audit.record(event)
    except AuditError as exc:
        what = f"`{event.action}` of `{event.target}`"
        log.error("%s took effect but could not be audited", what)
        if undo is None:
            raise AuditUnavailableError(f"{what} took effect but could not be audited") from exc
        try:
            done = undo()
        except ProctorError as failed:
            raise AuditUnavailableError(f"{what} could not be audited, and undoing it "
                                        f"failed: {failed.message}") from exc
        raise AuditUnavailableError(f"{what} could not be audited, so it was undone: "
                                    f"{done}") from exc


class _Refusing(Protocol):
    """Effects (:class:`~proctor.audit.writer.Effects`) that leave what they refused in
    :attr:`refusal` (:class:`proctor.oversight.audited.Change`)."""

    refusal: ProctorError | None

    def apply(self, tx: WriteCursor) -> AuditEvent | None: ...


def commit_with_event(audit: AuditLog, event: AuditEvent, change: _Refusing, *,
                      alone: Callable[[], object] | None = None,
                      more: Sequence[AuditEvent] = ()) -> None:
    """Make ``change`` with ``event`` in one transaction of the audit writer, or raise
    its refusal. If the log cannot be written: ``alone`` (a change that takes access
    away) makes the change without its event; without it (a change that gives access)
    nothing is made. Either way :class:`~proctor.errors.AuditUnavailableError` says
    which. ``more``: events written after ``event`` if the change keeps it (its
    ``apply`` returns None), else none of them. (:mod:`proctor.oversight.audited`.)"""
    try:
        audit.record_with(event, change, more=more)
    except AuditError as exc:
        what = f"`{event.action}` of `{event.target}`"
        if alone is None:
            log.error("%s could not be audited; it was not made", what)
            raise AuditUnavailableError(
                f"{what} could not be audited, so it was not made") from exc
        log.error("%s could not be audited; it is made all the same", what)
        alone()
        raise AuditUnavailableError(f"{what} took effect but could not be audited") from exc
    if change.refusal is not None:
        raise change.refusal


def decide_and_record(engine: DecisionPoint, audit: AuditLog, request: DecisionRequest, *,
                      grant: str | None = None, event_id: str | None = None) -> Decision:
    """Decide ``request`` and return the decision once its audit event is durable.

    Never raises: when the event cannot be written the answer is a deny
    (``audit_unavailable``), or, on a log built with ``fail_open=True``, the
    decision as made.
    """
    decision = engine.decide(request)
    try:
        audit.record(decision_event(request, decision, now=audit.clock.now(), grant=grant,
                                    event_id=event_id))
    except Exception as exc:  # the decision point answers, it never raises
        return unaudited(audit, decision, exc)
    return decision


def unaudited(audit: AuditLog, decision: Decision, exc: Exception) -> Decision:
    """What a decision whose event could not be written becomes: a deny
    ``audit_unavailable``, or itself on a log built with ``fail_open=True``."""
    message = getattr(exc, "message", None) or f"audit failed: {type(exc).__name__}"
    if audit.fail_open:
        log.error("decision not audited (fail-open configured): %s", message)
        return decision
    return Decision(
        Outcome.DENY, ReasonCode.AUDIT_UNAVAILABLE,
        reasons=("the decision could not be audited, so the request is denied",),
        errors=(message,), revision=decision.revision,
    )

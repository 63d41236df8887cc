"""The audit event: one versioned schema for agents, humans and the system.

An event is a value. Its JSON form (:meth:`AuditEvent.as_json`, schema
version :data:`SCHEMA_VERSION`) is what the chain hashes, what ``export
--format jsonl`` prints and what ``docs/audit.md`` documents. Free-form parts
(target, reasons, detail) are masked when the event is constructed, so an
event holding a secret cannot exist. A decision's event
(:meth:`AuditEvent.of_decision`, once per decision) is built from its unmasked parts,
which it masks itself, each as what it is (a label, the errors, the argument
features), without walking a detail again; every way to make an event masks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from json import encoder as _json_encoder
from json.encoder import encode_basestring as _text
from typing import Any

from proctor.audit.chain import canonical_json, check_json_value
from proctor.audit.features import argument_features
from proctor.audit.masking import mask, mask_label

__all__ = [
    "NUL_RECORDED_AS",
    "SCHEMA_VERSION",
    "Actor",
    "ActorType",
    "AuditEvent",
    "DecisionRecord",
    "StoredEvent",
    "format_time",
    "new_event_id",
    "recordable_text",
]

SCHEMA_VERSION = 1

# What a NUL (U+0000) in an event's text is recorded as: the six characters of its JSON
# escape. PostgreSQL refuses the character in a text column and the escape in jsonb, so
# an event holding one could not be written there (nor verified): an agent that put a
# NUL in a tool name or an argument would make its own call unrecordable, and fail the
# events of its batch. Replaced before the event is hashed, so both databases store the
# same event and ``proctor audit verify`` holds. (A recorded ``\u0000`` may have been
# a NUL or those six characters: the log says so in docs/audit.md.)
NUL_RECORDED_AS = "\\u0000"


def recordable_text(value: str) -> str:
    """``value`` with each NUL replaced by :data:`NUL_RECORDED_AS`."""
    return value.replace("\x00", NUL_RECORDED_AS) if "\x00" in value else value


def _recordable(value: Any) -> Any:
    """A JSON value with every NUL of its strings (keys too) replaced."""
    if isinstance(value, str):
        return recordable_text(value)
    if isinstance(value, Mapping):
        return {recordable_text(k) if isinstance(k, str) else k: _recordable(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_recordable(v) for v in value]
    return value


class ActorType(StrEnum):
    """Who acted: agents and humans are never mixed up, in queries or exports."""

    AGENT = "agent"
    HUMAN = "human"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal that acted; ``on_behalf_of`` is an agent's accountable owner."""

    type: ActorType
    id: str
    on_behalf_of: str = ""

    def as_json(self) -> dict[str, str]:
        return {"type": self.type.value, "id": self.id, "on_behalf_of": self.on_behalf_of}


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """The decision an event records: outcome, reason code, policies and revision."""

    outcome: str
    code: str
    policy_ids: tuple[str, ...] = ()
    revision: int | None = None
    reasons: tuple[str, ...] = ()
    # its canonical JSON, written by the first event body that holds it (a record
    # comes back decision after decision: recording keeps the last ones)
    _body: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reasons", tuple(
            mask_label(r) if type(r) is str else mask(r) for r in self.reasons))

    def canonical_json(self) -> str:
        """``canonical_json(self.as_json())`` as text, written once."""
        body = self._body
        if body is None:
            body = "".join((
                '{"code":', _text(self.code), ',"outcome":', _text(self.outcome),
                ',"policy_ids":', _texts(self.policy_ids), ',"reasons":', _texts(self.reasons),
                ',"revision":', "null" if self.revision is None else str(int(self.revision)),
                "}"))
            object.__setattr__(self, "_body", body)
        return body

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "code": self.code, "policy_ids": list(self.policy_ids),
                "revision": self.revision, "reasons": list(self.reasons)}


_UTC_OFFSET = timedelta(0)


def format_time(value: datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("audit times must be aware datetimes")
    if offset != _UTC_OFFSET:  # the usual case is UTC already
        value = value.astimezone(UTC)
    # isoformat(timespec="microseconds")'s text, in half its CPU (its keyword argument
    # is most of the cost); this runs once per event
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond)


def new_event_id(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): the millisecond of ``now``, then 74 random bits.

    Time-ordered ids keep the unique index append-mostly. The random bits come
    from the operating system, not the ``random`` module, whose shared state a test
    framework (or anyone) may seed: ids must stay unique whatever happens to it.
    Written as text from hex digits (the time's 12, the version, 19 random ones
    of which the variant's digit keeps 2 bits), not through a 128-bit integer.
    """
    millis = f"{int(now.timestamp() * 1000) & _MILLIS:012x}"
    r = _random_hex()
    return (f"{millis[:8]}-{millis[8:]}-7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:]}")


_MILLIS = (1 << 48) - 1
# the variant's digit (RFC 9562: binary 10 then 2 random bits) for a random hex digit
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class _RandomHex:
    """19 random hex digits at a time from the operating system, read 4 KiB at once:
    one system call per 400 event ids rather than one each (a measured share of a
    decision's CPU on a busy machine). Taken under a lock: no two ids share digits;
    a forked child (server workers) starts a pool of its own, never its parent's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = ""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = "", 0

    def __call__(self) -> str:
        with self._lock:
            at = self._at
            if at + 19 > len(self._pool):
                self._pool, at = os.urandom(4000).hex(), 0
            self._at = at + 19
            return self._pool[at:at + 19]


_random_hex = _RandomHex()


# The JSON encoder's C core, made once: `canonical_json` builds a new one per call (a
# measured third of an event's detail). No cycle check: a detail passed
# `check_json_value`, which walks it first.
_make_encoder = getattr(_json_encoder, "c_make_encoder", None)  # absent without _json
_detail_encoder = None if _make_encoder is None else _make_encoder(
    None, None, _text, None, ":", ",", True, False, False)


def _detail_json(detail: Mapping[str, Any]) -> str:
    """``canonical_json(detail)`` as text."""
    if _detail_encoder is None:
        return canonical_json(dict(detail)).decode("utf-8")
    return "".join(_detail_encoder(detail, 0))


def _maybe(value: str | None) -> str:
    return "null" if value is None else _text(value)


def _texts(values: tuple[str, ...]) -> str:
    return "[" + ",".join(map(_text, values)) + "]"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened, by whom, under which decision.

    ``request_digest`` is the SHA-256 of the masked request's canonical JSON;
    ``grant`` is the grant's accessor, never its token; ``concerns`` is the id
    of the event this one is about (a human approval names the agent event
    that asked for it).
    """

    id: str
    time: datetime
    actor: Actor
    action: str
    target: str
    outcome: str
    task: str = ""
    delegation_chain: tuple[str, ...] = ()
    decision: DecisionRecord | None = None
    request_digest: str | None = None
    grant: str | None = None
    source: str | None = None
    concerns: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("audit times must be aware datetimes")
        target = self.target
        object.__setattr__(self, "target", mask_label(target) if type(target) is str
                           else mask(target))
        detail = mask(dict(self.detail))
        check_json_value(detail)
        object.__setattr__(self, "detail", detail)

    @classmethod
    def of_decision(cls, id: str, time: datetime, actor: Actor, action: str, target: str,
                    outcome: str, task: str, delegation_chain: tuple[str, ...],
                    decision: DecisionRecord, request_digest: str, grant: str | None,
                    source: str | None, /, *, holder: str | None = None,
                    purpose: str | None = None, errors: Sequence[Any] = (),
                    args: Mapping[str, Any] | None = None,
                    decided_again: tuple[str, str] | None = None) -> AuditEvent:
        """The event of one decision (:func:`~proctor.audit.recording.decision_event`),
        its fields in the dataclass's order, from its unmasked parts: ``target`` and the
        detail's entries — ``holder`` and ``purpose`` (labels), ``errors``, and the
        features of the call's ``args`` (for behaviour baselines: its domains and whole
        numbers, never a string value), ``decided_again`` (the code and reason of the
        refused write of the decision this one replaces) — are masked here, each as what it is, as
        construction masks them: no walk of a detail again, no dataclass ``__init__`` (a
        measured 4 of a decision event's 24 µs). The same value as ``AuditEvent(...)``
        of the same fields; a property test holds the two equal. (The fields go by
        position: a call of more than 15 keywords costs CPython 3.11 0.45 µs more.)"""
        if time.tzinfo is None:
            raise ValueError("audit times must be aware datetimes")
        detail: dict[str, Any] = {} if holder is None else {"holder": mask_label(holder)}
        if purpose:
            detail["purpose"] = mask_label(purpose)
        if errors:
            masked_errors = mask(list(errors))
            check_json_value(masked_errors)
            detail["errors"] = masked_errors
        if args:
            features = argument_features(args)  # whole numbers and domains: JSON values
            if features:
                detail["args"] = mask(features)
        if decided_again is not None:  # the refused write's code and reason
            detail["decided_again"] = {"code": decided_again[0],
                                       "reason": mask_label(decided_again[1][:500])}
        event = _new(cls)
        _set_id(event, id)
        _set_time(event, time)
        _set_actor(event, actor)
        _set_action(event, action)
        _set_target(event, mask_label(target))
        _set_outcome(event, outcome)
        _set_task(event, task)
        _set_delegation_chain(event, delegation_chain)
        _set_decision(event, decision)
        _set_request_digest(event, request_digest)
        _set_grant(event, grant)
        _set_source(event, source)
        _set_concerns(event, None)  # a decision concerns no other event
        _set_detail(event, detail)
        return event

    def as_json(self) -> dict[str, Any]:
        """The event as schema version 1 JSON (the hashed form)."""
        return {
            "v": SCHEMA_VERSION,
            "id": self.id,
            "time": format_time(self.time),
            "actor": self.actor.as_json(),
            "delegation_chain": list(self.delegation_chain),
            "task": self.task,
            "action": self.action,
            "target": self.target,
            "decision": None if self.decision is None else self.decision.as_json(),
            "outcome": self.outcome,
            "request_digest": self.request_digest,
            "grant": self.grant,
            "source": self.source,
            "concerns": self.concerns,
            "detail": dict(self.detail),
        }

    def canonical_body(self) -> bytes:
        """``canonical_json(self.as_json())``, built directly: this runs once per event.

        Keys are written in sorted order; strings go through the same C
        escaper the JSON encoder uses. A property test keeps the two equal.
        """
        return self.canonical_body_and_time()[0]

    def canonical_body_and_time(self) -> tuple[bytes, str]:
        """:meth:`canonical_body` and the time it holds (``format_time(self.time)``):
        the writer stores that time too, and formatting a datetime costs as much as
        the rest of the body's strings."""
        time = format_time(self.time)
        d, a = self.decision, self.actor
        decision = "null" if d is None else d.canonical_json()
        detail = _detail_json(self.detail) if self.detail else "{}"
        # the actor's type is a StrEnum: escaped as it is, its text is its value
        return "".join((
            '{"action":', _text(self.action), ',"actor":{"id":', _text(a.id),
            ',"on_behalf_of":', _text(a.on_behalf_of), ',"type":', _text(a.type),
            '},"concerns":', _maybe(self.concerns), ',"decision":', decision,
            ',"delegation_chain":', _texts(self.delegation_chain), ',"detail":', detail,
            ',"grant":', _maybe(self.grant), ',"id":', _text(self.id),
            ',"outcome":', _text(self.outcome), ',"request_digest":', _maybe(self.request_digest),
            ',"source":', _maybe(self.source), ',"target":', _text(self.target),
            ',"task":', _text(self.task), ',"time":"', time, '","v":', str(SCHEMA_VERSION), "}",
        )).encode("utf-8"), time

    def recordable(self) -> AuditEvent:
        """This event as it is written: itself, or, if any of its text holds a NUL,
        the same event with each NUL replaced by :data:`NUL_RECORDED_AS` (see there).
        The writer asks only when the body it built holds a NUL's JSON escape (one
        scan of the body: no walk of the fields per event)."""
        text = recordable_text
        actor, d = self.actor, self.decision
        event = AuditEvent(
            id=text(self.id), time=self.time,
            actor=Actor(actor.type, text(actor.id), text(actor.on_behalf_of)),
            action=text(self.action), target=text(self.target), outcome=text(self.outcome),
            task=text(self.task), delegation_chain=tuple(map(text, self.delegation_chain)),
            decision=None if d is None else DecisionRecord(
                text(d.outcome), text(d.code), tuple(map(text, d.policy_ids)), d.revision,
                tuple(map(text, d.reasons))),
            request_digest=_maybe_text(self.request_digest), grant=_maybe_text(self.grant),
            source=_maybe_text(self.source), concerns=_maybe_text(self.concerns),
            detail=_recordable(dict(self.detail)))
        return self if event == self else event

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Read an event back from its JSON form."""
        if data.get("v") != SCHEMA_VERSION:
            raise ValueError(f"audit event schema version `{data.get('v')}` is not supported")
        actor = data["actor"]
        decision = data.get("decision")
        return cls(
            id=data["id"],
            time=datetime.fromisoformat(data["time"]),
            actor=Actor(ActorType(actor["type"]), actor["id"], actor.get("on_behalf_of", "")),
            action=data["action"],
            target=data["target"],
            outcome=data["outcome"],
            task=data.get("task", ""),
            delegation_chain=tuple(data.get("delegation_chain") or ()),
            decision=None if decision is None else DecisionRecord(
                decision["outcome"], decision["code"], tuple(decision["policy_ids"]),
                decision["revision"], tuple(decision["reasons"])),
            request_digest=data.get("request_digest"),
            grant=data.get("grant"),
            source=data.get("source"),
            concerns=data.get("concerns"),
            detail=data.get("detail") or {},
        )


def _maybe_text(value: str | None) -> str | None:
    return None if value is None else recordable_text(value)


# The slots' own setters (what a frozen dataclass's __init__ reaches through
# object.__setattr__), for AuditEvent.of_decision.
_new = object.__new__
(_set_id, _set_time, _set_actor, _set_action, _set_target, _set_outcome, _set_task,
 _set_delegation_chain, _set_decision, _set_request_digest, _set_grant, _set_source,
 _set_concerns, _set_detail) = (
    AuditEvent.__dict__[f.name].__set__ for f in fields(AuditEvent))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event at its position in the chain."""

    seq: int
    prev_hash: str
    hash: str
    event: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The export line: enough to re-check the chain link offline."""
        return {"seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash,
                "event": dict(self.event)}

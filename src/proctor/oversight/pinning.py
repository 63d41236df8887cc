"""Tool pinning: the reviewed definition of every upstream tool, against silent changes.

A tool's *definition* is what an agent's model reads and what the gateway enforces:
its name, title, description, ``inputSchema``, ``outputSchema`` and annotations.
A verdict is a property of a (tool, definition digest) pair, never a state an upstream
can flip: a listed definition is reviewed if and only if its digest is the tool's
reviewed digest (``reviewed_digest``, set by the first sight of the server or by a
human's review, never by a listing). Every other definition seen has a row of its own in
``tool_definitions``, by digest: ``pending`` (waits for a human) or ``rejected`` (by a
human). Each time the gateway lists an upstream's tools, :meth:`ToolPins.check` holds
each definition against the tool's pin, in one transaction per server:

1. a server seen for the first time: every tool it lists is recorded as reviewed
   (the first definition is the one a human put behind proctor), unless a human
   rejected that definition;
2. a tool whose definition is the reviewed one: reviewed. A definition another session
   was shown stays pending (an upstream showing the old definition to one session does
   not clear it), but the tool no longer shows it as what it lists now: a change the
   upstream took back is not shown as if it were current;
3. a definition a human rejected: ``rejected`` (denied ``tool_rejected``), whatever the
   pin mode, however often the upstream lists it again;
4. any other definition of a reviewed tool: ``unreviewed``, change ``changed`` (denied
   ``tool_changed``), pending under its own digest (each of several is reviewed or
   rejected by its own digest);
5. a new tool on a known server: ``unreviewed``, change ``new`` (denied
   ``tool_unreviewed``) — unless its definition, name aside, is the reviewed
   definition of a tool of the server that is no longer listed: then it is a
   **rename** of a reviewed tool (change ``renamed``, denied ``tool_changed``).

``pin_state`` and ``seen_definition`` say what the last listing showed (``reviewed``,
``unreviewed`` with that definition, or ``rejected``); they never let a call through:
:meth:`ToolPins.verdict` and a call's write (with ``pin: strict``, ``grants/use.py``)
compare the digest of the definition in hand with the reviewed digest.

Each new definition is audited once, when it is first seen (``tool.changed``, by the
system). A human's :meth:`ToolPins.review` makes one pending definition, named by its
digest, the reviewed one (``tool.review``); :meth:`ToolPins.reject` rejects one
(``tool.reject``): both by humans only, each for exactly the digest named. With ``pin:
strict`` (the default) an unreviewed tool is hidden from listings and its calls are
denied; ``warn`` reports and audits but lets it through (a rejected definition is held
back all the same); ``off`` does not pin the server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Row, select

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id
from proctor.clock import Clock
from proctor.codes import Code
from proctor.errors import NotFoundError
from proctor.store import Store
from proctor.store.tables import tool_catalog, tool_definitions

__all__ = ["DEFINITION_FIELDS", "PIN_MODES", "PinMode", "PinRecord", "PinVerdict",
           "SeenDefinition", "ToolPins", "definition_digest", "definition_of"]

PinMode = Literal["strict", "warn", "off"]
PIN_MODES: tuple[PinMode, ...] = ("strict", "warn", "off")
DEFINITION_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema",
                     "annotations")
_SYSTEM = Actor(ActorType.SYSTEM, "proctor-gateway")


def definition_of(tool: Any) -> dict[str, Any]:
    """The pinned fields of an MCP ``Tool`` (a model or its JSON), as JSON."""
    data = tool.model_dump(by_alias=True, mode="json", exclude_none=True) \
        if hasattr(tool, "model_dump") else dict(tool)
    return {k: data[k] for k in DEFINITION_FIELDS if data.get(k) is not None}


def definition_digest(definition: Mapping[str, Any], *, without_name: bool = False) -> str:
    """SHA-256 of the canonical JSON of ``definition`` (its name left out for renames)."""
    fields = {k: v for k, v in definition.items() if not (without_name and k == "name")}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PinVerdict:
    """Whether one listed tool matches its pin; ``code`` is the refusal when it does not."""

    tool_id: str
    is_reviewed: bool
    change: str | None = None  # new | changed | renamed | rejected
    renamed_from: str | None = None
    digest: str = ""  # of the definition judged (what a call on it is made against)

    @property
    def is_rejected(self) -> bool:
        """A human rejected this definition: held back whatever the pin mode."""
        return self.change == "rejected"

    @property
    def code(self) -> Code | None:
        if self.is_reviewed:
            return None
        code: Code = ("tool_unreviewed" if self.change == "new" else
                      "tool_rejected" if self.is_rejected else "tool_changed")
        return code

    @property
    def message(self) -> str:
        if self.is_rejected:
            return (f"a human rejected the definition of tool `{self.tool_id}` the upstream "
                    f"lists (digest `{self.digest}`); it stays denied")
        if self.change == "renamed":
            return (f"tool `{self.tool_id}` is reviewed tool `{self.renamed_from}` under "
                    "another name; a human must review it (proctor tool review)")
        if self.change == "new":
            return (f"tool `{self.tool_id}` is new on a known server; a human must review it "
                    "(proctor tool review)")
        return (f"the definition of tool `{self.tool_id}` changed since it was reviewed; a "
                "human must review it (proctor tool review)")


@dataclass(frozen=True, slots=True)
class SeenDefinition:
    """A definition of a tool seen and not reviewed: pending, or rejected by a human."""

    digest: str
    definition: dict[str, Any]
    verdict: str  # pending | rejected
    change: str  # new | changed | renamed, as first seen
    renamed_from: str | None
    seen_at: datetime
    listed_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    is_listed: bool = False  # what the last listing of the tool showed

    def as_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "definition": self.definition, "verdict": self.verdict,
                "change": self.change, "renamed_from": self.renamed_from,
                "seen_at": self.seen_at, "listed_at": self.listed_at,
                "decided_at": self.decided_at, "decided_by": self.decided_by,
                "is_listed": self.is_listed}


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A tool's pin as stored: the reviewed definition, what the last listing showed, and
    every definition seen since that waits for a human (``pending``) or was rejected."""

    tool_id: str
    server: str
    state: str  # of the last listing: reviewed | unreviewed | rejected
    definition: dict[str, Any] | None
    seen_definition: dict[str, Any] | None  # the last listing's, when not the reviewed one
    change: str | None
    renamed_from: str | None
    changed_at: datetime | None
    reviewed_at: datetime | None
    reviewed_by: str | None
    pending: tuple[SeenDefinition, ...] = field(default=())  # listed now, then newest
    rejected: tuple[SeenDefinition, ...] = field(default=())

    @property
    def seen_digest(self) -> str | None:
        """The digest of the definition the last listing showed, if it is not reviewed."""
        return definition_digest(self.seen_definition) if self.seen_definition else None

    @property
    def reviewed_digest(self) -> str | None:
        return definition_digest(self.definition) if self.definition else None

    @property
    def to_review(self) -> SeenDefinition | None:
        """The pending definition a review without a digest shows: the one listed now,
        else the one listed last."""
        return next((p for p in self.pending if p.is_listed), None) or (
            self.pending[0] if self.pending else None)

    def pending_definition(self, digest: str) -> SeenDefinition | None:
        return next((p for p in self.pending if p.digest == digest), None)

    def as_json(self) -> dict[str, Any]:
        return {"tool": self.tool_id, "server": self.server, "state": self.state,
                "change": self.change, "renamed_from": self.renamed_from,
                "changed_at": self.changed_at, "reviewed_at": self.reviewed_at,
                "reviewed_by": self.reviewed_by, "definition": self.definition,
                "reviewed_digest": self.reviewed_digest,
                "seen_definition": self.seen_definition, "seen_digest": self.seen_digest,
                "pending": [p.as_json() for p in self.pending],
                "rejected": [r.as_json() for r in self.rejected]}


class ToolPins:
    """The pins of every upstream tool, in the store; safe to share between threads."""

    def __init__(self, store: Store, clock: Clock, audit: AuditLog) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit

    def check(self, server: str, listed: Iterable[Any]) -> dict[str, PinVerdict]:
        """Hold each listed tool of ``server`` against its pin; returns a verdict per
        tool name. Tools without a catalog row (left out by the gateway) are unreviewed."""
        from proctor.oversight.pin_listing import hold_listing

        definitions = {d["name"]: d for d in map(definition_of, listed) if "name" in d}
        now = self._clock.now()
        with self._store.transaction() as conn:
            verdicts, events = hold_listing(conn, server, definitions, now)
        for tool_id, detail in events:
            self._audit.record(AuditEvent(
                id=new_event_id(now), time=now, actor=_SYSTEM, action="tool.changed",
                target=tool_id, outcome=detail.pop("outcome"), detail=detail))
        return verdicts

    def verdict(self, tool_id: str, digest: str) -> PinVerdict | None:
        """The verdict on the definition of ``tool_id`` with ``digest`` as stored now
        (None: not pinned): reviewed only if it is the reviewed definition, whatever
        ``pin_state`` says of another definition seen elsewhere; rejected if a human
        rejected it."""
        with self._store.reading() as conn:
            row = conn.execute(select(tool_catalog).where(
                tool_catalog.c.tool_id == tool_id)).first()
            if row is None or row.pin_state is None:
                return None
            if row.reviewed_digest is not None and row.reviewed_digest == digest:
                return PinVerdict(tool_id, True, digest=digest)
            seen = conn.execute(select(tool_definitions.c.verdict).where(
                tool_definitions.c.tool_id == tool_id,
                tool_definitions.c.digest == digest)).scalar()
        if seen == "rejected":
            return PinVerdict(tool_id, False, "rejected", row.renamed_from, digest)
        change = "changed" if row.definition is not None else (row.pin_change or "new")
        return PinVerdict(tool_id, False, change, row.renamed_from, digest)

    def records(self, *, pending_only: bool = False) -> list[PinRecord]:
        """Every pin; ``pending_only``: those with a definition waiting for a human."""
        query = select(tool_catalog).where(tool_catalog.c.pin_state.is_not(None))
        if pending_only:
            query = query.where(tool_catalog.c.tool_id.in_(select(
                tool_definitions.c.tool_id).where(tool_definitions.c.verdict == "pending")))
        with self._store.reading() as conn:
            rows = conn.execute(query.order_by(tool_catalog.c.tool_id)).all()
            seen = _seen(conn, [r.tool_id for r in rows])
        return [record_of(r, seen.get(r.tool_id, [])) for r in rows]

    def record(self, tool_id: str) -> PinRecord:
        """The pin of ``tool_id``; a rename not yet reviewed carries the reviewed
        definition of the tool it renames, to be compared with."""
        with self._store.reading() as conn:
            row = conn.execute(select(tool_catalog).where(
                tool_catalog.c.tool_id == tool_id)).first()
            if row is None or row.pin_state is None:
                raise NotFoundError(f"tool `{tool_id}` has no pin")
            record = record_of(row, _seen(conn, [tool_id]).get(tool_id, []))
            if record.definition is None and record.renamed_from:
                renamed = conn.execute(select(tool_catalog.c.definition).where(
                    tool_catalog.c.tool_id == record.renamed_from)).scalar()
                if renamed is not None:
                    from dataclasses import replace

                    record = replace(record, definition=renamed)
        return record

    def review(self, tool_id: str, *, by: str, expected_digest: str) -> PinRecord:
        """Make the pending definition with digest ``expected_digest`` (what the reviewer
        looked at) the reviewed one; audited as ``by``'s (a human id). Refused
        ``review_digest_missing`` if it names none, ``tool_review_stale`` if no pending
        definition has that digest (so a review never accepts one its reviewer did not
        see), ``tool_definition_rejected`` if a human rejected it; nothing changed."""
        from proctor.oversight.pin_decisions import decide

        decide(self._audit, self._clock.now(), tool_id, by=by, digest=expected_digest,
               verdict="reviewed")
        return self.record(tool_id)

    def reject(self, tool_id: str, *, by: str, expected_digest: str) -> PinRecord:
        """Reject the pending definition with digest ``expected_digest``: it stays denied
        (``tool_rejected``) whenever an upstream lists it, is never reviewed, and is
        listed as rejected; audited as ``by``'s (a human id). Refused as :meth:`review`
        is; nothing changed."""
        from proctor.oversight.pin_decisions import decide

        decide(self._audit, self._clock.now(), tool_id, by=by, digest=expected_digest,
               verdict="rejected")
        return self.record(tool_id)


def _seen(conn: Connection, tool_ids: list[str]) -> dict[str, list[Row[Any]]]:
    """The ``tool_definitions`` rows of ``tool_ids``, newest listed first."""
    found: dict[str, list[Row[Any]]] = {}
    if not tool_ids:
        return found
    for start in range(0, len(tool_ids), 500):
        for row in conn.execute(select(tool_definitions).where(
                tool_definitions.c.tool_id.in_(tool_ids[start:start + 500])).order_by(
                tool_definitions.c.listed_at.desc(), tool_definitions.c.digest)).all():
            found.setdefault(row.tool_id, []).append(row)
    return found


def record_of(row: Row[Any], seen: list[Row[Any]]) -> PinRecord:
    """A :class:`PinRecord` from a ``tool_catalog`` row and its ``tool_definitions`` rows."""
    listed = definition_digest(row.seen_definition) if row.seen_definition else None
    definitions = [SeenDefinition(
        digest=s.digest, definition=s.definition, verdict=s.verdict, change=s.change,
        renamed_from=s.renamed_from, seen_at=s.seen_at, listed_at=s.listed_at,
        decided_at=s.decided_at, decided_by=s.decided_by, is_listed=s.digest == listed)
        for s in seen]
    definitions.sort(key=lambda d: not d.is_listed)  # the listed one first, then newest
    return PinRecord(tool_id=row.tool_id, server=row.server, state=row.pin_state,
                     definition=row.definition, seen_definition=row.seen_definition,
                     change=row.pin_change, renamed_from=row.renamed_from,
                     changed_at=row.changed_at, reviewed_at=row.reviewed_at,
                     reviewed_by=row.reviewed_by,
                     pending=tuple(d for d in definitions if d.verdict == "pending"),
                     rejected=tuple(d for d in definitions if d.verdict == "rejected"))

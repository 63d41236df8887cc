"""Tool pinning: the reviewed definition of every upstream tool, against silent changes.

A tool's *definition* is what an agent's model reads and what the gateway enforces:
its name, title, description, ``inputSchema``, ``outputSchema`` and annotations.
A verdict is a property of a (tool, definition digest) pair, never a state an upstream
can flip: a listed definition is reviewed if and only if its digest is the tool's
reviewed digest (``reviewed_digest``, set by the first sight of the server or by a
human's review, never by a listing). Each time the gateway lists an upstream's tools,
:meth:`ToolPins.check` holds each definition against its pin, in the ``tool_catalog``
row of the tool (one catalog, one row per tool id), in one transaction per server:

1. a server seen for the first time: every tool it lists is recorded as reviewed
   (the first definition is the one a human put behind proctor);
2. a tool whose definition is the reviewed one: reviewed, and nothing written: a
   definition another session was shown and that waits for a review stays waiting
   (an upstream showing the old definition to one session does not clear it);
3. a tool whose definition differs from the reviewed one: ``unreviewed``, change
   ``changed`` (denied ``tool_changed``), the definition recorded as the one waiting
   for a review (the last one seen, if an upstream shows several);
4. a new tool on a known server: ``unreviewed``, change ``new`` (denied
   ``tool_unreviewed``) — unless its definition, name aside, is the reviewed
   definition of a tool of the server that is no longer listed: then it is a
   **rename** of a reviewed tool (change ``renamed``, denied ``tool_changed``), not a
   new harmless one.

``pin_state`` says whether a definition waits for a review (``unreviewed``) or not;
it never lets a call through: :meth:`ToolPins.verdict` and a call's write (with
``pin: strict``, ``grants/use.py``) compare the digest of the definition in hand with
the reviewed digest. So a listing of one definition never undoes a review of another.

Each change is audited once, when it is first seen (``tool.changed``, by the system);
:meth:`ToolPins.review` makes the seen definition the reviewed one (``tool.review``,
by a human), only if it is still the one the reviewer looked at (its digest). With
``pin: strict`` (the default) an unreviewed tool is hidden from listings and its calls
are denied; ``warn`` reports and audits but lets it through; ``off`` does not pin the
server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row, select, update

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id, record_change
from proctor.clock import Clock
from proctor.codes import Code
from proctor.errors import NotFoundError, RequestError, ReviewStaleError, ReviewUnnamedError
from proctor.store import Store
from proctor.store.tables import tool_catalog

__all__ = ["DEFINITION_FIELDS", "PIN_MODES", "PinMode", "PinRecord", "PinVerdict", "ToolPins",
           "definition_digest", "definition_of"]

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
    change: str | None = None  # new | changed | renamed
    renamed_from: str | None = None
    digest: str = ""  # of the definition judged (what a call on it is made against)

    @property
    def code(self) -> Code | None:
        if self.is_reviewed:
            return None
        code: Code = "tool_unreviewed" if self.change == "new" else "tool_changed"
        return code

    @property
    def message(self) -> str:
        if self.change == "renamed":
            return (f"tool `{self.tool_id}` is reviewed tool `{self.renamed_from}` under "
                    "another name; a human must review it (proctor tool review)")
        if self.change == "new":
            return (f"tool `{self.tool_id}` is new on a known server; a human must review it "
                    "(proctor tool review)")
        return (f"the definition of tool `{self.tool_id}` changed since it was reviewed; a "
                "human must review it (proctor tool review)")


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A tool's pin as stored: the reviewed definition and, if any, the one seen since."""

    tool_id: str
    server: str
    state: str
    definition: dict[str, Any] | None
    seen_definition: dict[str, Any] | None
    change: str | None
    renamed_from: str | None
    changed_at: datetime | None
    reviewed_at: datetime | None
    reviewed_by: str | None

    @property
    def seen_digest(self) -> str | None:
        """The digest of the definition waiting for review: what a review names."""
        return definition_digest(self.seen_definition) if self.seen_definition else None

    def as_json(self) -> dict[str, Any]:
        return {"tool": self.tool_id, "server": self.server, "state": self.state,
                "change": self.change, "renamed_from": self.renamed_from,
                "changed_at": self.changed_at, "reviewed_at": self.reviewed_at,
                "reviewed_by": self.reviewed_by, "definition": self.definition,
                "seen_definition": self.seen_definition, "seen_digest": self.seen_digest}


class ToolPins:
    """The pins of every upstream tool, in the store; safe to share between threads."""

    def __init__(self, store: Store, clock: Clock, audit: AuditLog) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit

    def check(self, server: str, listed: Iterable[Any]) -> dict[str, PinVerdict]:
        """Hold each listed tool of ``server`` against its pin; returns a verdict per
        tool name. Tools without a catalog row (left out by the gateway) are unreviewed."""
        definitions = {d["name"]: d for d in map(definition_of, listed) if "name" in d}
        now = self._clock.now()
        verdicts: dict[str, PinVerdict] = {}
        changes: list[tuple[str, str, str | None]] = []
        with self._store.transaction() as conn:
            rows = {r.tool_id: r for r in conn.execute(
                select(tool_catalog).where(tool_catalog.c.server == server)).all()}
            pinned = [r for r in rows.values() if r.pin_state is not None]
            listed_ids = {f"{server}/{name}" for name in definitions}
            gone = {definition_digest(r.definition, without_name=True): r.tool_id
                    for r in pinned if r.definition is not None
                    and r.tool_id not in listed_ids}
            for name, definition in definitions.items():
                tool_id = f"{server}/{name}"
                row = rows.get(tool_id)
                if row is None:
                    verdicts[name] = PinVerdict(tool_id, False, "new",
                                                digest=definition_digest(definition))
                    continue
                verdict, values = _hold(row, definition, bool(pinned), gone, now)
                verdicts[name] = verdict
                if values:
                    conn.execute(update(tool_catalog).where(
                        tool_catalog.c.tool_id == tool_id).values(**values))
                    if values.get("pin_state") == "unreviewed":
                        changes.append((tool_id, verdict.change or "changed",
                                        verdict.renamed_from))
        for tool_id, change, renamed_from in changes:
            self._audit.record(AuditEvent(
                id=new_event_id(now), time=now, actor=_SYSTEM, action="tool.changed",
                target=tool_id, outcome="unreviewed",
                detail={"change": change, **({"renamed_from": renamed_from}
                                             if renamed_from else {})}))
        return verdicts

    def verdict(self, tool_id: str, digest: str) -> PinVerdict | None:
        """The verdict on the definition of ``tool_id`` with ``digest`` as stored now
        (None: not pinned): reviewed only if it is the reviewed definition, whatever
        ``pin_state`` says of another definition seen elsewhere."""
        row = self._row(tool_id)
        if row is None or row.pin_state is None:
            return None
        if row.reviewed_digest is not None and row.reviewed_digest == digest:
            return PinVerdict(tool_id, True, digest=digest)
        change = "changed" if row.definition is not None else (row.pin_change or "new")
        return PinVerdict(tool_id, False, change, row.renamed_from, digest)

    def records(self, *, pending_only: bool = False) -> list[PinRecord]:
        query = select(tool_catalog).where(tool_catalog.c.pin_state.is_not(None))
        if pending_only:
            query = query.where(tool_catalog.c.pin_state == "unreviewed")
        with self._store.reading() as conn:
            rows = conn.execute(query.order_by(tool_catalog.c.tool_id)).all()
        return [_record(r) for r in rows]

    def record(self, tool_id: str) -> PinRecord:
        """The pin of ``tool_id``; a rename not yet reviewed carries the reviewed
        definition of the tool it renames, to be compared with."""
        row = self._row(tool_id)
        if row is None or row.pin_state is None:
            raise NotFoundError(f"tool `{tool_id}` has no pin")
        record = _record(row)
        if record.definition is None and record.renamed_from:
            renamed = self._row(record.renamed_from)
            if renamed is not None and renamed.definition is not None:
                record = dataclasses.replace(record, definition=renamed.definition)
        return record

    def review(self, tool_id: str, *, by: str, expected_digest: str) -> PinRecord:
        """Make the definition seen since the last review the reviewed one; audited as
        ``by``'s (a human id). Refused for a tool that has nothing to review. A review
        names what the reviewer looked at, ``expected_digest`` (:attr:`PinRecord.seen_digest`;
        empty: ``review_digest_missing``): it is refused ``tool_review_stale``, nothing
        changed, unless the seen definition is still that one, so an upstream that lists
        another definition in the meantime does not have it accepted unseen."""
        if not expected_digest:
            raise ReviewUnnamedError(
                f"a review of tool `{tool_id}` names the digest of the definition it accepts "
                "(`proctor tool show` gives it)")
        now = self._clock.now()
        with self._store.transaction() as conn:
            row = conn.execute(select(tool_catalog).where(
                tool_catalog.c.tool_id == tool_id).with_for_update()).first()
            if row is None or row.pin_state is None:
                raise NotFoundError(f"tool `{tool_id}` has no pin")
            if row.pin_state != "unreviewed" or row.seen_definition is None:
                raise RequestError(f"tool `{tool_id}` has no change to review")
            seen = definition_digest(row.seen_definition)
            if seen != expected_digest:
                raise ReviewStaleError(
                    f"the definition of tool `{tool_id}` seen now has digest `{seen}`, not "
                    f"`{expected_digest}`; look at it again")
            conn.execute(update(tool_catalog).where(tool_catalog.c.tool_id == tool_id).values(
                pin_state="reviewed", definition=row.seen_definition, reviewed_digest=seen,
                seen_definition=None, reviewed_at=now, reviewed_by=by))
            before = row.definition
            change, renamed_from = row.pin_change, row.renamed_from
        record_change(self._audit, AuditEvent(
            id=new_event_id(now), time=now, actor=Actor(ActorType.HUMAN, by),
            action="tool.review", target=tool_id, outcome="reviewed",
            detail={"change": change, "renamed_from": renamed_from,
                    "digest": seen,
                    "previous_digest": definition_digest(before) if before else None}))
        return self.record(tool_id)

    def _row(self, tool_id: str) -> Row[Any] | None:
        with self._store.reading() as conn:
            return conn.execute(select(tool_catalog).where(
                tool_catalog.c.tool_id == tool_id)).first()


def _hold(row: Row[Any], definition: dict[str, Any], server_known: bool,
          gone: dict[str, str], now: datetime) -> tuple[PinVerdict, dict[str, Any]]:
    """The verdict on one listed definition, and the columns to change."""
    tool_id = row.tool_id
    digest = definition_digest(definition)
    if row.pin_state is None:
        if not server_known:  # first sight of the server: what was put behind proctor
            return PinVerdict(tool_id, True, digest=digest), {
                "pin_state": "reviewed", "definition": definition, "reviewed_digest": digest,
                "reviewed_at": now, "reviewed_by": "first seen"}
        renamed_from = gone.get(definition_digest(definition, without_name=True))
        change = "renamed" if renamed_from else "new"
        return PinVerdict(tool_id, False, change, renamed_from, digest), {
            "pin_state": "unreviewed", "seen_definition": definition, "pin_change": change,
            "renamed_from": renamed_from, "changed_at": now}
    if row.reviewed_digest is not None and row.reviewed_digest == digest:
        # reviewed; a definition waiting for review (shown to another session) still waits
        return PinVerdict(tool_id, True, digest=digest), {}
    if row.pin_state == "unreviewed" and row.seen_definition == definition:
        return PinVerdict(tool_id, False, row.pin_change, row.renamed_from, digest), {}
    change = "changed" if row.definition is not None else (row.pin_change or "new")
    return PinVerdict(tool_id, False, change, row.renamed_from, digest), {
        "pin_state": "unreviewed", "seen_definition": definition, "pin_change": change,
        "changed_at": now}


def _record(row: Row[Any]) -> PinRecord:
    return PinRecord(tool_id=row.tool_id, server=row.server, state=row.pin_state,
                     definition=row.definition, seen_definition=row.seen_definition,
                     change=row.pin_change, renamed_from=row.renamed_from,
                     changed_at=row.changed_at, reviewed_at=row.reviewed_at,
                     reviewed_by=row.reviewed_by)

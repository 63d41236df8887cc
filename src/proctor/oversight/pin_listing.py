"""One listing of an upstream's tools held against their pins, in the caller's
transaction (the order of the checks is :mod:`proctor.oversight.pinning`'s).

Only a difference from what is stored is written: a listing of what the last one showed
writes nothing, so listings cost a read once the tools are settled. The server's
catalog rows are read ``FOR UPDATE`` (PostgreSQL; SQLite's writer takes its lock at
``BEGIN IMMEDIATE``), so two listings of one server record a new definition once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from proctor.oversight.pinning import PinVerdict, definition_digest
from proctor.store.tables import tool_catalog, tool_definitions

__all__ = ["hold_listing"]

Events = list[tuple[str, dict[str, Any]]]  # (tool id, audit detail with its outcome)


def hold_listing(conn: Connection, server: str, definitions: dict[str, dict[str, Any]],
                 now: datetime) -> tuple[dict[str, PinVerdict], Events]:
    """The verdict on each listed definition of ``server`` (by tool name), with the
    changes written and the ``tool.changed`` events to record once it commits."""
    rows = {r.tool_id: r for r in conn.execute(
        select(tool_catalog).where(tool_catalog.c.server == server)
        .with_for_update()).all()}
    seen: dict[tuple[str, str], Row[Any]] = {
        (r.tool_id, r.digest): r for r in conn.execute(select(tool_definitions).where(
            tool_definitions.c.server == server)).all()}
    pinned = [r for r in rows.values() if r.pin_state is not None]
    listed_ids = {f"{server}/{name}" for name in definitions}
    gone = {definition_digest(r.definition, without_name=True): r.tool_id
            for r in pinned if r.definition is not None and r.tool_id not in listed_ids}
    verdicts: dict[str, PinVerdict] = {}
    events: Events = []
    for name, definition in definitions.items():
        tool_id = f"{server}/{name}"
        digest = definition_digest(definition)
        row = rows.get(tool_id)
        if row is None:
            verdicts[name] = PinVerdict(tool_id, False, "new", digest=digest)
            continue
        verdicts[name] = _hold(conn, row, definition, digest, seen.get((tool_id, digest)),
                               server_known=bool(pinned), gone=gone, now=now, events=events)
    return verdicts, events


def _hold(conn: Connection, row: Row[Any], definition: dict[str, Any], digest: str,
          seen: Row[Any] | None, *, server_known: bool, gone: dict[str, str],
          now: datetime, events: Events) -> PinVerdict:
    tool_id = row.tool_id
    is_rejected = seen is not None and seen.verdict == "rejected"
    if row.pin_state is None and not server_known and not is_rejected:
        # first sight of the server: what was put behind proctor (never a definition a
        # human rejected, should its row outlive the catalog's)
        _catalog(conn, tool_id, pin_state="reviewed", definition=definition,
                 reviewed_digest=digest, seen_definition=None, reviewed_at=now,
                 reviewed_by="first seen")
        return PinVerdict(tool_id, True, digest=digest)
    if row.reviewed_digest is not None and row.reviewed_digest == digest:
        # reviewed. A definition shown elsewhere stays pending; the tool shows again
        # that its upstream lists the reviewed definition (a change taken back)
        if row.pin_state != "reviewed" or row.seen_definition is not None:
            _catalog(conn, tool_id, pin_state="reviewed", seen_definition=None)
        return PinVerdict(tool_id, True, digest=digest)
    is_listed = row.seen_definition is not None and row.seen_definition == definition
    if is_rejected:
        assert seen is not None
        if not (is_listed and row.pin_state == "rejected"):
            _catalog(conn, tool_id, pin_state="rejected", seen_definition=definition)
            _listed(conn, tool_id, digest, now)
            events.append((tool_id, {"outcome": "rejected", "change": "rejected",
                                     "digest": digest}))
        return PinVerdict(tool_id, False, "rejected", seen.renamed_from, digest)
    if seen is not None:  # pending: seen before, here or elsewhere
        if not (is_listed and row.pin_state == "unreviewed"):
            _catalog(conn, tool_id, pin_state="unreviewed", seen_definition=definition,
                     pin_change=seen.change, renamed_from=seen.renamed_from,
                     changed_at=seen.seen_at)
            _listed(conn, tool_id, digest, now)
        return PinVerdict(tool_id, False, seen.change, seen.renamed_from, digest)
    if row.pin_state is None:
        renamed_from = gone.get(definition_digest(definition, without_name=True))
        change = "renamed" if renamed_from else "new"
    else:
        change = "changed" if row.definition is not None else (row.pin_change or "new")
        renamed_from = row.renamed_from
    conn.execute(insert(tool_definitions).values(
        tool_id=tool_id, digest=digest, server=row.server, definition=definition,
        verdict="pending", change=change, renamed_from=renamed_from, seen_at=now,
        listed_at=now))
    _catalog(conn, tool_id, pin_state="unreviewed", seen_definition=definition,
             pin_change=change, renamed_from=renamed_from, changed_at=now)
    events.append((tool_id, {"outcome": "unreviewed", "change": change, "digest": digest,
                             **({"renamed_from": renamed_from} if renamed_from else {})}))
    return PinVerdict(tool_id, False, change, renamed_from, digest)


def _catalog(conn: Connection, tool_id: str, **values: Any) -> None:
    conn.execute(update(tool_catalog).where(tool_catalog.c.tool_id == tool_id)
                 .values(**values))


def _listed(conn: Connection, tool_id: str, digest: str, now: datetime) -> None:
    conn.execute(update(tool_definitions).where(
        tool_definitions.c.tool_id == tool_id, tool_definitions.c.digest == digest)
        .values(listed_at=now))

"""Reading the log back: search, tail, follow, by actor type and more.

Every query can select by actor type, so agent and human activity are never
mixed up unless asked for.

A search by task, actor id, time window or actor type reads the keys table
(``audit_keys``) for the events up to the head row's ``keyed`` mark, then the few rows
after the mark (filled a few thousand events at a time by the writer,
:mod:`proctor.audit.driver`): the mark is read first, and the keys up to it never change
once it is there, so the two reads agree whatever the writer commits between them. Each
row found is checked against its own columns too, so the keys only choose what to read.

>>> EventFilter(actor_type=ActorType.HUMAN, task="task-42").describe()
'actor_type=human task=task-42'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from proctor.audit.events import ActorType, StoredEvent, recordable_text
from proctor.store import Store
from proctor.store.tables import audit_events, audit_head, audit_keys

__all__ = ["EventFilter", "follow_events", "iter_events", "search_events", "tail_events",
           "time_key"]

_t = audit_events.c
_k = audit_keys.c


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; every field left None matches everything."""

    actor_type: ActorType | None = None
    actor_id: str | None = None
    task: str | None = None
    decision: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        # the text as recorded: a NUL is written as its six characters (see
        # proctor.audit.events.NUL_RECORDED_AS), and PostgreSQL refuses it in a query
        for name in ("actor_id", "task", "decision", "action"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, recordable_text(value))

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                parts.append(f"{f.name}={getattr(value, 'value', value)}")
        return " ".join(parts)

    def keys(self) -> list[ColumnElement[bool]] | None:
        """The ``audit_keys`` a search by this filter walks, if any: those of its task,
        else its actor id, else its time window, else its actor type."""
        if self.task is not None:
            return [_k.kind == "t", _k.key == self.task]
        if self.actor_id is not None:
            return [_k.kind == "a", _k.key == self.actor_id]
        if self.since is not None or self.until is not None:
            found = [_k.kind == "w"]
            if self.since is not None:
                found.append(_k.key >= time_key(self.since))
            if self.until is not None:
                found.append(_k.key < time_key(self.until))
            return found
        if self.actor_type is not None:
            return [_k.kind == "y", _k.key == self.actor_type.value]
        return None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.actor_type is not None:
            query = query.where(_t.actor_type == self.actor_type.value)
        if self.actor_id is not None:
            query = query.where(_t.actor_id == self.actor_id)
        if self.task is not None:
            query = query.where(_t.task == self.task)
        if self.decision is not None:
            query = query.where(_t.decision == self.decision)
        if self.action is not None:
            query = query.where(_t.action == self.action)
        if self.since is not None:
            query = query.where(_t.time >= _utc(self.since))
        if self.until is not None:
            query = query.where(_t.time < _utc(self.until))
        return query


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("query times must be aware datetimes")
    return value.astimezone(UTC)


def time_key(value: datetime) -> str:
    """A time as its ``w`` key: UTC, ``YYYY-MM-DD HH:MM:SS.ffffff`` (the text SQLite's
    column holds and PostgreSQL's fill writes), which sorts as the times do.

    >>> time_key(datetime(2026, 12, 7, 23, 0, 1, 5, tzinfo=UTC))
    '2026-12-07 23:00:01.000005'
    """
    return _utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(int(row.seq), row.prev_hash, row.hash, json.loads(row.body))


_COLUMNS = (_t.seq, _t.prev_hash, _t.hash, _t.body)


def _select(conn: Connection, where: EventFilter, *, after_seq: int, limit: int,
            newest_first: bool) -> list[StoredEvent]:
    """Up to ``limit`` events matching ``where`` after position ``after_seq``, in one
    transaction; by task, actor id, time or actor type: the keys up to the mark, the rows
    after it."""
    query = where.apply(select(*_COLUMNS))
    keys = where.keys()
    if keys is None:
        if after_seq:
            query = query.where(_t.seq > after_seq)
        order = _t.seq.desc() if newest_first else _t.seq.asc()
        return [_stored(row) for row in conn.execute(query.order_by(order).limit(limit))]
    mark = conn.execute(select(audit_head.c.keyed).where(audit_head.c.id == 1)).scalar() or 0
    keyed = (query.select_from(audit_keys.join(audit_events, _k.seq == _t.seq))
             .where(*keys, _k.seq > after_seq, _k.seq <= mark)
             .order_by(_k.seq.desc() if newest_first else _k.seq.asc()))
    # one lower bound on the position: SQLite walks the table from one of two, and the
    # start of a page far behind the mark would be a scan of every row after it
    tail = (query.where(_t.seq > max(mark, after_seq))
            .order_by(_t.seq.desc() if newest_first else _t.seq.asc()))
    found: list[StoredEvent] = []
    for part in (tail, keyed) if newest_first else (keyed, tail):
        if len(found) >= limit:
            break
        found.extend(_stored(row) for row in conn.execute(part.limit(limit - len(found))))
    return found


def search_events(store: Store, where: EventFilter | None = None, *, limit: int = 100,
                  newest_first: bool = True) -> list[StoredEvent]:
    """Up to ``limit`` matching events, newest first unless told otherwise."""
    with store.reading() as conn:
        return _select(conn, where or EventFilter(), after_seq=0, limit=limit,
                       newest_first=newest_first)


def tail_events(store: Store, where: EventFilter | None = None, *, count: int = 20
                ) -> list[StoredEvent]:
    """The last ``count`` matching events, oldest of them first."""
    return list(reversed(search_events(store, where, limit=count)))


def iter_events(store: Store, where: EventFilter | None = None, *, after_seq: int = 0,
                page: int = 1000) -> Iterator[StoredEvent]:
    """Every matching event after position ``after_seq``, in chain order, a page at a time."""
    where = where or EventFilter()
    while True:
        with store.reading() as conn:
            rows = _select(conn, where, after_seq=after_seq, limit=page, newest_first=False)
        yield from rows
        if len(rows) < page:
            return
        after_seq = rows[-1].seq


def follow_events(store: Store, where: EventFilter, *, after_seq: int,
                  wait: Callable[[], bool]) -> Iterator[StoredEvent]:
    """Matching events as they are appended after ``after_seq``.

    Between polls it calls ``wait()``, which sleeps (or waits on an event)
    and returns False to stop following.
    """
    while True:
        for stored in iter_events(store, where, after_seq=after_seq):
            after_seq = stored.seq
            yield stored
        if not wait():
            return

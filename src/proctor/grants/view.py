"""Tasks and the revocation state of leases as this process holds them: read once,
then from memory while the change feed proves them current.

Both answer from memory only when :meth:`~proctor.store.changes.ChangeFeed.catch_up`
says every change committed so far has been heard, and read the store otherwise.
A change to one task (ended, lifetime, data sensitivity seen) or one lease (revoked),
made by any process, drops that entry alone; the descendants a revocation marks after
its roots (one ``subtree`` change) drop every revocation state held.

What a held task does not follow is its idle deadline (``idle_until``), which every
call moves: the transaction that counts a use reads it there, and a held deadline
that has passed is read again (:meth:`TaskView.fresh`). A lease is held only once
read; an id the store does not know is never held (it reads as revoked).

A check that writes nothing (``GrantAuthority.inspect``) asks
:meth:`RevocationView.revoked_now`: from memory only where the feed hears every
commit before it answers (SQLite), from the store on PostgreSQL, where a revocation
committed a moment ago may still be on its way to the listener.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

from sqlalchemy import select

from proctor.errors import GrantError
from proctor.grants.tasks import Task, task_from_row
from proctor.store import Store
from proctor.store.changes import Change, ChangeFeed
from proctor.store.tables import tasks

__all__ = ["RevocationView", "TaskView"]

_MAX_HELD = 100_000


class _Held:
    """Entries keyed by id, dropped by the feed's changes of one kind."""

    def __init__(self, feed: ChangeFeed, kind: str, *, clearing: str | None = None) -> None:
        self.feed = feed
        self.kind = kind
        self.clearing = clearing  # a change of this kind drops every entry
        self.entries: dict[str, object] = {}
        self.lock = threading.Lock()
        self.forgotten = 0  # moves when this process drops an entry it changed itself
        feed.subscribe(self._changed, self._reset)

    def mark(self) -> tuple[int, int]:
        """Taken before a read, given to :meth:`keep` after it."""
        return self.feed.epoch, self.forgotten

    def keep(self, mark: tuple[int, int], found: dict[str, object]) -> None:
        """Hold ``found`` if nothing changed since ``mark`` (taken when it was read)."""
        with self.lock:
            if self.mark() != mark or not self.feed.is_current:
                return
            if len(self.entries) + len(found) > _MAX_HELD:
                self.entries.clear()
            self.entries.update(found)

    def forget(self, key: str) -> None:
        with self.lock:
            self.forgotten += 1
            self.entries.pop(key, None)

    def _changed(self, found: Sequence[Change]) -> None:
        if self.clearing is not None and any(c.kind == self.clearing for c in found):
            self._reset()
            return
        keys = [c.key for c in found if c.kind == self.kind]
        if keys:
            with self.lock:
                for key in keys:
                    self.entries.pop(key, None)

    def _reset(self) -> None:
        with self.lock:
            self.entries.clear()


class TaskView:
    """Tasks by id, in memory while the feed is current."""

    def __init__(self, store: Store, feed: ChangeFeed) -> None:
        self._store = store
        self._held = _Held(feed, "task")

    def task(self, task_id: str) -> Task:
        """The task (its idle deadline as of when it was read); ``task_unknown`` if none."""
        feed = self._held.feed
        if feed.catch_up():
            held = self._held.entries.get(task_id)
            if isinstance(held, Task):
                return held
        mark = self._held.mark()
        task = self.fresh(task_id)
        self._held.keep(mark, {task_id: task})
        return task

    def fresh(self, task_id: str) -> Task:
        """The task as the store has it now (its idle deadline included)."""
        with self._store.reading() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise GrantError("task_unknown", f"task `{task_id}` does not exist")
        return task_from_row(row)

    def one_look(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, this thread's reads of every view share one look at the
        feed (:meth:`~proctor.store.changes.ChangeFeed.one_look`)."""
        return self._held.feed.one_look()

    def forget(self, task_id: str) -> None:
        """Drop the task this process just changed, before the feed tells (PostgreSQL)."""
        self._held.forget(task_id)


class RevocationView:
    """Whether leases (tasks, grants, their ancestors) are revoked, in memory while the
    feed is current."""

    def __init__(self, store: Store, feed: ChangeFeed) -> None:
        self._store = store
        # the descendants a revocation marks after its roots are one ``subtree`` change
        # (:mod:`proctor.grants.leases`): whatever is held is read again
        self._held = _Held(feed, "lease", clearing="subtree")

    def revoked_among(self, ids: Sequence[str]) -> list[str]:
        """Which of ``ids`` are revoked or unknown (a grant's lineage: itself, its
        ancestors and its task)."""
        feed = self._held.feed
        wanted = list(dict.fromkeys(ids))
        state: dict[str, object] = {}
        if feed.catch_up():
            entries = self._held.entries
            state = {i: entries[i] for i in wanted if i in entries}
        missing = [i for i in wanted if i not in state]
        if missing:
            mark = self._held.mark()
            marks = ", ".join("{p}" for _ in missing)
            rows = self._store.fetch(
                f"SELECT id, revoked_at FROM leases WHERE id IN ({marks})",  # noqa: S608
                missing)
            read: dict[str, object] = {str(r[0]): r[1] is not None for r in rows}
            self._held.keep(mark, read)
            state.update(read)
        return [i for i in wanted if state.get(i) is not False]

    def revoked_now(self, ids: Sequence[str]) -> list[str]:
        """:meth:`revoked_among`, honouring every revocation committed before the call:
        from memory where the feed hears every commit before it answers (SQLite),
        from the store otherwise."""
        if self._held.feed.sees_every_commit:
            return self.revoked_among(ids)
        wanted = list(dict.fromkeys(ids))
        marks = ", ".join("{p}" for _ in wanted)
        rows = self._store.fetch(
            f"SELECT id, revoked_at FROM leases WHERE id IN ({marks})", wanted)  # noqa: S608
        live = {str(r[0]) for r in rows if r[1] is None}
        return [i for i in wanted if i not in live]

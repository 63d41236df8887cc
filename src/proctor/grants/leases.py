"""The lease tree: every task, grant and child grant is a node under its parent.

Revoking a node revokes its whole subtree, in one transaction that marks only
the roots: every check already walks the node's whole line (a grant carries its
ancestors and its task, a session its grant's line, a secret lease reads its
ancestors), so the revocation is in force, on every node, the moment that
transaction commits, whatever the size of the subtree. The call then collects
the ids of the unrevoked nodes under the roots (a task's through the index on
``task_id``: every node under a task is of that task; any other root's with one
recursive query through the parent index, ``UNION``, not ``UNION ALL``, so a cycle
ends) and returns; this tree's marker thread marks them afterwards, for notifications,
set-based: each transaction of its own marks a chunk of
:data:`MARK_CHUNK` nodes with one ``UPDATE`` whose ids travel as one parameter
(a JSON array on SQLite, an array on PostgreSQL), so that decisions go on
between chunks; :meth:`LeaseTree.settle` waits for it (the runtime does before it
closes). A process that dies before it finishes leaves that to the sweeper
(:meth:`LeaseTree.sweep_expired` marks what lies under a node revoked longer ago than
a marking is waited for, :data:`LEFT_OVER_SECONDS`: a marker at work, in this process or
another, is left to finish its own). Such a
transaction is one ``subtree`` change on the change feed rather than one per node
(migrations 0018 and 0020).

Listings show what the checks decide, marked or not: :func:`in_force` selects the nodes
reached from an unrevoked task through unrevoked nodes only (the access paths' live
grants, the console's live counts), and :meth:`LeaseTree.subtree` shows a node under a
revoked one as revoked with it.

Each revocation is announced to subscribers — in this process at once, and to
every other node through PostgreSQL ``NOTIFY`` on the channel
``proctor_revocations``, sent when the transaction commits. A node that missed
a notification still denies: checks read ``revoked_at`` from the store.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    insert,
    select,
)

from proctor.audit import WriteCursor
from proctor.clock import Clock
from proctor.errors import StoreError
from proctor.store import Store, as_utc
from proctor.store.drivers import driver_errors
from proctor.store.tables import leases

__all__ = ["CHANNEL", "LEFT_OVER_SECONDS", "MARK_CHUNK", "LeaseNode", "LeaseTree",
           "RevocationListener", "in_force", "revoke_roots", "writing"]

log = logging.getLogger(__name__)
# how long a closing store waits for a marking under way (the runtime's close waits as long)
_FINISH_SECONDS = 60.0
# what is still unmarked under a node revoked this long ago is left over (its marker died)
LEFT_OVER_SECONDS = _FINISH_SECONDS

CHANNEL = "proctor_revocations"
_CHUNK = 500
# Built once: this runs on every grant check.
_LIVE_STATE = select(leases.c.id, leases.c.revoked_at).where(
    leases.c.id.in_(bindparam("ids", expanding=True)))
_NOTIFY_IDS = 100
MARK_CHUNK = 5000  # descendants marked per transaction: SQLite's write lock held briefly
_UNDER = ("WITH RECURSIVE under(id) AS (SELECT id FROM leases WHERE parent_id IN ({roots}) "
          "UNION SELECT leases.id FROM leases JOIN under ON leases.parent_id = under.id) "
          "SELECT id FROM under")
_UNDER_UNREVOKED = ("WITH RECURSIVE under(id) AS (SELECT id FROM leases WHERE parent_id IN "
                    "({roots}) UNION SELECT leases.id FROM leases JOIN under ON "
                    "leases.parent_id = under.id) SELECT leases.id FROM under JOIN leases ON "
                    "leases.id = under.id WHERE leases.revoked_at IS NULL")
# every node under a task is of that task (its grants, their sessions and secret leases)
_OF_TASKS = ("SELECT id FROM leases WHERE task_id IN ({roots}) "
             "AND revoked_at IS NULL")
_MARK = {
    "sqlite": "UPDATE leases SET revoked_at = ?, revoked_reason = ? WHERE id IN "
              "(SELECT value FROM json_each(?)) AND revoked_at IS NULL RETURNING id",
    "postgresql": "UPDATE leases SET revoked_at = %s, revoked_reason = %s WHERE id = ANY(%s) "
                  "AND revoked_at IS NULL RETURNING id",
}
# The descendants one transaction marks are one ``subtree`` change, on the feed like any
# other: the trigger skips a transaction marking descendants (migrations 0018 and 0020:
# a setting of that transaction on PostgreSQL, a row only it sees on SQLite)
_MARKING = {
    "sqlite": "INSERT INTO lease_marking (id) VALUES (1)",
    "postgresql": "SELECT set_config('proctor.marking', 'descendants', true)",
}
_MARKED_SQLITE = "DELETE FROM lease_marking"
_SUBTREE_CHANGED = {
    "sqlite": "INSERT INTO changes (kind, key) VALUES ('subtree', ?)",
    "postgresql": "WITH noted AS (INSERT INTO changes (kind, key) VALUES ('subtree', %s) "
                  "RETURNING seq, key) SELECT pg_notify('proctor_changes', "
                  "seq || ' subtree ' || key) FROM noted",
}
_REVOKE = ("UPDATE leases SET revoked_at = {p}, revoked_reason = {p} WHERE id IN (%s) "
           "AND revoked_at IS NULL RETURNING id")
_NOTIFY_REVOKED = "SELECT pg_notify({p}, payload) FROM unnest({p}::text[]) AS payload"
RevocationListener = Callable[[Sequence[str], str], None]


@dataclass(frozen=True, slots=True)
class LeaseNode:
    id: str
    parent_id: str | None
    kind: str
    task_id: str
    agent_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class LeaseTree:
    """Nodes, subtree revocation and the revocation check."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._listeners: list[RevocationListener] = []
        self._marker = _Marker(self)
        store.before_close(self._marker.finish)

    def subscribe(self, listener: RevocationListener) -> None:
        """Call ``listener(ids, reason)`` after each revocation committed by this process."""
        self._listeners.append(listener)

    def add(self, conn: Connection, *, node_id: str, parent_id: str | None, kind: str,
            task_id: str, agent_id: str, expires_at: datetime | None) -> None:
        conn.execute(insert(leases).values(
            id=node_id, parent_id=parent_id, kind=kind, task_id=task_id, agent_id=agent_id,
            created_at=self._clock.now(), expires_at=expires_at,
        ))

    def revoked_now(self, ids: Sequence[str]) -> list[str]:
        """:meth:`revoked_among` outside a transaction, on the store's fast read path."""
        marks = ", ".join("{p}" for _ in ids)
        rows = self._store.fetch(
            f"SELECT id, revoked_at FROM leases WHERE id IN ({marks})", ids)  # noqa: S608
        live = {row[0] for row in rows if row[1] is None}
        return [i for i in ids if i not in live]

    def revoked_among(self, conn: Connection, ids: Iterable[str]) -> list[str]:
        """Which of ``ids`` are revoked or missing: a grant's own id and its ancestors."""
        wanted = list(ids)
        rows = conn.execute(_LIVE_STATE, {"ids": wanted}).all()
        live = {r.id for r in rows if r.revoked_at is None}
        return [i for i in wanted if i not in live]

    def revoke_subtree(self, root_ids: Sequence[str], reason: str) -> list[str]:
        """Revoke ``root_ids`` and everything under them; returns the ids newly revoked:
        the roots, then the nodes under them that were not revoked yet.

        In force when the roots' transaction commits, before this returns; the
        descendants are marked after it returns (:meth:`revoked_after`).
        """
        with self._store.transaction() as conn, writing(conn) as tx:
            revoked = revoke_roots(tx, root_ids, reason, self._clock.now())
        return self.revoked_after(revoked, reason)

    def revoked_after(self, revoked: Sequence[str], reason: str) -> list[str]:
        """After the commit of :meth:`revoke_in`'s transaction: announce ``revoked`` (the
        roots), collect the unrevoked nodes under them and hand them to the marker
        thread (:meth:`settle` waits for it); returns the roots and those nodes (the roots
        alone if the store fails while collecting: the sweep marks the rest)."""
        roots = list(dict.fromkeys(revoked))
        self.announce(roots, reason)
        try:
            under = self.unrevoked_under(roots)
        except StoreError as exc:
            # the revocation stands (its transaction committed) and its caller audits it:
            # what is under the roots is refused through its line already, and the sweep
            # marks it (roots revoked over unrevoked children)
            log.warning("revoked %d roots; collecting what is under them failed (%s): the "
                        "sweep marks it", len(roots), exc.code)
            return roots
        if under:
            self._marker.add(under, roots[0], reason)
        return [*roots, *under]

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until the descendants of this process's revocations are marked; False if
        ``timeout`` passed first (what is left, the sweep marks)."""
        return self._marker.settle(timeout)

    def unrevoked_under(self, root_ids: Sequence[str]) -> list[str]:
        """The nodes under ``root_ids`` not revoked yet, once each: a task's by its
        ``task_id`` (one index range), any other root's by one recursive query; on the
        store's fast read path (each one statement, a consistent snapshot)."""
        roots = list(dict.fromkeys(root_ids))
        under: list[str] = []
        for start in range(0, len(roots), _CHUNK):
            chunk = roots[start:start + _CHUNK]
            marks = ", ".join(["{p}"] * len(chunk))
            tasks = {r[0] for r in self._store.fetch(
                f"SELECT id FROM leases WHERE id IN ({marks}) AND kind = 'task'",  # noqa: S608
                chunk)}
            if tasks:
                under.extend(r[0] for r in self._store.fetch(
                    _OF_TASKS.format(roots=", ".join(["{p}"] * len(tasks))), list(tasks)))
            others = [i for i in chunk if i not in tasks]
            if others:
                under.extend(r[0] for r in self._store.fetch(
                    _UNDER_UNREVOKED.format(roots=", ".join(["{p}"] * len(others))), others))
        taken = set(roots)
        return [i for i in dict.fromkeys(under) if i not in taken]

    def revoke_in(self, conn: Connection, root_ids: Sequence[str], reason: str) -> list[str]:
        """:func:`revoke_roots` inside the caller's transaction; the caller calls
        :meth:`revoked_after` after the commit."""
        with writing(conn) as tx:
            return revoke_roots(tx, root_ids, reason, self._clock.now())

    def mark_descendants(self, root_ids: Sequence[str], reason: str) -> list[str]:
        """Mark what lies under ``root_ids`` revoked (already out of force through its
        line), set-based, :data:`MARK_CHUNK` nodes per transaction, in this thread;
        returns the ids newly marked."""
        roots = list(dict.fromkeys(root_ids))
        if not roots:
            return []
        sqlite = self._store.backend == "sqlite"
        mark = "?" if sqlite else "%s"
        under: list[str] = []
        with self._store.reading() as conn:
            for start in range(0, len(roots), _CHUNK):
                chunk = roots[start:start + _CHUNK]
                found = conn.exec_driver_sql(
                    _UNDER.format(roots=", ".join([mark] * len(chunk))), tuple(chunk))
                under.extend(r[0] for r in found)
        return self.mark(list(dict.fromkeys(under)), roots[0], reason)

    def mark(self, under: Sequence[str], key: str, reason: str) -> list[str]:
        """Mark ``under`` revoked, :data:`MARK_CHUNK` per transaction, each one ``subtree``
        change keyed ``key``, announced; returns the ids newly marked."""
        sqlite = self._store.backend == "sqlite"
        marked: list[str] = []
        for start in range(0, len(under), MARK_CHUNK):
            chunk = list(under[start:start + MARK_CHUNK])
            with self._store.transaction() as conn:
                # the change feed's trigger skips these rows: one change for them all
                conn.exec_driver_sql(_MARKING[self._store.backend])
                rows = conn.exec_driver_sql(_MARK[self._store.backend], (
                    self._clock.now(), reason, json.dumps(chunk) if sqlite else chunk))
                newly = [r[0] for r in rows]
                if sqlite:
                    conn.exec_driver_sql(_MARKED_SQLITE)
                if newly:
                    conn.exec_driver_sql(_SUBTREE_CHANGED[self._store.backend], (key,))
                self._notify(conn, newly, reason)
            self.announce(newly, reason)
            marked.extend(newly)
        return marked

    def _notify(self, conn: Connection, revoked: Sequence[str], reason: str) -> None:
        if revoked and self._store.backend == "postgresql":
            with writing(conn) as tx:
                _notify(tx, revoked, reason)

    def announce(self, revoked: Sequence[str], reason: str) -> None:
        """Tell this process's subscribers of a committed revocation."""
        for listener in self._listeners if revoked else ():
            try:
                listener(revoked, reason)
            except Exception:
                log.exception("revocation listener failed")

    def node(self, node_id: str) -> LeaseNode | None:
        with self._store.reading() as conn:
            row = conn.execute(select(leases).where(leases.c.id == node_id)).first()
        return _node(row) if row is not None else None

    def subtree(self, root_id: str) -> list[LeaseNode]:
        """The node and its descendants, parents before children; a node under a revoked
        one as revoked with it, marked yet or not."""
        with self._store.reading() as conn:
            ids = _collect(conn, [root_id])
            rows: list[Row[Any]] = []
            for start in range(0, len(ids), _CHUNK):
                rows.extend(conn.execute(
                    select(leases).where(leases.c.id.in_(ids[start:start + _CHUNK]))).all())
        by_id = {r.id: _node(r) for r in rows}
        nodes = [by_id[i] for i in ids if i in by_id]
        # a node under a revoked one is out of force since then: shown so before the
        # marker thread (or the sweep) has marked it (parents come first)
        for at, node in enumerate(nodes):
            above = by_id.get(node.parent_id) if node.parent_id is not None else None
            if node.revoked_at is None and above is not None and above.revoked_at is not None:
                nodes[at] = by_id[node.id] = replace(node, revoked_at=above.revoked_at,
                                                     revoked_reason=above.revoked_reason)
        return nodes

    def sweep_expired(self) -> int:
        """Mark expired, unrevoked nodes revoked (reason ``expired``), and what lies
        under a node revoked more than :data:`LEFT_OVER_SECONDS` ago but was left
        unmarked (a revoker that died before it marked the descendants; a younger
        revocation's are its marker's, at work now: marking them here too did the work
        twice, at once, and counted those nodes twice); returns how many."""
        now = self._clock.now()
        with self._store.reading() as conn:
            ids = [r.id for r in conn.execute(
                select(leases.c.id).where(and_(leases.c.expires_at < now,
                                               leases.c.revoked_at.is_(None)))).all()]
        swept = len(self.revoke_subtree(ids, "expired")) if ids else 0
        return swept + self._mark_left_over(now - timedelta(seconds=LEFT_OVER_SECONDS))

    def _mark_left_over(self, revoked_before: datetime) -> int:
        parent = leases.alias("parent")
        with self._store.reading() as conn:
            rows = conn.execute(
                select(parent.c.id, parent.c.revoked_reason)
                .where(parent.c.revoked_at < revoked_before)
                .where(parent.c.id.in_(select(leases.c.parent_id).where(
                    leases.c.revoked_at.is_(None))))).all()
        marked = 0
        for row in rows:
            marked += len(self.mark_descendants([row.id], row.revoked_reason or "revoked"))
        return marked


class _Marker:
    """Marks the descendants of revocations, one job after the other, on a thread that
    runs while there is work. A job that fails is logged and left to the sweep."""

    def __init__(self, tree: LeaseTree) -> None:
        self._tree = tree
        self._jobs: deque[tuple[list[str], str, str]] = deque()
        self._idle = threading.Condition()
        self._running = False

    def add(self, under: list[str], key: str, reason: str) -> None:
        with self._idle:
            self._jobs.append((under, key, reason))
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="proctor-lease-marker", daemon=True).start()

    def settle(self, timeout: float | None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def finish(self) -> None:
        """Before the store closes: the marking under way ends (up to a minute)."""
        self.settle(_FINISH_SECONDS)

    def _run(self) -> None:
        while True:
            with self._idle:
                if not self._jobs:
                    self._running = False
                    self._idle.notify_all()
                    return
                under, key, reason = self._jobs.popleft()
            try:
                self._tree.mark(under, key, reason)
            except Exception:
                log.exception("%d nodes under revoked %s left unmarked: the sweep marks them",
                              len(under), key[:80])


def in_force(*roots: ColumnElement[bool]) -> CTE:
    """The ids of the nodes in force under the tasks ``roots`` select (every task without
    them): each reached from an unrevoked task through unrevoked nodes only, as the
    checks decide (a grant's line carries its ancestors and its task), whether the
    descendants of a revoked node are marked yet or not. Expiry is the caller's.
    """
    top = (select(leases.c.id)
           .where(leases.c.parent_id.is_(None), leases.c.revoked_at.is_(None), *roots)
           .cte("in_force", recursive=True))
    below = leases.alias("below")
    # UNION, not UNION ALL: a cycle ends
    return top.union(select(below.c.id).join(top, below.c.parent_id == top.c.id)
                     .where(below.c.revoked_at.is_(None)))


def _collect(conn: Connection, root_ids: Sequence[str]) -> list[str]:
    """Breadth-first over the parent index; a visited set makes cycles harmless."""
    seen: set[str] = set()
    order: list[str] = []
    level = list(dict.fromkeys(root_ids))
    existing: set[str] = set()
    for start in range(0, len(level), _CHUNK):
        existing.update(r.id for r in conn.execute(
            select(leases.c.id).where(leases.c.id.in_(level[start:start + _CHUNK]))).all())
    level = [i for i in level if i in existing]
    while level:
        fresh = [i for i in level if i not in seen]
        seen.update(fresh)
        order.extend(fresh)
        children: list[str] = []
        for start in range(0, len(fresh), _CHUNK):
            chunk = fresh[start:start + _CHUNK]
            children.extend(r.id for r in conn.execute(
                select(leases.c.id).where(leases.c.parent_id.in_(chunk))).all())
        level = [c for c in children if c not in seen]
    return order


def _node(r: Row[Any]) -> LeaseNode:
    return LeaseNode(
        r.id, r.parent_id, r.kind, r.task_id, r.agent_id, as_utc(r.created_at),
        as_utc(r.expires_at) if r.expires_at else None,
        as_utc(r.revoked_at) if r.revoked_at else None,
        r.revoked_reason,
    )


@contextmanager
def writing(conn: Connection) -> Iterator[WriteCursor]:
    """``conn``'s transaction as the audit writer lends its own to an event's effects (a
    :class:`~proctor.audit.WriteCursor` on the same driver connection), so that one
    statement serves both: a write made with its event and the same write alone (a
    revocation the audit log could not record, a suspension's). Driver errors become
    :class:`~proctor.errors.StoreError`."""
    driver = conn.connection.driver_connection
    if driver is None:
        raise StoreError("database error: the connection is closed")
    cursor = driver.cursor()
    try:
        yield WriteCursor(cursor, is_sqlite=conn.dialect.name == "sqlite")
    except driver_errors() as exc:
        raise StoreError(f"database error: {type(exc).__name__}") from exc
    finally:
        cursor.close()


def revoke_roots(tx: WriteCursor, root_ids: Sequence[str], reason: str, now: datetime
                 ) -> list[str]:
    """Revoke ``root_ids`` in ``tx``'s transaction, which puts their subtrees out of
    force; returns those newly revoked. Other nodes hear of it when that transaction
    commits (PostgreSQL ``NOTIFY``, sent by it); the caller calls
    :meth:`LeaseTree.revoked_after` after the commit. The one statement of every
    revocation: by grant, agent or task, with its audit event or alone."""
    at = tx.time(now)
    roots = list(dict.fromkeys(root_ids))
    revoked: list[str] = []
    for start in range(0, len(roots), _CHUNK):
        chunk = roots[start:start + _CHUNK]
        marks = ", ".join(["{p}"] * len(chunk))
        revoked.extend(row[0] for row in tx.rows(_REVOKE % marks, [at, reason, *chunk]))
    _notify(tx, revoked, reason)
    return revoked


def _notify(tx: WriteCursor, revoked: Sequence[str], reason: str) -> None:
    """Tell every node of ``revoked`` when ``tx`` commits (PostgreSQL ``NOTIFY``)."""
    if revoked and not tx.is_sqlite:
        # A NOTIFY payload must stay under 8000 bytes: one per 100 ids, all sent by one
        # statement
        tx.execute(_NOTIFY_REVOKED, [CHANNEL, [
            json.dumps({"ids": revoked[at:at + _NOTIFY_IDS], "reason": reason[:200]})
            for at in range(0, len(revoked), _NOTIFY_IDS)]])

"""The change feed: what any process changed, for the in-process views of every other.

Triggers (migration 0016) add a row to ``changes`` — a monotonic ``seq``, a
``kind`` (``agent``, ``task``, ``lease``, ``tool``; ``subtree`` for the descendants one
transaction marked revoked, migrations 0018 and 0020) and the changed row's ``key`` —
in the same transaction as each change a view cares about, whoever makes it. A
:class:`ChangeFeed` hands those changes to its subscribers, which drop or replace
the entries they hold:

- **PostgreSQL**: the triggers also ``NOTIFY proctor_changes``; a listener thread
  on a connection of its own delivers each change as its transaction commits, on
  every node. The feed is current while that connection is up. When it drops, the
  feed says so at once (:attr:`ChangeFeed.is_current` is False: views read the
  store), reconnects, listens again and only then *resets* its subscribers (they
  forget everything: whatever was missed meanwhile is read again).
- **SQLite**: several processes share one file. Before a view answers it calls
  :meth:`ChangeFeed.catch_up`: one statement on the feed's own connection (one of
  the store's pool, held) reads ``changes`` after the last ``seq`` seen (an index
  seek that finds nothing when nobody changed anything). It used to ask ``PRAGMA
  data_version`` first, but every decision's own audit write is a commit of
  another connection, so the next look paid both statements. One writer at a
  time means ``seq`` order is commit order, so nothing is skipped. A gap (rows
  pruned before this process read them) resets the subscribers; a table that
  cannot be read makes ``catch_up`` answer False (the views read the store).

A view caches a value read from the store only if no change was delivered while it
read (:attr:`ChangeFeed.epoch` did not move), so a change landing during the read is
never hidden under the older value.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from proctor.errors import StoreError
from proctor.store import Store
from proctor.store.chunks import delete_in_chunks
from proctor.store.drivers import psycopg_errors
from proctor.store.tables import changes
from proctor.store.wakeup import Wakeup

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHANNEL", "Change", "ChangeFeed", "prune_changes"]

log = logging.getLogger(__name__)

CHANNEL = "proctor_changes"
KEEP_CHANGES = 100_000  # rows kept by :func:`prune_changes`; a view further behind resets
_BATCH = 10_000  # more than this at once: reset rather than replay


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    kind: str
    key: str


class _Look(threading.local):
    """A thread's :meth:`ChangeFeed.one_look`: whether one is open, and its answer."""

    active = False
    answer: bool | None = None


Listener = Callable[[Sequence[Change]], None]
Reset = Callable[[], None]


class ChangeFeed:
    """Delivers every committed change to the subscribers; knows whether it is current.

    >>> feed = ChangeFeed(store)                         # doctest: +SKIP
    >>> feed.subscribe(view.changed, view.reset)         # doctest: +SKIP
    >>> feed.catch_up()                                  # doctest: +SKIP
    True
    """

    def __init__(self, store: Store, *, poll_seconds: float = 0.5) -> None:
        self._store = store
        self._subscribers: list[tuple[Listener, Reset]] = []
        self._lock = threading.RLock()  # a subscriber may read through the feed again
        self.epoch = 0  # moves with every delivery and reset
        self._current = False
        self._owed = False  # a subscriber missed changes and has not forgotten yet
        self._reads = 0  # reads of the changes begun (SQLite), under the lock
        self._poll = poll_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._memory = False
        self._looking = _Look()
        self.last_seq = self._max_seq()
        if store.backend == "postgresql":
            self._conn: psycopg.Connection[Any] | None = None
            self._wakeup = Wakeup()  # close() ends the listener's wait at once
            try:
                self._conn = self._listen()
                self._current = True
            except StoreError as exc:  # the views read the store until it listens
                log.error("the change feed cannot listen (%s); views read the store",
                          exc.message)
            self._thread = threading.Thread(target=self._run, name="proctor-changes",
                                            daemon=True)
            self._thread.start()
        else:
            database = store.engine.url.database
            self._memory = database in (None, "", ":memory:")
            if not self._memory:  # one of the pool's, held: it counts like any other
                try:
                    self._proxy = store.engine.raw_connection()
                except SQLAlchemyError as exc:
                    raise StoreError(f"cannot read changes: {type(exc).__name__}") from exc
                self._sqlite = self._proxy.driver_connection
            self._current = True

    def subscribe(self, listener: Listener, reset: Reset) -> None:
        """Call ``listener(changes)`` with every batch of changes, ``reset()`` when
        changes may have been missed (the subscriber forgets everything it holds)."""
        self._subscribers.append((listener, reset))

    @property
    def sees_every_commit(self) -> bool:
        """Whether :meth:`catch_up` has heard, when it returns True, every change committed
        before it was called (SQLite: it reads them then). On PostgreSQL a change
        committed a moment ago may still be on its way to the listener: a read that must
        honour every commit before it (a revocation) goes to the store there."""
        return self._store.backend != "postgresql"

    @property
    def is_current(self) -> bool:
        """Whether the subscribers have heard of every change committed so far (as far
        as the feed can prove): on PostgreSQL, while the listener is connected."""
        return self._current and not self._owed and not self._stopping.is_set()

    @contextlib.contextmanager
    def one_look(self) -> Iterator[None]:
        """On this thread, within the block, :meth:`catch_up` looks once and answers the
        same after: one decision reads its views (agent, task, grant line) as of one
        moment, at the cost of one ``PRAGMA`` rather than one per view. The write that
        stands behind the decision confirms what must be current (revocations,
        suspensions) as committed then."""
        if self._looking.active:
            yield
            return
        self._looking.active, self._looking.answer = True, None
        try:
            yield
        finally:
            self._looking.active, self._looking.answer = False, None

    def catch_up(self) -> bool:
        """Deliver what other processes committed since the last call (SQLite); True if
        the subscribers may answer from what they hold, False if they must read the
        store. Never raises."""
        looking = self._looking
        if looking.active:
            if looking.answer is None:
                looking.answer = self._catch_up()
            return looking.answer
        return self._catch_up()

    def _catch_up(self) -> bool:
        if self._owed:
            with self._lock:
                if self._owed:
                    self._reset_all()  # again: until every subscriber has forgotten
                if self._owed:
                    return False
        if self._store.backend == "postgresql":
            return self.is_current
        arrived = self._reads  # the reads begun before this call
        with self._lock:
            if self._stopping.is_set():
                return False
            if self._reads != arrived and self._current:
                # a read begun after this call came has ended well (the lock is ours, and
                # a read that fails says so before it lets go of it): it heard every
                # change committed before this call. Threads that waited for the lock
                # share it rather than each reading again
                return not self._owed
            self._reads += 1
            try:
                # in memory: one connection, the store's own
                self._read_after(None if self._sqlite is None else self._sqlite.execute)
            except Exception as exc:  # unreadable: the views read the store instead
                if self._current:
                    log.error("the change feed cannot be read (%s); views read the store",
                              type(exc).__name__)
                self._current = False
                return False
            self._current = True
            return not self._owed  # a subscriber that missed what was read: the store

    def _read_after(self, execute: Callable[..., Any] | None) -> None:
        query = ("SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq LIMIT ?")
        params = (self.last_seq, _BATCH + 1)
        if execute is not None:
            rows = [tuple(r) for r in execute(query, params).fetchall()]
        else:
            rows = [tuple(r) for r in self._store.fetch(
                query.replace("?", "{p}"), list(params))]
        if not rows:
            return
        found = [Change(int(r[0]), str(r[1]), str(r[2])) for r in rows]
        if found[0].seq != self.last_seq + 1 or len(found) > _BATCH:
            self.last_seq = self._max_seq()
            self._reset_all()
            return
        self.last_seq = found[-1].seq
        self._deliver(found)

    def _max_seq(self) -> int:
        try:
            with self._store.reading() as conn:
                return int(conn.execute(select(func.max(changes.c.seq))).scalar() or 0)
        except StoreError:
            return 0

    def _deliver(self, found: Sequence[Change]) -> None:
        # A subscriber whose listener fails has missed these changes: it forgets what it
        # holds. If it cannot, the feed is not current (every view reads the store) until
        # a reset of all succeeds: a missed change is never answered from memory.
        self.epoch += 1
        for listener, reset in self._subscribers:
            try:
                listener(found)
            except Exception:
                log.exception("change listener failed; its subscriber forgets what it holds")
                self._reset_one(reset)

    def _reset_all(self) -> None:
        # The debt is cleared only once every subscriber has forgotten: a look that does
        # not take the lock (PostgreSQL's) must not be answered current while one that
        # missed changes still holds them.
        self.epoch += 1
        forgotten = [self._reset_one(reset) for _, reset in self._subscribers]
        self._owed = not all(forgotten)

    def _reset_one(self, reset: Reset) -> bool:
        try:
            reset()
        except Exception:
            log.exception("change reset failed; views read the store until one succeeds")
            self._owed = True
            return False
        return True

    # PostgreSQL

    def _listen(self) -> psycopg.Connection[Any]:
        try:
            self._proxy = self._store.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot listen for changes: {type(exc).__name__}") from exc
        conn: psycopg.Connection[Any] = self._proxy.driver_connection  # type: ignore[assignment]
        try:
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg_errors("Error") as exc:
            self._proxy.invalidate()
            raise StoreError(f"cannot listen for changes: {type(exc).__name__}") from exc
        return conn

    def _run(self) -> None:
        # the connection's errors, or its descriptor gone (OSError)
        lost: tuple[type[Exception], ...] = (*psycopg_errors("Error"), OSError)
        try:
            self._listen_until_closed(lost)
        finally:
            # the listener's connection is its own to give back: close() may have given up
            # waiting for this thread while it was opening one
            if self._conn is not None:
                self._conn = None
                self._proxy.invalidate()
            self._wakeup.close()

    def _listen_until_closed(self, lost: tuple[type[Exception], ...]) -> None:
        while not self._stopping.is_set():
            conn = self._conn
            if conn is None:
                self._reconnect()
                continue
            try:
                # what has arrived (timeout 0: one look), then wait for more or for close()
                for note in conn.notifies(timeout=0):
                    self._heard(note.payload)
                if not self._stopping.is_set():
                    self._wakeup.wait(conn.fileno(), self._poll)
            except Exception as exc:  # lost, or anything unforeseen: never a dead listener
                if self._stopping.is_set():  # that leaves the feed saying it is current
                    return
                if not isinstance(exc, lost):
                    log.exception("the change feed's listener failed")
                self._current = False
                self.epoch += 1
                self._conn = None
                log.error("the change feed lost its connection; views read the store "
                          "until it is back")
                self._proxy.invalidate()

    def _reconnect(self) -> None:
        while not self._stopping.wait(self._poll):
            try:
                self._conn = self._listen()
            except StoreError:
                continue
            if self._stopping.is_set():  # closed meanwhile: _run gives it back
                return
            self._reset_all()  # listening again: whatever was missed is read again
            self._current = True
            log.info("the change feed is back")
            return

    def _heard(self, payload: str) -> None:
        seq, _, rest = payload.partition(" ")
        kind, _, key = rest.partition(" ")
        if not (seq.isascii() and seq.isdigit()) or not kind:  # '²' is a digit to isdigit
            log.warning("ignored a malformed change notification")
            return
        with self._lock:  # as on SQLite: whoever holds the feed's lock holds its news
            self.last_seq = max(self.last_seq, int(seq))
            self._deliver([Change(int(seq), kind, key)])

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._wakeup.wake()
            # the thread gives its connection back as it ends; if it does not end in time
            # (it may be opening one), it still will
            self._thread.join(timeout=5 * self._poll + 1)
        if self._sqlite is not None:
            self._sqlite = None
            self._proxy.close()  # back to the pool


def prune_changes(store: Store, keep: int = KEEP_CHANGES, *, chunk: int | None = None,
                  most_chunks: int | None = None) -> int:
    """Forget all but the last ``keep`` changes (at least the newest, which shows a view
    that had not read the others yet that it missed some: it resets); returns how many
    were forgotten. Oldest first, ``chunk`` a transaction
    (:func:`~proctor.store.chunks.delete_in_chunks`: a backlog left by a long outage is
    not one transaction holding SQLite's write lock); at most ``most_chunks`` of them
    (None: all)."""
    if keep < 1:
        raise ValueError("the newest change is always kept")
    with store.reading() as conn:
        newest = conn.execute(select(func.max(changes.c.seq))).scalar()
    if newest is None:
        return 0
    last = int(newest) - keep  # changes made meanwhile come after it

    def one_chunk(conn: Connection, size: int) -> tuple[int, bool]:
        first = conn.execute(select(func.min(changes.c.seq))).scalar()
        if first is None or int(first) > last:
            return 0, True
        up_to = min(int(first) + size - 1, last)  # by position: gaps make a chunk smaller
        return int(conn.execute(delete(changes).where(
            changes.c.seq >= int(first), changes.c.seq <= up_to)).rowcount), up_to >= last

    return delete_in_chunks(store, one_chunk, chunk=chunk, most_chunks=most_chunks)

"""The append path on the database driver itself (sqlite3 or psycopg).

The writer appends thousands of rows a second; SQLAlchemy's statement
machinery cost a measured 11-43% of that throughput, so this one path talks
to the DBAPI connection directly. Everything else uses SQLAlchemy Core.

One append is one transaction: what the batch's decisions change besides their
events (their *effects*, run on a :class:`WriteCursor` of that transaction: a
grant's use, a proof's nonce, a task's activity), a compare-and-set that moves
the head row from the head the writer expects to the new one, the event rows,
and optionally a checkpoint. If another process moved the head first, the
compare-and-set touches no row and the transaction is rolled back, effects and
all: the chain never forks, and the batch is applied again on the new head.

A batch observer that folds the batch (the risk engine's) moves the head row's
``folded`` mark with it (:attr:`WriteCursor.fold_mark`): on SQLite in the head's own
compare-and-set, which then also expects the mark where the observer found it (no
statement or page of its own); on PostgreSQL by a compare-and-set of the mark just
before the head's. Either refusing rolls the batch back, as above.

The head row is read (and locked, on PostgreSQL) at the start of the transaction,
so that a batch is built on the head it will be chained onto. On SQLite, once
:data:`TRUST_AFTER` batches in a row found the head where this connection left it
(no other process appends), that read is skipped: ``BEGIN IMMEDIATE`` makes this
connection the only writer until it commits, so the compare-and-set alone tells
whether the head it remembers is still the head. A refused compare-and-set (another
process appended) costs the batch's work once, rolled back; the head is read again
before each batch until it has been quiet for :data:`TRUST_AFTER` batches again.

No statement of the writer waits without limit for another connection's lock: a row an
effect reads ``FOR SHARE`` or ``FOR UPDATE`` (a grant's lease, an agent, a task), or the
head row, held by a revocation, a suspension, another node's writer, or a human's open
transaction. The connection's lock wait (``busy_timeout_ms``: SQLite's ``busy_timeout``,
PostgreSQL's ``lock_timeout``) is set when it is opened; on PostgreSQL ``timeout_ms``
also bounds each statement (``statement_timeout``) and the time the writer's own
transaction may sit idle (``idle_in_transaction_session_timeout``: a writer stuck inside
its transaction lets go of the head row, and every other node's writer with it). A lock
not granted in time, or a statement past its limit, fails the batch: rolled back,
nothing of it written, :class:`~proctor.errors.AuditUnavailableError` for every caller
in it, and the connection kept for the next batch. Closing gives the connection back to
the pool with the settings it came with.

An append may be asked not to wait (``wait=False``; SQLite, for a writer on an event
loop): the connection's ``busy_timeout`` is 0 for it, and another connection's write lock
(another process's, or this one's other connections) is :class:`LockTaken` at once,
nothing written and the connection kept, instead of a wait of up to ``busy_timeout``.

The events' task, actor, actor type and time keys (``audit_keys``, read by
:mod:`proctor.audit.query`) are
filled in the transaction of the batch that takes the events past the head row's
``keyed`` mark by :data:`KEYS_EVERY` or more: one sorted insert of the keys of up to
:data:`KEYS_MOST` events read back from the table, and the mark moved to the last of
them. The keys and their mark commit together or not at all.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection

from proctor.audit.chain import GENESIS, ChainHead
from proctor.audit.checkpoints import Checkpoint
from proctor.errors import AuditUnavailableError
from proctor.store import Store
from proctor.store.drivers import psycopg_errors

__all__ = [
    "KEYS_EVERY",
    "KEYS_MOST",
    "TIME_KEY",
    "TRUST_AFTER",
    "AppendConnection",
    "EventRow",
    "LockTaken",
    "WriteCursor",
    "first_index_mismatch",
    "is_integrity_error",
    "iter_links",
]

log = logging.getLogger(__name__)

# Written with `?` placeholders; psycopg's `%s` is substituted once per connection.
_MOVE_HEAD = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1 AND seq = ? AND hash = ?"
# SQLite: the head and the risk fold's mark in one compare-and-set (`IS`: NULL-safe)
_MOVE_HEAD_AND_MARK = ("UPDATE audit_head SET seq = ?, hash = ?, folded = ? "
                       "WHERE id = 1 AND seq = ? AND hash = ? AND folded IS ?")
# PostgreSQL: the mark alone, before the head's statement (which stays as it is)
_MOVE_MARK = ("UPDATE audit_head SET folded = %s "
              "WHERE id = 1 AND folded IS NOT DISTINCT FROM %s")
_INSERT_EVENTS = (  # SQLite: a multi-row INSERT; VALUES repeated per row
    "INSERT INTO audit_events (seq, event_id, time, actor_type, actor_id, task, action, "
    "decision, body, prev_hash, hash) VALUES "
)
_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROW_WIDTH = _ROW_MARKS.count("?")
_COPY_EVENTS = (  # PostgreSQL, a long batch
    "COPY audit_events (seq, event_id, time, actor_type, actor_id, task, action, decision, "
    "body, prev_hash, hash) FROM STDIN"
)
# PostgreSQL, a batch of up to _MOST_VALUES rows: the head's compare-and-set and the rows
# in one statement (one round trip, where the UPDATE and a COPY take three); no row is
# inserted unless the head moved. Up to 4 rows it costs less CPU than the COPY; from 5
# on more, the server parsing and planning each row's parameters (docs/benchmarks.md)
_MOST_VALUES = 4
_MOVE_HEAD_AND_INSERT = (
    "WITH moved AS (UPDATE audit_head SET seq = %s, hash = %s "
    "WHERE id = 1 AND seq = %s AND hash = %s RETURNING 1) "
    "INSERT INTO audit_events (seq, event_id, time, actor_type, actor_id, task, action, "
    "decision, body, prev_hash, hash) SELECT * FROM (VALUES "
)
_LOCK_HEAD = {True: "SELECT seq, hash FROM audit_head WHERE id = 1",
              False: "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"}
_ANY_AUDIT_ROWS = (
    "SELECT EXISTS (SELECT 1 FROM audit_events) OR EXISTS (SELECT 1 FROM audit_checkpoints)"
)
_INSERT_HEAD = "INSERT INTO audit_head (id, seq, hash) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING"
_INSERT_CHECKPOINT = (
    "INSERT INTO audit_checkpoints (seq, hash, kid, signed_at, payload, signature) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

# An event's time as its `w` key: the text SQLite's column holds (SQLAlchemy's DateTime,
# UTC), which sorts as the times do; PostgreSQL writes the same text from its timestamptz.
# (The cast gives SQLite's expression text affinity: compared with a key as it is, the
# column's numeric affinity would keep the keys' primary key from being searched.)
TIME_KEY = {True: "CAST(time AS TEXT)",
            False: "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"}

# The keys of events (keyed, up_to]: a task's, an actor's, an actor type's and a time's
# in one sorted insert. A key already there (left by events deleted without theirs) is no
# reason to stop the log: a search checks the event's own column too
_FILL_KEYS = ("INSERT INTO audit_keys (kind, key, seq) "
              "SELECT 't', task, seq FROM audit_events WHERE seq > ? AND seq <= ? UNION ALL "
              "SELECT 'a', actor_id, seq FROM audit_events WHERE seq > ? AND seq <= ? UNION ALL "
              "SELECT 'y', actor_type, seq FROM audit_events WHERE seq > ? AND seq <= ? "
              "UNION ALL SELECT 'w', {time}, seq FROM audit_events WHERE seq > ? AND seq <= ? "
              "ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING")
_READ_KEYED = "SELECT keyed FROM audit_head WHERE id = 1"
_MOVE_KEYED = "UPDATE audit_head SET keyed = ? WHERE id = 1"

KEYS_EVERY = 4096
"""Events past the head row's ``keyed`` mark after which a batch fills their keys."""
KEYS_MOST = 2 * KEYS_EVERY
"""The most events one batch fills the keys of (a mark left behind catches up in steps)."""

TRUST_AFTER = 8
"""SQLite: batches in a row that found the head where this connection left it, after
which the head is no longer read before a batch (the compare-and-set still checks)."""


class EventRow(NamedTuple):
    seq: int
    event_id: str
    time: datetime
    actor_type: str
    actor_id: str
    task: str
    action: str
    decision: str | None
    body: str
    prev_hash: str
    hash: str


class WriteCursor:
    """The writer's open transaction, lent to the effects of a batch's decisions.

    Statements are written with ``{p}`` for each parameter (the driver's own
    placeholder replaces it); times go in through :meth:`time` and come back
    through :meth:`read_time`, whichever the backend. On PostgreSQL a row an
    effect must see as committed now is read ``FOR SHARE`` (:attr:`for_share`).

    :attr:`confirmed` is the effects' own memo for this transaction: what one of them
    read as committed now (and locked, on PostgreSQL) and no effect writes, so that
    the next effect of the batch need not read it again. A retried batch gets a new
    cursor, and an empty memo.

    :attr:`fold_mark`, set by a batch observer, is ``(found, new)``: the head row's
    ``folded`` is expected at ``found`` (None: NULL) and moves to ``new`` with the head,
    or the batch is rolled back.
    """

    __slots__ = ("_cursor", "backend", "confirmed", "fold_mark", "for_share", "is_sqlite")

    def __init__(self, cursor: Any, *, is_sqlite: bool) -> None:
        self._cursor = cursor
        self.is_sqlite = is_sqlite
        self.backend = "sqlite" if is_sqlite else "postgresql"
        # SQLite's writer holds the database's one write lock: every read is current
        self.for_share = "" if is_sqlite else " FOR SHARE"
        self.confirmed: dict[tuple[str, str], object] = {}
        self.fold_mark: tuple[int | None, int] | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        self._cursor.execute(_placeholders(sql, self.is_sqlite), tuple(params))
        return int(self._cursor.rowcount)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; the rows it returned."""
        self._cursor.execute(_placeholders(sql, self.is_sqlite), tuple(params))
        found = self._cursor.fetchall()
        if found and type(found[0]) is not tuple:  # a row type of the driver's own
            return [tuple(row) for row in found]
        return found  # type: ignore[no-any-return]

    def time(self, value: datetime) -> Any:
        """``value`` as this backend stores it."""
        return _sqlite_time(value) if self.is_sqlite else value

    def read_time(self, value: Any) -> datetime | None:
        """A stored time as aware UTC (None stays None)."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str, is_sqlite: bool) -> str:
    return sql.replace("{p}", "?" if is_sqlite else "%s")


Build = Callable[[WriteCursor, ChainHead],
                 "tuple[Sequence[EventRow], Checkpoint | None, Sequence[str]] | None"]
"""Called inside the append's transaction with the head as it is there: applies the
batch's effects and returns the rows to append after it, a checkpoint if one is due,
and the rows' times as their bodies hold them (``format_time``: SQLite's text is cut
from it rather than formatted again); or None to roll back and be called again on a
fresh read of the head."""


class LockTaken(Exception):  # noqa: N818 (a state, not a failure: the append did not wait)
    """An append that would not wait found the write lock taken: nothing was written."""


# PostgreSQL: the session bounds of the writer's connection (see the module docstring),
# read as the pool gave them and set to the writer's own
_SESSION_BOUNDS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
_READ_BOUNDS = "SELECT " + ", ".join(f"current_setting('{name}')" for name in _SESSION_BOUNDS)
_SET_BOUNDS = "SELECT " + ", ".join(f"set_config('{name}', %s, false)"
                                    for name in _SESSION_BOUNDS)


def _is_lock_taken(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's busy or locked (another connection holds the lock)."""
    return (isinstance(exc, sqlite3.OperationalError)
            and getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY,
                                                                sqlite3.SQLITE_LOCKED))


class AppendConnection:
    """A dedicated driver connection that appends to the chain."""

    def __init__(self, store: Store, *, busy_timeout_ms: int | None = None,
                 timeout_ms: int | None = None) -> None:
        self._store = store
        self._is_sqlite = store.backend == "sqlite"
        mark = "?" if self._is_sqlite else "%s"
        (self._move_head, self._insert_checkpoint, self._insert_head, self._fill_keys,
         self._move_keyed) = (sql.replace("?", mark) for sql in (
             _MOVE_HEAD, _INSERT_CHECKPOINT, _INSERT_HEAD,
             _FILL_KEYS.format(time=TIME_KEY[self._is_sqlite]), _MOVE_KEYED))
        self._lock_head = _LOCK_HEAD[self._is_sqlite]
        self._busy_timeout_ms = busy_timeout_ms
        # PostgreSQL: the bounds this connection writes under, and those it came with
        self._bounds: tuple[str, ...] | None = None
        if not self._is_sqlite and (busy_timeout_ms is not None or timeout_ms is not None):
            self._bounds = (("" if busy_timeout_ms is None else str(int(busy_timeout_ms))),
                            *(("" if timeout_ms is None else str(int(timeout_ms))),) * 2)
        self._pool_bounds: tuple[str, ...] = ()
        self._waits = True  # SQLite: the connection's busy_timeout is its own (else 0)
        self._wait_ms = 0  # that busy_timeout, read when the connection is opened
        self._pool_ms = 0  # SQLite: the busy_timeout the pool gave it, given back on close
        self._proxy: Any = None
        self._quiet = 0  # batches in a row whose head read found the head expected
        self._keyed: int | None = None  # the head row's `keyed` as last committed (None: read it)

    def _connection(self) -> Any:
        if self._proxy is None:
            self._proxy = self._store.engine.raw_connection()
            if self._is_sqlite:
                self._pool_ms = int(self._proxy.driver_connection.execute(
                    "PRAGMA busy_timeout").fetchone()[0])
            if self._is_sqlite and self._busy_timeout_ms is not None:
                self._proxy.driver_connection.execute(
                    f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            if self._is_sqlite:
                self._waits = True
                self._wait_ms = int(self._proxy.driver_connection.execute(
                    "PRAGMA busy_timeout").fetchone()[0])
            elif self._bounds is not None:
                try:
                    self._pool_bounds = self._set_bounds(self._proxy.driver_connection,
                                                         self._bounds)
                except BaseException:
                    self.discard()
                    raise
        return self._proxy.driver_connection

    @staticmethod
    def _set_bounds(conn: Any, bounds: Sequence[str]) -> tuple[str, ...]:
        """PostgreSQL: set the session's bounds (an empty one is left as it is),
        committed; those it had before."""
        cursor = conn.cursor()
        cursor.execute(_READ_BOUNDS)
        before = tuple(str(value) for value in cursor.fetchone())
        cursor.execute(_SET_BOUNDS, [new or old for new, old in zip(bounds, before,
                                                                     strict=True)])
        cursor.close()
        conn.commit()
        return before

    def _wait_for_locks(self, conn: Any, wait: bool) -> None:
        """SQLite: the connection's own ``busy_timeout``, or 0 (set only when it changes)."""
        if self._is_sqlite and wait is not self._waits:
            conn.execute(f"PRAGMA busy_timeout={self._wait_ms if wait else 0}")
            self._waits = wait

    def read_head(self) -> ChainHead:
        """The head as the database has it now.

        A database whose audit tables were emptied has no head row: its chain
        starts again at genesis. A missing head row next to events or
        checkpoints is damage, and nothing is appended.
        """
        try:
            conn = self._connection()
            self._wait_for_locks(conn, True)
            cursor = conn.cursor()
            cursor.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
            row = cursor.fetchone()
            if row is None:
                cursor.execute(_ANY_AUDIT_ROWS)
                if not cursor.fetchone()[0]:
                    cursor.execute(self._insert_head, (1, 0, GENESIS.hash))
                    row = (0, GENESIS.hash)
            cursor.close()
            self._end(conn, commit=True)
        except Exception as exc:
            self.discard()
            raise AuditUnavailableError(f"cannot read the audit head: {_name(exc)}") from exc
        if row is None:
            raise AuditUnavailableError("the audit head row is missing")
        return ChainHead(int(row[0]), str(row[1]))

    def append(self, expected: ChainHead, build: Build, *,
               wait: bool = True) -> ChainHead | None:
        """Apply ``build`` and append the rows it returns, in one transaction; the new
        head (None: ``build`` declined, the head moved under the compare-and-set, or
        PostgreSQL broke a deadlock the effects were in; nothing was written).

        The head is read and locked first: ``expected`` (the writer's memory of it)
        is only a guess, and ``build`` chains onto the head as read. On SQLite, after
        :data:`TRUST_AFTER` quiet batches, ``expected`` is built on unread and the
        compare-and-set refuses it if another process moved the head (None).

        ``wait=False`` (SQLite): raise :class:`LockTaken`, nothing written, rather than
        wait for another connection's lock (see the module's docstring).
        """
        conn = self._connection()
        try:
            self._wait_for_locks(conn, wait)
            cursor = conn.cursor()
            if self._is_sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            if not self._is_sqlite or self._quiet < TRUST_AFTER:
                # The head as it is now, locked until commit: the batch is built on the
                # head it will be chained onto.
                cursor.execute(self._lock_head)
                found = cursor.fetchone()
                if found is not None and (int(found[0]), str(found[1])) != tuple(expected):
                    expected = ChainHead(int(found[0]), str(found[1]))
                    self._quiet = 0
                else:
                    self._quiet += 1
            tx = WriteCursor(cursor, is_sqlite=self._is_sqlite)
            built = build(tx, expected)
            if built is None:  # the batch cannot go on this head: start again
                self._end(conn, commit=False)
                return None
            rows, checkpoint, times = built
            if not rows:  # effects alone, no event
                cursor.close()
                self._end(conn, commit=True)
                return expected
            new = ChainHead(rows[-1].seq, rows[-1].hash)
            moved = (new.seq, new.hash, expected.seq, expected.hash)
            mark = tx.fold_mark
            if self._is_sqlite:
                if mark is None:
                    cursor.execute(self._move_head, moved)
                else:
                    cursor.execute(_MOVE_HEAD_AND_MARK, (*moved[:2], mark[1], *moved[2:], mark[0]))
                is_moved = cursor.rowcount == 1
                if is_moved:
                    self._insert(cursor, rows, times)
            elif mark is not None and not _moved(cursor, _MOVE_MARK, (mark[1], mark[0])):
                is_moved = False
            else:
                is_moved = self._move_and_insert(cursor, moved, rows)
            if not is_moved:  # another process moved the head: build again on it
                self._quiet = 0
                self._end(conn, commit=False)
                return None
            if checkpoint is not None:
                cursor.execute(self._insert_checkpoint, self._checkpoint(checkpoint))
            keyed = self._keyed
            if keyed is None or new.seq - keyed >= KEYS_EVERY:
                keyed = self._fill(cursor, new.seq)
            cursor.close()
            self._end(conn, commit=True)
            self._keyed = keyed
        except psycopg_errors("DeadlockDetected"):
            # the batch's effects waited on a row a revocation or suspension held while
            # it waited on one of theirs: PostgreSQL broke the cycle; apply it again
            log.warning("an audit batch was rolled back to break a deadlock; retrying")
            self.discard(rollback=True)
            return None
        except psycopg_errors("LockNotAvailable", "QueryCanceled") as exc:
            # a lock held past lock_timeout, or a statement past statement_timeout: the
            # batch fails closed; the connection only has a transaction to roll back
            try:
                self._end(conn, commit=False)
            except Exception:
                self.discard()
            self._quiet = 0
            raise AuditUnavailableError(_bound_passed(exc)) from exc
        except Exception as exc:
            if not wait and _is_lock_taken(exc):
                self._quiet = 0
                try:  # the connection stays: only the lock was missing
                    self._end(conn, commit=False)
                except Exception:
                    self.discard()
                raise LockTaken from exc
            self.discard(rollback=True)
            raise AuditUnavailableError(f"cannot write audit events: {_name(exc)}") from exc
        return new

    def _fill(self, cursor: Any, head: int) -> int:
        """Fill the keys of the events after the head row's ``keyed`` mark, if
        :data:`KEYS_EVERY` or more (up to :data:`KEYS_MOST` of them), moving the mark
        with them; the mark as this transaction leaves it."""
        cursor.execute(_READ_KEYED)
        found = cursor.fetchone()
        keyed = int(found[0] or 0) if found is not None else 0
        if head - keyed < KEYS_EVERY:
            return keyed
        up_to = min(head, keyed + KEYS_MOST)
        cursor.execute(self._fill_keys, (keyed, up_to) * 4)
        cursor.execute(self._move_keyed, (up_to,))
        return up_to

    def _move_and_insert(self, cursor: Any, moved: tuple[Any, ...],
                         rows: Sequence[EventRow]) -> bool:
        """PostgreSQL: move the head and insert ``rows``; False (nothing inserted) when
        the head was not where the compare-and-set expects it."""
        if len(rows) <= _MOST_VALUES:
            cursor.execute(_move_and_insert_rows(len(rows)),
                           [*moved, *(v for r in rows for v in r)])
            return bool(cursor.rowcount == len(rows))
        cursor.execute(self._move_head, moved)
        if cursor.rowcount != 1:
            return False
        # COPY moves many rows about twice as fast as a pipelined executemany, for half
        # the CPU of a multi-row INSERT of 256 (parsed and planned each time)
        with cursor.copy(_COPY_EVENTS) as copy:
            for row in rows:
                copy.write_row(row)
        return True

    def _insert(self, cursor: Any, rows: Sequence[EventRow], times: Sequence[str]) -> None:
        # One multi-row INSERT per chunk: sqlite3 releases the GIL around each
        # statement step and must win it back, which under many busy threads
        # costs far more than the insert itself. Chunk sizes are powers of two
        # so that only a handful of distinct statements are ever prepared.
        start, left = 0, len(rows)
        while left:
            size = _CHUNK_FOR[left] if left < _CHUNKS[-1] else _CHUNKS[-1]
            values = list(_flat(rows[start:start + size]))
            # each row's time, as SQLAlchemy's SQLite DateTime stores it: the body's
            # `YYYY-MM-DDTHH:MM:SS.ffffffZ` with a space for the T and no Z
            values[2::_ROW_WIDTH] = [t[:10] + " " + t[11:26] for t in times[start:start + size]]
            cursor.execute(_insert_rows(size), values)
            start += size
            left -= size

    def _end(self, conn: Any, *, commit: bool) -> None:
        # sqlite3 runs with isolation_level=None (see proctor.store.engine): the
        # transaction is ours to end with SQL; psycopg ends it on the connection.
        if self._is_sqlite:
            if conn.in_transaction:
                conn.execute("COMMIT" if commit else "ROLLBACK")
        elif commit:
            conn.commit()
        else:
            conn.rollback()

    def _checkpoint(self, cp: Checkpoint) -> tuple[Any, ...]:
        when = _sqlite_time(cp.signed_at) if self._is_sqlite else cp.signed_at
        return (cp.seq, cp.hash, cp.kid, when, cp.payload, cp.signature)

    def discard(self, *, rollback: bool = False) -> None:
        """Drop the connection (after an error); the next call opens a fresh one.

        With ``rollback``, end the failed transaction first, so that its locks
        go now rather than whenever the connection object is collected.
        """
        proxy, self._proxy = self._proxy, None
        self._quiet = 0
        self._keyed = None
        if proxy is None:
            return
        try:
            if rollback:
                self._end(proxy.driver_connection, commit=False)
        except Exception:  # the connection is broken; dropping it is all that is left
            log.debug("rolling back a failed audit write failed", exc_info=True)
        try:
            proxy.invalidate()
        except Exception:
            log.debug("discarding a broken audit connection failed", exc_info=True)

    def close(self) -> None:
        """Give the connection back to the pool with the lock bounds it came with (the
        pool's connect hook sets them once per connection; SQLite's ``busy_timeout`` a
        write that would not wait left 0, ``busy_timeout_ms`` another; PostgreSQL's
        session bounds, the writer's own)."""
        proxy, self._proxy = self._proxy, None
        if proxy is None:
            return
        try:
            if self._is_sqlite:
                proxy.driver_connection.execute(f"PRAGMA busy_timeout={self._pool_ms}")
            elif self._bounds is not None:
                self._set_bounds(proxy.driver_connection, self._pool_bounds)
        except Exception:  # a connection that cannot take them is not given back
            log.debug("restoring an audit connection's lock bounds failed", exc_info=True)
            self._proxy = proxy
            self.discard()
            return
        proxy.close()


_CHUNKS = (1, 4, 16, 64, 256)
# the chunk a batch of n rows (n below the largest chunk) starts with: the largest that fits
_CHUNK_FOR = (0, *(max(c for c in _CHUNKS if c <= n) for n in range(1, _CHUNKS[-1])))
_flat = itertools.chain.from_iterable


def _moved(cursor: Any, sql: str, params: tuple[Any, ...]) -> bool:
    cursor.execute(sql, params)
    return bool(cursor.rowcount == 1)


@functools.cache
def _insert_rows(count: int) -> str:
    return _INSERT_EVENTS + ", ".join([_ROW_MARKS] * count)


@functools.cache
def _move_and_insert_rows(count: int) -> str:
    return (_MOVE_HEAD_AND_INSERT + ", ".join([_ROW_MARKS.replace("?", "%s")] * count)
            + ") AS v WHERE EXISTS (SELECT FROM moved)")


_UTC_OFFSET = timedelta(0)


def _sqlite_time(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime reads and compares: isoformat(sep=" ",
    # timespec="microseconds") of the UTC time without its offset, at half the CPU (the
    # keyword arguments are most of isoformat's; as events.format_time)
    if value.utcoffset() != _UTC_OFFSET:  # the usual case is UTC already
        value = value.astimezone(UTC)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond)


def is_integrity_error(error: BaseException | None) -> bool:
    """True for a constraint or a value the database refused (a duplicate key, say, or
    a text PostgreSQL cannot hold): the fault of one event, not of the database, so
    the writer writes its batch-mates without it."""
    return isinstance(error, (sqlite3.IntegrityError, sqlite3.DataError,
                              *psycopg_errors("IntegrityError", "DataError")))


def _bound_passed(exc: Exception) -> str:
    """What a batch failed on when a PostgreSQL bound fired."""
    if isinstance(exc, psycopg_errors("LockNotAvailable")):
        why = ("a row it needs is locked by another transaction past the writer's "
               "lock timeout")
    else:
        why = "a statement ran past the writer's statement timeout"
    return f"cannot write audit events: {why}; nothing of the batch was written ({_name(exc)})"


def _name(exc: Exception) -> str:
    return f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}: {exc}".splitlines()[0]


# The query columns must say what the event body says. Checked inside the
# database (SQLite's json_extract, PostgreSQL's json operators) so verify does
# not parse every body in Python.
_INDEX_MISMATCH = {
    # One json_extract with several paths parses each body once and renders the
    # values as a JSON array; json_array renders the columns the same way.
    "sqlite": (
        "SELECT min(seq) FROM audit_events WHERE "
        "json_extract(body, '$.id', '$.actor.type', '$.actor.id', '$.task', '$.action', "
        "'$.decision.outcome', '$.time') IS NOT json_array(event_id, actor_type, actor_id, "
        "task, action, decision, substr(time, 1, 10) || 'T' || substr(time, 12) || 'Z')"
    ),
    # Each body is parsed once, to jsonb (OFFSET 0 keeps the planner from
    # inlining the parse into every comparison).
    "postgresql": (
        "SELECT min(e.seq) FROM audit_events e, LATERAL (SELECT e.body::jsonb AS j OFFSET 0) b "
        "WHERE e.event_id IS DISTINCT FROM b.j->>'id' "
        "OR e.actor_type IS DISTINCT FROM b.j->'actor'->>'type' "
        "OR e.actor_id IS DISTINCT FROM b.j->'actor'->>'id' "
        "OR e.task IS DISTINCT FROM b.j->>'task' "
        "OR e.action IS DISTINCT FROM b.j->>'action' "
        "OR e.decision IS DISTINCT FROM b.j->'decision'->>'outcome' "
        "OR e.time IS DISTINCT FROM (b.j->>'time')::timestamptz"
    ),
}
# Bodies are read as bytes (the UTF-8 the hash covers) rather than decoded to
# text and encoded back.
_PAGE = {
    "sqlite": "SELECT seq, prev_hash, hash, CAST(body AS BLOB) FROM audit_events "
              "WHERE seq > ? ORDER BY seq LIMIT ?",
    "postgresql": "SELECT seq, prev_hash, hash, convert_to(body, 'UTF8') FROM audit_events "
                  "WHERE seq > %s ORDER BY seq LIMIT %s",
}


def iter_links(conn: Connection, *, page: int = 20_000
               ) -> Iterator[list[tuple[int, str, str, bytes]]]:
    """The chain as pages of ``(seq, prev_hash, hash, body)``, in order, read on ``conn``:
    a connection of :meth:`~proctor.store.Store.snapshot`, so that every page is of the
    one snapshot (read each in a snapshot of its own, a deletion chunk committed between
    two pages was a gap, and events appended meanwhile lay past the head read before
    or after the walk)."""
    driver: Any = conn.connection.driver_connection
    sql, after = _PAGE[conn.dialect.name], -1
    while True:
        cursor = driver.cursor()
        try:
            cursor.execute(sql, (after, page))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def first_index_mismatch(store: Store) -> int | None:
    """The first position whose query columns disagree with its event body."""
    # A plain read on the driver: Store.transaction() would begin SQLite's
    # write transaction and hold the writers off for the whole scan.
    proxy = store.engine.raw_connection()
    try:
        conn: Any = proxy.driver_connection
        cursor = conn.cursor()
        cursor.execute(_INDEX_MISMATCH[store.backend])
        value = cursor.fetchone()[0]
        cursor.close()
        if store.backend != "sqlite":
            conn.rollback()
    except Exception as exc:
        raise AuditUnavailableError(f"cannot check the audit index: {_name(exc)}") from exc
    finally:
        proxy.close()
    return None if value is None else int(value)

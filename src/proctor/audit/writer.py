"""The audit log: one writer at a time, group commit, the chain head in memory.

Callers hand events to :meth:`AuditLog.record`, which returns only once the
event's transaction has committed (durable: SQLite WAL with
``synchronous=FULL``, PostgreSQL with ``synchronous_commit`` on). Behind it,
one writer at a time takes whatever is queued (up to ``max_batch`` events),
chains it onto the head it keeps in memory and writes it in one transaction.
While one batch commits the next one gathers, so throughput grows with
concurrency.

The writer is whoever holds the *lead*: a caller that finds nobody writing
writes the queue itself, its own event included, on its own thread (no hand-off
to another thread and back: a lone decision pays for no thread switch); a caller
that finds a write under way waits for it. A leader stops once its own event is
written; if more is queued by then, the writer thread takes over (asynchronous
callers and :meth:`AuditLog.submit` always leave their events to it, except on an
event loop allowed to lead: below). Every event queued is written by a leader that
took the lead after it was queued, or by the one holding it then, which looks at
the queue again after letting go.

An event loop may lead too (:meth:`AuditLog.lead_on`; the stdio wrapper's and the HTTP
gateway's, on SQLite): an asynchronous caller on it queues its event, lets the loop turn
once (its other callers ready to run queue theirs), and if its event is then the only
one queued and nobody in this process is writing, writes it on the loop's thread, its
future answered there (no hand-off to the writer thread and back: two thread wake-ups,
some 0.1-0.2 ms on a busy 2-core machine). Several events queued go to the writer
thread as one batch: its commit overlaps the loop's next work, and one hand-off serves
them all. The loop's write never waits for anyone else: not for SQLite's write lock
(``busy_timeout`` 0 for it, :class:`~proctor.audit.driver.LockTaken`), nor to read the
head, take a checkpoint's signer or retry; where it would have to (another connection
or process holds the lock, the head is not known or moved, a checkpoint may fall in
the batch, the write failed), it writes nothing and gives the batch, in its order, to
the writer thread, which writes it as any other (the loop answered through
``call_soon_threadsafe``). The loop still waits for its own event's commit (the
fsync), whatever else it serves waiting with it: a lone call waits for that commit
anyway. A caller that finds a write under way leaves its event to it, as any other,
and is answered through its loop.

:meth:`AuditLog.record_with` adds a decision's *effects* (:class:`Effects`: a
grant's use, a proof's nonce, a task's activity) to the same transaction as its
event: one write per decision, one commit per batch (a decision of several events gives
the others as ``more``: written with its event, in its transaction, or not at all).
An effect that finds the decision must not stand (the grant was revoked meanwhile,
the nonce was used) changes nothing and names the event to write instead, a refusal.

On a write error every caller of that batch gets :class:`AuditUnavailableError`
and the head is read again from the database before the next batch, so the
chain never forks. When another process appended meanwhile (the head row's
compare-and-set fails), the batch is re-chained onto the new head and retried.

:meth:`AuditLog.submit` is the asynchronous mode: it returns a
:class:`Receipt` without waiting. Until that receipt is done its event can be
lost in a crash; at most ``max_pending`` events are ever in that state (the
documented loss window). Nothing in proctor uses it by default.

An :class:`~proctor.audit.attribution.Attribution` (the CLI gives one for its
operator) is applied to every event before it is chained, and learns which of
its actor's events :meth:`AuditLog.record` could not write.

A :class:`BatchObserver` (:meth:`AuditLog.observe`; the risk engine's, in a
runtime) sees every batch's chained events inside the batch's transaction and
may write with it: what it derives from the events commits with them, and the
callers are answered only after both.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import operator
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Protocol

from proctor.audit.attribution import Attribution
from proctor.audit.chain import ChainHead
from proctor.audit.checkpoint_chain import (
    DEFAULT_EVERY,
    continue_from,
    insert_checkpoint,
    verifiers_of,
)
from proctor.audit.checkpoints import Checkpoint, sign_checkpoint
from proctor.audit.deadlines import Deadlines
from proctor.audit.driver import (
    AppendConnection,
    EventRow,
    LockTaken,
    WriteCursor,
    is_integrity_error,
)
from proctor.audit.events import Actor, ActorType, AuditEvent
from proctor.clock import Clock, SystemClock
from proctor.errors import AuditUnavailableError
from proctor.keys import Signer, SignerSource, Verifier
from proctor.store import Store, blocking

__all__ = ["WITHDRAWN", "AuditLog", "BatchObserver", "ChainedRows", "Effects", "Receipt",
           "RecordedEvent", "WriteCursor"]

log = logging.getLogger(__name__)

_Signing = tuple[Signer, "dict[str, Verifier]"]
"""A checkpoint's signer and the keys the log's last checkpoint may be signed by."""

_MAX_RETRIES = 100


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """Where a durable event sits in the chain."""

    seq: int
    hash: str
    event_id: str


# what an effects' apply returns to write no event at all: the decision it came with
# is withdrawn (its caller decides once more, and that decision's event is the record)
WITHDRAWN = AuditEvent(id="withdrawn", time=datetime(1970, 1, 1, tzinfo=UTC),
                       actor=Actor(ActorType.SYSTEM, "proctor"), action="withdrawn",
                       target="", outcome="withdrawn")


class Effects(Protocol):
    """What a decision changes besides its event, applied in the writer's transaction.

    A class of effects may also have ``apply_all(tx, effects)``, a classmethod that
    applies a batch's effects of that class at once (a statement for all of them rather
    than one each) and returns what :meth:`apply` would have for each, in order.
    """

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        """Apply the changes; None keeps the decision's event. A check that fails
        changes nothing and returns the event to write instead (its refusal), or
        :data:`WITHDRAWN` to write none.

        Called again from the start if the batch is retried; raising fails the
        whole batch. Runs on the writing thread (the writer thread, or a caller that
        took the lead): it must not wait for the audit log, nor use any connection
        but ``tx``.
        """


class BatchObserver(Protocol):
    """Sees each batch's events in the batch's own transaction (one observer per log)."""

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        """``rows`` are about to be appended after ``head`` (the head as locked in this
        transaction); write what follows from them with ``tx``. The writer gives them as
        :class:`ChainedRows`: each with the event its body was written from. Called again
        from the start if the batch is retried; raising fails the whole batch. Runs with
        the log's writing held (one batch at a time): it must not wait for the audit log."""

    def appended(self, head: ChainHead) -> None:
        """The batch last seen by :meth:`appending` committed; ``head`` is the new head."""


class ChainedRows(list[EventRow]):
    """A batch's rows as the writer shows them to its observer, and ``events``: for
    each row, the event its body was written from (the values the body holds, with no
    need to parse it again)."""

    __slots__ = ("events",)

    def __init__(self, rows: Sequence[EventRow], events: Sequence[AuditEvent]) -> None:
        super().__init__(rows)
        self.events = events


# a NUL's JSON escape in a body; the text `\\u0000` also holds it, and stays as it is
_NUL_ESCAPE = b"\\u0000"

# an event's row before it is chained, then the time as its body holds it and the
# event as written (the body's values, for the observer)
_Row = tuple[str, datetime, str, str, str, str, str | None, bytes, str, AuditEvent]


def _row_of(event: AuditEvent) -> _Row:
    body, time = event.canonical_body_and_time()
    if _NUL_ESCAPE in body:  # a NUL (or its six characters): record it as text
        event = event.recordable()
        body, time = event.canonical_body_and_time()
    decision = event.decision.outcome if event.decision is not None else None
    return (event.id, event.time, event.actor.type.value, event.actor.id, event.task,
            event.action, decision, body, time, event)


# a row's time as its body holds it, and its event
_time_of, _event_of = operator.itemgetter(8), operator.itemgetter(9)


def _apply_effects(tx: WriteCursor, batch: Sequence[Receipt]) -> list[AuditEvent | None]:
    """The effects of ``batch``, applied: for each receipt, None or the event to write
    instead of its own; effects of a class with ``apply_all`` go together."""
    instead: list[AuditEvent | None] = [None] * len(batch)
    together: dict[Any, list[int]] = {}
    for at, receipt in enumerate(batch):
        effects = receipt.effects
        if effects is None:
            continue
        apply_all = getattr(type(effects), "apply_all", None)
        if apply_all is None:
            instead[at] = effects.apply(tx)
        else:
            together.setdefault(apply_all, []).append(at)
    for apply_all, places in together.items():
        found = apply_all(tx, [batch[at].effects for at in places])
        for at, event in zip(places, found, strict=True):
            instead[at] = event
    return instead


class Receipt:
    """A queued event; :meth:`wait` blocks until it is durable (or failed)."""

    __slots__ = ("_done", "_future", "_taking", "effects", "error", "event", "is_done", "more",
                 "result", "row", "taken", "withdrawn")

    def __init__(self, event: AuditEvent | None, effects: Effects | None = None,
                 future: asyncio.Future[RecordedEvent | None] | None = None,
                 more: Sequence[AuditEvent] = (), taking: threading.Lock | None = None
                 ) -> None:
        self.event = event
        self.effects = effects
        self.row = _row_of(event) if event is not None else None
        # written right after ``event`` in its transaction, and only with it (effects
        # that name another event, or none, write none of these)
        self.more = tuple(map(_row_of, more))
        self.result: RecordedEvent | None = None
        self.error: AuditUnavailableError | None = None
        self._future = future
        self.is_done = False
        # taken into a batch (under its log's ``taking`` lock); withdrawn by a caller
        # whose wait ran out while it was still queued: no batch writes it then
        self.taken = False
        self.withdrawn = False
        self._taking = taking
        # an asynchronous caller waits on its future: no lock for it
        self._done: threading.Lock | None = None
        if future is None:
            self._done = threading.Lock()
            self._done.acquire()

    def withdraw(self) -> bool:
        """Withdraw the receipt if no batch has taken it (atomically with the taking of
        a batch); whether it was."""
        taking = self._taking
        if taking is None:
            return False
        with taking:
            if self.taken or self.is_done:
                return False
            self.withdrawn = True
            return True

    def _finish(self) -> None:
        self.is_done = True
        if self._done is not None:
            self._done.release()

    def wait(self, timeout: float) -> RecordedEvent:
        """The event's place in the chain, once durable; raises if it is not."""
        self.settled(timeout)
        assert self.result is not None
        return self.result

    def settled(self, timeout: float) -> RecordedEvent | None:
        """Wait until the receipt's transaction committed; the place of its event in the
        chain (None: the receipt carried effects and no event). Raises if it failed.

        Past ``timeout`` a receipt still queued is withdrawn (no batch will write it:
        neither its event nor its effects) and :class:`AuditUnavailableError` raised; one
        a batch has taken already is waited for to the batch's end, and its outcome given
        (written or failed), so that an error always means nothing of it was written."""
        done = self._done
        if done is None:
            raise AuditUnavailableError("an asynchronous caller's receipt is awaited, not waited")
        if not done.acquire(timeout=timeout):
            if self.withdraw():
                raise AuditUnavailableError(f"audit write did not complete within {timeout:g} s"
                                            "; withdrawn, nothing of it written")
            log.warning("an audit write past its %g s limit is in a batch being written; "
                        "waiting for the batch's outcome", timeout)
            done.acquire()
        done.release()
        if self.error is not None:
            raise self.error
        return self.result


def _most(batch: Sequence[Receipt]) -> int:
    """The events ``batch`` writes at most: each receipt's and its ``more``."""
    return len(batch) + sum(map(len, map(_more_of, batch)))


_more_of = operator.attrgetter("more")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(receipts: Sequence[Receipt]) -> None:
    for receipt in receipts:
        future = receipt._future
        if future is None or future.done():
            continue
        if receipt.error is not None:
            future.set_exception(receipt.error)
        else:  # None: effects that wrote no event
            future.set_result(receipt.result)


class AuditLog:
    """The append side of the audit chain for one process.

    ``timeout`` bounds every wait for durability (seconds); past it the call
    fails with :class:`AuditUnavailableError`. A batch waits at most ``busy_timeout_ms``
    for a lock another connection holds (SQLite's write lock, a PostgreSQL row), then
    fails, nothing of it written; by default half of ``timeout``, and no longer than
    the store's lock timeout, so that the callers queued behind it are still waiting
    when it fails. On PostgreSQL each of its statements, and its transaction left
    idle, are bounded by ``timeout`` (at least the store's lock timeout; see
    :mod:`proctor.audit.driver`). ``fail_open=True`` is the
    operator's explicit choice to let decisions stand when they cannot be
    audited; the default fails closed.

    ``signer`` signs a checkpoint at every multiple of ``checkpoint_every``, in the
    transaction of the event there: the issuer keyring in a deployment (one signer taken
    per checkpoint), any :class:`~proctor.keys.LocalSigner` in tests; None signs nothing.
    A key that cannot be had fails that batch like a write error. Each checkpoint is
    chained after the log's last one, read in that transaction and checked first
    (:func:`~proctor.audit.checkpoint_chain.continue_from`); where it does not hold
    (checkpoints deleted, the chain rewritten under them) nothing is signed over the
    chain: the events are written, :attr:`integrity_problem` says why (an error in the
    log too), and verification reports the missing checkpoint.

    ``attribution`` adds to its actor's events what only the caller knows (see
    :mod:`proctor.audit.attribution`).
    """

    def __init__(self, store: Store, *, signer: SignerSource | None = None,
                 clock: Clock | None = None, max_batch: int = 512,
                 max_pending: int = 100_000, checkpoint_every: int = DEFAULT_EVERY,
                 timeout: float = 10.0, busy_timeout_ms: int | None = None,
                 fail_open: bool = False, attribution: Attribution | None = None) -> None:
        self.store = store
        self.attribution = attribution
        self.signer = signer
        self.clock = clock or SystemClock()
        self.fail_open = fail_open
        self.timeout = timeout
        self._max_batch = max_batch
        self._checkpoint_every = checkpoint_every
        self._queue: queue.SimpleQueue[Receipt] = queue.SimpleQueue()
        # batches a leading loop gave up (see the module docstring): written first, in order
        self._handed: collections.deque[Receipt] = collections.deque()
        # held while receipts are taken into a batch, or one withdrawn (Receipt.settled,
        # or an asynchronous caller's deadline: proctor.audit.deadlines)
        self._taking = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_pending)
        if busy_timeout_ms is None:  # half the time its callers wait, at most the store's
            busy_timeout_ms = round(1000 * min(store.lock_timeout_seconds, timeout / 2))
        # PostgreSQL: no statement of a batch, nor the batch left idle in its transaction,
        # outlasts the callers' wait (nor the store's lock timeout, for a short one)
        bound_ms = round(1000 * max(timeout, store.lock_timeout_seconds))
        self._conn = AppendConnection(store, busy_timeout_ms=max(1, busy_timeout_ms),
                                      timeout_ms=max(1, bound_ms))
        self._head: ChainHead | None = None
        self._observer: BatchObserver | None = None
        self._closed = False
        self._lead = threading.Lock()  # held by whoever writes (see the module docstring)
        self._leading_loop: asyncio.AbstractEventLoop | None = None  # see lead_on
        # the asynchronous callers' time limits, per event loop, while any is waiting
        self._deadlines: dict[asyncio.AbstractEventLoop, Deadlines] = {}
        self._wake = threading.Event()  # the writer thread has something to write
        # why the last checkpoint due was not signed (audit_integrity_failed); None once
        # one is signed again
        self.integrity_problem: str | None = None
        self.batches = 0  # statistics: transactions committed and events in them
        self.events_written = 0
        self._thread = threading.Thread(target=self._run, name="proctor-audit-writer",
                                        daemon=True)
        self._thread.start()

    def observe(self, observer: BatchObserver) -> None:
        """Show every batch to ``observer`` from the next one on (see the module
        docstring); it replaces any observer given before."""
        self._observer = observer

    def lead_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Let the asynchronous callers on ``loop`` write their batch on it when nobody
        else is writing, never waiting for another's lock (see the module docstring);
        None stops it. SQLite only: a PostgreSQL write may wait on a row lock (a
        revocation's) with no try-only form, which only a loop left free can bear. On
        PostgreSQL this does nothing.
        """
        self._leading_loop = loop if self.store.backend == "sqlite" else None

    def record(self, event: AuditEvent, *, timeout: float | None = None) -> RecordedEvent:
        """Append ``event`` and return once it is durable."""
        blocking.check()  # the caller's thread waits for the commit
        event = self._attributed(event)
        try:
            receipt = self._enqueue(event, timeout)
            self._lead_or_wait(receipt)
            return receipt.wait(self.timeout if timeout is None else timeout)
        except AuditUnavailableError:
            if self.attribution is not None:
                self.attribution.note_failed(event)
            raise

    def record_with(self, event: AuditEvent | None, effects: Effects, *,
                    timeout: float | None = None,
                    more: Sequence[AuditEvent] = ()) -> RecordedEvent | None:
        """Write ``event`` and apply ``effects`` in one transaction, shared with whatever
        else is queued; return once it has committed (None if ``event`` is None and the
        effects named no event to write). What the effects found is theirs to tell.
        ``more`` (with an ``event``): events written after it in the same transaction
        if the effects keep it (None), else none of them.

        Raises :class:`AuditUnavailableError` if the transaction failed: then neither
        the event nor the effects were written.
        """
        blocking.check()  # the caller's thread waits for the commit, or writes it
        if event is not None:
            event = self._attributed(event)
        more = [self._attributed(e) for e in more]
        try:
            receipt = self._enqueue(event, timeout, effects, more)
            self._lead_or_wait(receipt)
            return receipt.settled(self.timeout if timeout is None else timeout)
        except AuditUnavailableError:
            if self.attribution is not None and event is not None:
                for failed in (event, *more):
                    self.attribution.note_failed(failed)
            raise

    async def record_with_async(self, event: AuditEvent | None, effects: Effects, *,
                                timeout: float | None = None) -> RecordedEvent | None:
        """:meth:`record_with` for asyncio code: the writer thread writes the batch and
        answers an asyncio future on the caller's loop (``call_soon_threadsafe``); the
        loop never waits for the commit. Same answer, same errors: past ``timeout`` a
        write still queued is withdrawn (neither event nor effects ever written) and
        :class:`AuditUnavailableError` raised; one a batch has taken gets the batch's
        outcome (:mod:`proctor.audit.deadlines`).

        Queued before the first ``await``: a caller cancelled while it waits leaves a
        write that still commits (or fails) as if it had waited (``effects`` included);
        only the answer is lost. Shield the wait to keep it.
        """
        if event is not None:
            event = self._attributed(event)
        try:
            return await self._record_async(event, timeout, effects)
        except AuditUnavailableError:
            if self.attribution is not None and event is not None:
                self.attribution.note_failed(event)
            raise

    async def record_async(self, event: AuditEvent, *, timeout: float | None = None
                           ) -> RecordedEvent:
        """:meth:`record` for asyncio code: awaits durability without blocking the loop."""
        event = self._attributed(event)
        try:
            recorded = await self._record_async(event, timeout)
        except AuditUnavailableError:
            if self.attribution is not None:
                self.attribution.note_failed(event)
            raise
        assert recorded is not None  # an event with no effects is always written
        return recorded

    async def _record_async(self, event: AuditEvent | None, timeout: float | None,
                            effects: Effects | None = None) -> RecordedEvent | None:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise AuditUnavailableError("the audit log is closed")
        future: asyncio.Future[RecordedEvent | None] = loop.create_future()
        receipt = Receipt(event, effects, future=future, taking=self._taking)
        if not self._slots.acquire(blocking=False):
            raise AuditUnavailableError("the audit writer is saturated")
        if loop is self._leading_loop:
            self._queue.put(receipt)
            try:
                # one turn of the loop: its other callers ready to run queue theirs, and
                # the first to take the lead writes them all in one batch
                await asyncio.sleep(0)
            except BaseException:  # cancelled: the write still commits, by the writer
                self._wakeup()
                raise
            if self._lead.acquire(blocking=False):
                # nobody writing: this loop writes a batch of the queue if it can without
                # waiting (nothing, if a batch took its event meanwhile), its futures
                # answered here; what it cannot write goes to the writer thread
                try:
                    self._write_on_loop(receipt)
                finally:
                    self._lead.release()
                if self._has_work():  # queued meanwhile, or given up: the writer thread's
                    self._wakeup()
                if receipt.is_done:
                    return await future  # answered on this thread: no turn of the loop
            # a write under way takes it (or the writer thread after it)
            self._wakeup()
        else:
            self._queue.put(receipt)
            self._wakeup()  # never written on the event loop's thread
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            deadlines = self._deadlines[loop] = Deadlines(loop)
        deadlines.add(future, self.timeout if timeout is None else timeout, receipt)
        return await future

    def submit(self, event: AuditEvent, *, timeout: float | None = None,
               effects: Effects | None = None) -> Receipt:
        """Queue ``event`` (with ``effects``, as :meth:`record_with`) without waiting for
        it to be durable (the asynchronous mode)."""
        receipt = self._enqueue(self._attributed(event), timeout, effects)
        self._wakeup()
        return receipt

    def _wakeup(self) -> None:
        # Set only when clear: the writer thread clears the event before it looks at the
        # queue, so an event found set means a look at the queue is still to come.
        if not self._wake.is_set():
            self._wake.set()

    def _attributed(self, event: AuditEvent) -> AuditEvent:
        return event if self.attribution is None else self.attribution.apply(event)

    def _enqueue(self, event: AuditEvent | None, timeout: float | None,
                 effects: Effects | None = None, more: Sequence[AuditEvent] = ()) -> Receipt:
        if self._closed:
            raise AuditUnavailableError("the audit log is closed")
        receipt = Receipt(event, effects, more=more, taking=self._taking)
        if not self._slots.acquire(timeout=self.timeout if timeout is None else timeout):
            raise AuditUnavailableError("the audit writer is saturated")
        self._queue.put(receipt)
        return receipt

    def close(self, *, timeout: float = 30.0) -> None:
        """Write what is queued, stop the writer and release its connection."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        # Anything queued after the writer's last look, or given up by a loop, was never
        # written: say so now rather than letting its caller wait out its timeout.
        with self._lead:
            closed = AuditUnavailableError("the audit log is closed")
            left: list[Receipt] = []
            while self._handed:
                item = self._handed.popleft()
                item.error = closed
                left.append(item)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                item.error = closed
                left.append(item)
            self._complete(left)
            self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _lead_or_wait(self, receipt: Receipt) -> None:
        """Write the queue on this thread, until ``receipt`` is written, if nobody is
        writing; otherwise the writer under way (or the writer thread after it) will."""
        if not self._lead.acquire(blocking=False):
            return
        try:
            self._drain(until=receipt)
        finally:
            self._lead.release()
        if self._has_work():  # queued meanwhile: the writer thread takes over
            self._wakeup()

    def _has_work(self) -> bool:
        return bool(self._handed) or not self._queue.empty()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lead:
                    self._drain(until=None)
                # queued while the lead was held, by callers that found it taken
                if not self._has_work():
                    break
            if self._closed:
                return

    def _drain(self, until: Receipt | None) -> None:
        """Write the queue batch by batch (the lead held): until ``until`` is written,
        or (None) until nothing is left."""
        while until is None or not until.is_done:
            batch = self._next_batch()
            if not batch:
                return
            self._write(batch)

    def _next_batch(self) -> list[Receipt]:
        """Up to ``max_batch`` receipts: what a loop gave up first, then the queue's;
        those withdrawn (:meth:`Receipt.withdraw`) are dropped, the others marked taken."""
        handed = self._handed
        batch: list[Receipt] = []
        withdrawn = 0
        with self._taking:
            while handed and len(batch) < self._max_batch:
                receipt = handed.popleft()
                if receipt.withdrawn:
                    withdrawn += 1
                    continue
                receipt.taken = True
                batch.append(receipt)
            while len(batch) < self._max_batch:
                try:
                    receipt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if receipt.withdrawn:
                    withdrawn += 1
                    continue
                receipt.taken = True
                batch.append(receipt)
        if withdrawn:
            self._slots.release(withdrawn)
        return batch

    def _write_on_loop(self, receipt: Receipt) -> None:
        """Write ``receipt`` alone on the leading loop's thread (the lead held), unless
        it is written already or others wait with it, if that needs no wait for anyone
        else; else give it to the writer thread (see the module docstring)."""
        if receipt.is_done:  # a batch took it: what was queued since is not its caller's
            return
        if self._handed or self._queue.qsize() > 1:
            # several callers: the writer thread's commit overlaps the loop's next work,
            # and one hand-off serves them all
            return
        batch = self._next_batch()
        if not batch:
            return
        try:
            written = self._append_once(batch)
        except Exception:  # the writer thread writes it, or fails it, as any other
            log.debug("a batch led on the event loop failed; the writer thread retries it",
                      exc_info=True)
            written = False
        if written:
            self._complete(batch)
        else:
            with self._taking:  # queued again: a caller whose wait runs out may withdraw
                for receipt in batch:
                    receipt.taken = False
                self._handed.extendleft(reversed(batch))

    def _append_once(self, batch: Sequence[Receipt]) -> bool:
        """Write ``batch`` in one attempt that waits for nobody (see the module
        docstring); False, nothing written, where it would have to wait or retry."""
        head = self._head
        most = _most(batch)
        if head is None or self._may_checkpoint(head, most):
            return False
        try:
            if self._attempt(batch, None, most, wait=False):
                return True
        except LockTaken:
            return False
        self._head = None  # it moved (another process appended): the writer thread reads it
        return False

    def _write(self, batch: Sequence[Receipt]) -> None:
        try:
            self._append(batch)
        except Exception as exc:  # never leave a caller waiting on a dead batch
            log.exception("audit writer failed")
            self._fail(batch, AuditUnavailableError(f"audit writer failed: {type(exc).__name__}"))
        finally:
            self._complete(batch)

    def _append(self, batch: Sequence[Receipt]) -> None:
        """Write ``batch``, setting each receipt's result or error."""
        most = _most(batch)
        try:
            for _attempt in range(_MAX_RETRIES):
                if self._head is None:
                    self._head = self._conn.read_head()
                # taken before the transaction, where a keyring may read the store
                # for it; the head read in the transaction may be further on
                signer = self._signer_for(self._head, most)
                if self._attempt(batch, signer, most):
                    return
                self._head = None  # the head moved: read it again
            raise AuditUnavailableError("the audit head kept moving; giving up")
        except AuditUnavailableError as exc:
            if len(batch) > 1 and is_integrity_error(exc.__cause__):
                # One event the database refuses (say, a reused event id) must not
                # take its batch-mates down with it: halve until it stands alone.
                self._head = None
                middle = len(batch) // 2
                self._append(batch[:middle])
                self._append(batch[middle:])
                return
            self._fail(batch, exc)

    def _attempt(self, batch: Sequence[Receipt], signer: _Signing | None, most: int, *,
                 wait: bool = True) -> bool:
        """One transaction of ``batch`` after the head in memory (not None); False if it
        wrote nothing (a checkpoint may fall in it and ``signer`` is None, or the head
        moved). Raises as :meth:`AppendConnection.append`."""
        assert self._head is not None
        written: list[tuple[Receipt | None, EventRow]] = []
        observer = self._observer

        def build(tx: WriteCursor, head: ChainHead,
                  ) -> tuple[list[EventRow], Checkpoint | None, list[str]] | None:
            written.clear()
            if signer is None and self._may_checkpoint(head, most):
                return None  # a checkpoint may fall in it: take a signer first
            rows: list[_Row] = []
            owners: list[Receipt | None] = []  # each row's receipt (None: one of ``more``)
            for receipt, instead in zip(batch, _apply_effects(tx, batch), strict=True):
                row = receipt.row
                if instead is WITHDRAWN:
                    continue
                if instead is not None:
                    row = _row_of(self._attributed(instead))
                if row is not None:
                    rows.append(row)
                    owners.append(receipt)
                if instead is None and receipt.more:  # its event stands: and the ones with it
                    rows.extend(receipt.more)
                    owners.extend([None] * len(receipt.more))
            chained = self._chain(head, rows)
            if signer is not None and chained:
                self._sign(tx, head, chained, signer)
            if observer is not None and chained:
                observer.appending(tx, head, ChainedRows(chained, list(map(_event_of, rows))))
            written.extend(zip(owners, chained, strict=True))
            return chained, None, list(map(_time_of, rows))

        new_head = self._conn.append(self._head, build, wait=wait)
        if new_head is None:
            return False
        self._head = new_head
        self.batches += 1
        self.events_written += len(written)
        for receipt, row in written:
            if receipt is not None:  # None: one of ``more``
                receipt.result = RecordedEvent(row.seq, row.hash, row.event_id)
        if observer is not None and written:
            observer.appended(new_head)
        return True

    def _may_checkpoint(self, head: ChainHead, most: int) -> bool:
        """Whether appending up to ``most`` events after ``head`` may cross a checkpoint."""
        every = self._checkpoint_every
        return (self.signer is not None and every > 0
                and (head.seq + most) // every > head.seq // every)

    def _signer_for(self, head: ChainHead, most: int) -> _Signing | None:
        """The checkpoint signer and the keys its last checkpoint may be signed by, if
        appending up to ``most`` events may cross a checkpoint."""
        if self.signer is None or not self._may_checkpoint(head, most):
            return None
        return self.signer.current_signer(), verifiers_of(self.signer)

    def _sign(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow],
              signing: _Signing) -> None:
        """Sign a checkpoint at each multiple of ``checkpoint_every`` among ``rows`` (the
        batch chained after ``head``), each after the one before, the first after the
        log's last checkpoint if that holds (else none: see the class docstring)."""
        every = self._checkpoint_every
        due = (head.seq // every + 1) * every if every > 0 else 0
        if not every or due > rows[-1].seq:
            return
        signer, verifiers = signing
        prev, wrong = continue_from(tx.rows, verifiers, at=due, every=every)
        if wrong is not None:
            if wrong != self.integrity_problem:
                log.error("audit_integrity_failed: no checkpoint signed at position %d: %s",
                          due, wrong)
            self.integrity_problem = wrong
            return
        now = self.clock.now()
        while due <= rows[-1].seq:
            row = rows[due - head.seq - 1]
            prev = sign_checkpoint(signer, ChainHead(due, row.hash), now, prev=prev,
                                   every=every)
            insert_checkpoint(tx.execute, prev, tx.time(now))
            due += every
        self.integrity_problem = None

    def _complete(self, batch: Sequence[Receipt]) -> None:
        """Wake every caller of ``batch``: threads directly, event loops once each."""
        waiting: dict[asyncio.AbstractEventLoop, list[Receipt]] = {}
        for receipt in batch:
            receipt._finish()
            if receipt._future is not None:
                waiting.setdefault(receipt._future.get_loop(), []).append(receipt)
        if batch:
            self._slots.release(len(batch))
        for loop, receipts in waiting.items():
            if loop is self._leading_loop and _running_loop() is loop:  # led on it
                self._settle(loop, receipts)
                continue
            try:
                loop.call_soon_threadsafe(self._settle, loop, receipts)
            except RuntimeError:  # a closed loop has nobody waiting any more
                self._deadlines.pop(loop, None)

    def _settle(self, loop: asyncio.AbstractEventLoop, receipts: Sequence[Receipt]) -> None:
        """Answer the asynchronous callers of ``receipts`` (on their loop's thread)."""
        _settle(receipts)
        deadlines = self._deadlines.get(loop)
        if deadlines is not None and not deadlines.prune():
            del self._deadlines[loop]  # nobody waits on this loop any more

    def _fail(self, batch: Sequence[Receipt], error: AuditUnavailableError) -> None:
        log.warning("audit write of %d events failed: %s", len(batch), error.message)
        self._head = None
        for receipt in batch:
            receipt.error = error

    def _chain(self, head: ChainHead, batch: Sequence[_Row]) -> list[EventRow]:
        seq, prev = head
        rows = []
        # chain_hash, with the previous hash kept as bytes from one link to the next;
        # rows made with tuple.__new__ (EventRow's own __new__ is Python: a third of the
        # cost of a row)
        link = bytes.fromhex(prev)
        for event_id, time, actor_type, actor_id, task, action, decision, body, _, _ in batch:
            seq += 1
            link = sha256(link + body).digest()
            digest = link.hex()
            rows.append(tuple.__new__(EventRow, (
                seq, event_id, time, actor_type, actor_id, task, action, decision,
                body.decode("utf-8"), prev, digest)))
            prev = digest
        return rows

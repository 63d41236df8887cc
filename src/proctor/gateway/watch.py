"""Revocation reaches live sessions.

Three ways a session hears that its grant (or anything above it, its own node,
or one of its secret leases) was revoked, fastest first:

- in this process, :meth:`LeaseTree.subscribe` calls back at once;
- on PostgreSQL, :class:`RevocationSubscription` hears every node's ``NOTIFY``;
- in every case, the store is read every ``revocation_poll_seconds``, so a
  revocation by another process on SQLite, or a missed notification, still
  closes the session within one poll. Expired grants close the same way.

Callbacks come from other threads; they only record ids and wake the watch's own
task, which closes the sessions on the event loop. Between wake-ups the task sleeps
until the next poll, looking at the clock at least every
:data:`_CLOCK_CHECK_SECONDS` (a clock moved by hand, in tests, is seen then): an
idle gateway's event loop is not woken 50 times a second.

With ``idle_seconds`` (the HTTP gateway), a session that no request has held
for that long (by the clock's monotonic reading) is closed too, stopping its
upstreams; the grant's next request opens a new one. A held session is never
closed as idle: see :meth:`GatewaySession.hold`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import anyio
from anyio.abc import TaskStatus

from proctor.clock import Clock
from proctor.errors import StoreError
from proctor.gateway.session import GatewaySession
from proctor.grants import LeaseTree, RevocationSubscription
from proctor.store import Store

__all__ = ["RevocationWatch"]

log = logging.getLogger(__name__)

_CLOCK_CHECK_SECONDS = 0.25
_LEAST_WAIT_SECONDS = 0.02  # a poll due already: a pause all the same, never a spin


class RevocationWatch:
    """Closes the sessions of ``sessions`` whose lease nodes are revoked or expired."""

    def __init__(self, sessions: dict[str, GatewaySession], *, leases: LeaseTree, clock: Clock,
                 poll_seconds: float, store: Store | None = None,
                 on_close: Callable[[GatewaySession], None] | None = None,
                 idle_seconds: float | None = None) -> None:
        self._sessions = sessions
        self._leases = leases
        self._clock = clock
        self._poll = poll_seconds
        self._store = store
        self._on_close = on_close
        self._idle = idle_seconds
        self._heard: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def heard(self, ids: Sequence[str], reason: str) -> None:
        """A revocation listener: safe to call from any thread."""
        with self._lock:
            for node_id in ids:
                self._heard[node_id] = reason or "revoked"
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                loop.call_soon_threadsafe(wake.set)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._leases.subscribe(self.heard)
        subscription = None
        if self._store is not None and self._store.backend == "postgresql":
            try:
                subscription = RevocationSubscription(self._store, self.heard)
            except StoreError as exc:
                log.error("%s; sessions are closed by polling only", exc.message)
        wake = asyncio.Event()
        with self._lock:
            self._loop, self._wake = asyncio.get_running_loop(), wake
        task_status.started()
        try:
            next_poll = self._clock.monotonic()
            while True:
                wake.clear()  # before reading what was heard: a later callback sets it again
                self._close_heard()
                if self._clock.monotonic() >= next_poll:
                    await self._poll_store()
                    next_poll = self._clock.monotonic() + self._poll
                wait = min(_CLOCK_CHECK_SECONDS, next_poll - self._clock.monotonic())
                with anyio.move_on_after(max(wait, _LEAST_WAIT_SECONDS)):
                    await wake.wait()
        finally:
            with self._lock:
                self._loop = self._wake = None
            if subscription is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(subscription.close)

    def _close_heard(self) -> None:
        with self._lock:
            heard, self._heard = self._heard, {}
        if not heard:
            return
        for session in list(self._sessions.values()):
            hit = next((heard[i] for i in session.revocable_ids if i in heard), None)
            if hit is not None:
                self._close(session, f"grant revoked ({hit})")

    async def _poll_store(self) -> None:
        sessions = [s for s in self._sessions.values() if not s.closed.is_set()]
        now = self._clock.now()
        quiet_since = self._clock.monotonic() - (self._idle or 0)
        for session in sessions:
            if session.expires_at <= now:
                self._close(session, "grant expired")
            elif self._idle and not session.is_busy and session.last_used < quiet_since:
                self._close(session, "idle")
        ids = sorted({i for s in sessions if not s.closed.is_set() for i in s.revocable_ids})
        if not ids:
            return
        try:
            gone = set(await anyio.to_thread.run_sync(self._leases.revoked_now, ids))
        except Exception as exc:  # the store is down: checks deny; sessions stay until it is back
            log.error("revocation poll failed: %s", type(exc).__name__)
            return
        for session in sessions:
            if any(i in gone for i in session.revocable_ids):
                self._close(session, "grant revoked")

    def _close(self, session: GatewaySession, reason: str) -> None:
        if session.closed.is_set():
            return
        session.close(reason)
        if self._on_close is not None:
            self._on_close(session)

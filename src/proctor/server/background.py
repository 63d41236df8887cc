"""The work a server process does besides answering requests.

- **Sweep** (every ``sweep_seconds``): expired leases are marked revoked,
  proof nonces past their window forgotten (:meth:`GrantAuthority.sweep`),
  old rows of the change feed pruned (:func:`~proctor.store.changes.prune_changes`)
  and archived audit events an archive left undeleted (a process stopped between two
  chunks) deleted (:func:`~proctor.audit.retention.delete_archived`).
  Every process sweeps; a sweep is idempotent.
- **Sync** (every ``sync_seconds``): what other processes changed in the
  store reaches this one: the active policy revision, agents (registrations,
  trust states, risk scores: from the change feed, each changed agent alone;
  risk scores folded from the audit stream here first)
  and the shadowed revision; this process's shadow differences go to the store.
- **Revocations** (PostgreSQL): a :class:`RevocationSubscription` hears every
  revocation made by any node and tells the listeners registered on the
  server state (for live views and sessions). Checks never rely on it: they
  read the store every time.

- **Approval webhook** (when the home has ``webhook.toml``): its delivery runs on a
  thread of every serving process; one at a time delivers (``Runtime.deliver_webhooks``).

Each step runs in a worker thread; a failing step is logged and tried again
at the next interval, never stopping the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import anyio

from proctor import telemetry
from proctor.audit.checkpoint_chain import verifiers_of
from proctor.audit.retention import delete_archived
from proctor.errors import ProctorError
from proctor.grants import RevocationSubscription, Swept
from proctor.server.state import ServerState
from proctor.store.changes import prune_changes

__all__ = ["Background"]

log = logging.getLogger(__name__)


class Background:
    """Starts and stops one process's background work."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: RevocationSubscription | None = None

    async def start(self) -> None:
        config = self._state.config
        # Every blocking handler runs on these threads; the store bounds their
        # database connections on its own (``database_pool_size``).
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.threads
        self._tasks = [
            asyncio.create_task(self._every(config.sweep_seconds, self.sweep_once, "sweep")),
            asyncio.create_task(self._every(config.sync_seconds, self.sync_once, "sync")),
        ]
        runtime = self._state.runtime
        try:
            await anyio.to_thread.run_sync(runtime.deliver_webhooks)
        except ProctorError as exc:
            log.error("the approval webhook is not delivered from this process: %s",
                      exc.message)
        if runtime.store.backend == "postgresql":
            try:
                self._subscription = await anyio.to_thread.run_sync(
                    RevocationSubscription, runtime.store, self.heard)
            except ProctorError as exc:
                log.error("not listening for revocations (%s); checks still read the store",
                          exc.message)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._subscription is not None:
            await anyio.to_thread.run_sync(self._subscription.close)
            self._subscription = None

    async def _every(self, seconds: float, step: Callable[[], object], name: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await anyio.to_thread.run_sync(step)
            except Exception as exc:  # tried again next time; the server keeps serving
                log.error("background %s failed: %s", name, type(exc).__name__)

    def sweep_once(self) -> Swept:
        """End tasks past their lifetime or idle timeout, revoke expired leases and forget
        old proof nonces; returns how many of each."""
        runtime = self._state.runtime
        swept = runtime.grants.sweep()
        prune_changes(runtime.store)
        metrics = self._state.metrics
        metrics.swept.labels("lease").inc(swept.expired)
        metrics.swept.labels("nonce").inc(swept.nonces)
        metrics.swept.labels("task").inc(swept.tasks)
        try:  # usually one small read: nothing left
            delete_archived(runtime.store, verifiers_of(runtime.keyring))
        except ProctorError as exc:
            log.error("archived audit events not deleted: %s: %s", exc.code, exc.message)
        return swept

    def sync_once(self) -> None:
        """Bring this process up to what the store says."""
        runtime = self._state.runtime
        active = runtime.policies.active_revision()
        current = runtime.engine.active
        if active is not None and (current is None or current.revision != active.id):
            runtime.policies.load_active()
            log.info("policy revision %s is active here now", active.id)
        runtime.risk.catch_up()  # what any process's agents did, and what has faded
        runtime.risk.rescore()
        runtime.enforcer.refresh_principals()
        self._state.shadow.sync()

    def heard(self, ids: Sequence[str], reason: str) -> None:
        """A revocation by any node: count it, tell the listeners."""
        self._state.metrics.revocations_heard.inc(len(ids))
        telemetry.count_revocations(len(ids))
        for listener in list(self._state.revocation_listeners):
            try:
                listener(ids, reason)
            except Exception:
                log.exception("revocation listener failed")

"""Hearing about revocations made by any node.

Every revocation is announced on PostgreSQL's ``proctor_revocations`` channel
when its transaction commits (see :mod:`proctor.grants.leases`).
:class:`RevocationSubscription` listens on a connection of its own, taken from the
store's pool (so that it counts against the process's connections), and calls back
with the revoked ids, so that an enforcement point can close live sessions at
once. It is an accelerator, not the safety net: a node that misses a
notification (a dropped connection, a restart) still denies, because every
check reads the revocation state from the store.

On SQLite there is one process, and :meth:`LeaseTree.subscribe` is enough.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from proctor.documents import parse_json
from proctor.errors import DocumentError, StoreError
from proctor.grants.leases import CHANNEL
from proctor.store import Store
from proctor.store.drivers import psycopg_errors
from proctor.store.wakeup import Wakeup

if TYPE_CHECKING:
    import psycopg

__all__ = ["RevocationSubscription"]

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[str], str], None]


class RevocationSubscription:
    """A background listener on the revocation channel of one PostgreSQL database.

    >>> sub = RevocationSubscription(store, on_revoked)   # doctest: +SKIP
    >>> sub.close()                                       # doctest: +SKIP
    """

    def __init__(self, store: Store, listener: Listener, *, poll_seconds: float = 0.5) -> None:
        if store.backend != "postgresql":
            raise StoreError("revocations are announced on PostgreSQL only")
        try:
            self._proxy = store.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot listen for revocations: {type(exc).__name__}") from exc
        # Held until close and then closed, not pooled: a LISTEN stays with its session.
        self._conn: psycopg.Connection[Any] = self._proxy.driver_connection  # type: ignore[assignment]
        try:
            self._conn.autocommit = True
            self._conn.execute(f"LISTEN {CHANNEL}")
        except psycopg_errors("Error") as exc:
            self._proxy.invalidate()
            raise StoreError(f"cannot listen for revocations: {type(exc).__name__}") from exc
        self._listener = listener
        self._poll = poll_seconds
        self._stopping = threading.Event()
        self._wakeup = Wakeup()  # close() ends the listener's wait at once
        self._thread = threading.Thread(target=self._run, name="proctor-revocations",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # the connection's errors, or its descriptor gone (OSError)
        lost: tuple[type[Exception], ...] = (*psycopg_errors("Error"), OSError)
        try:
            while not self._stopping.is_set():
                # what has arrived (timeout 0: one look), then wait for more or for close()
                for note in self._conn.notifies(timeout=0):
                    self._deliver(note.payload)
                if not self._stopping.is_set():
                    self._wakeup.wait(self._conn.fileno(), self._poll)
        except lost:
            if not self._stopping.is_set():
                log.error("revocation subscription lost its connection; checks still "
                          "read the store")
        finally:
            if self._stopping.is_set():  # close() may have given up waiting for this thread
                self._wakeup.close()

    def _deliver(self, payload: str) -> None:
        try:
            message = parse_json(payload, what="revocation notification")
            ids = [str(i) for i in message["ids"]]
            reason = str(message.get("reason", ""))
        except (DocumentError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed revocation notification")
            return
        try:
            self._listener(ids, reason)
        except Exception:
            log.exception("revocation listener failed")

    def close(self) -> None:
        self._stopping.set()
        self._wakeup.wake()
        self._thread.join(timeout=5 * self._poll + 1)
        self._proxy.invalidate()
        if not self._thread.is_alive():  # else it may still be waiting
            self._wakeup.close()

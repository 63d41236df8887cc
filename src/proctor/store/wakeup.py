"""A listener thread's wait: for its connection's next notification, or for ``close()``.

A thread that listens (``LISTEN``) on a PostgreSQL connection waits for its socket.
Waiting with a timeout (psycopg's ``notifies(timeout=...)``) made every ``close()`` wait
out the rest of that timeout for the thread to see it was asked to stop: on PostgreSQL,
each runtime's close took a quarter to half a second (every CLI command, every test).
:class:`Wakeup` waits for the socket *or* a local socket pair that ``close()`` writes to:
the listener's loop calls :meth:`Wakeup.wait` between looks at its notifications, and
``close()`` calls :meth:`Wakeup.wake` before it joins the thread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket

__all__ = ["Wakeup"]


class Wakeup:
    """One listener's wait, which :meth:`wake` ends at once from another thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)

    def wait(self, fileno: int, timeout: float) -> None:
        """Until ``fileno`` can be read, :meth:`wake` was called, or ``timeout``;
        ``OSError`` when ``fileno`` is not a descriptor any more."""
        with selectors.DefaultSelector() as ready:
            ready.register(fileno, selectors.EVENT_READ)
            ready.register(self._reader, selectors.EVENT_READ)
            ready.select(timeout)

    def wake(self) -> None:
        """End the current wait and every later one (the listener is stopping)."""
        with contextlib.suppress(OSError):
            self._writer.send(b"x")

    def close(self) -> None:
        """Once the listener's thread has ended: by the thread as it ends, and by whoever
        stops it if it ended in time (closing twice is harmless)."""
        self._writer.close()
        self._reader.close()

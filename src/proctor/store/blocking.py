"""Work that must not wait for the database: a step run on an event loop's own thread.

An asynchronous entry that runs a step on its event loop, because the step is CPU
when the in-process views are warm (``Enforcer.decide_call_on_loop``), runs it
inside :func:`refusing`. Every place that would wait for the database or for a
durable write calls :func:`check` before it does: a :class:`~proctor.store.Store`
read, transaction or fast fetch, and the audit log's blocking writes. Inside the
block, :func:`check` raises :class:`WouldBlock` instead, before any statement ran,
and the entry does the whole step again on a worker thread, where waiting is allowed.

A step run this way must change nothing outside memory before it could reach a
check (it is done again from the start); the views' caches and the policy
engine's entities, which only follow the store, may be filled.

>>> with refusing():                                  # doctest: +SKIP
...     store.fetch("SELECT 1", [])
Traceback (most recent call last):
WouldBlock: ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["WouldBlock", "check", "refusing"]

_refusing: ContextVar[bool] = ContextVar("proctor_store_refusing", default=False)


class WouldBlock(BaseException):
    """The step inside :func:`refusing` was about to wait for the database.

    A :class:`BaseException`, not an :class:`Exception`: it must pass every ``except
    Exception`` on the decision path, which turns a real failure into a deny; this is no
    failure, only a sign that the step belongs on a thread. Nothing was read nor written.
    """


@contextlib.contextmanager
def refusing() -> Iterator[None]:
    """Within the block (no ``await`` in it), waiting for the database raises
    :class:`WouldBlock`."""
    token = _refusing.set(True)
    try:
        yield
    finally:
        _refusing.reset(token)


def check() -> None:
    """Raise :class:`WouldBlock` inside :func:`refusing`; call before waiting for the
    database."""
    if _refusing.get():
        raise WouldBlock("this step would wait for the database")

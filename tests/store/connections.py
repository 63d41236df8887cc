"""Counting the connections a process holds to one database, as the database or the
kernel sees them (never as the store reports them)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import psycopg

_FDS = Path("/proc/self/fd")


def tagged(url: str) -> str:
    """``url`` with an application name of its own on PostgreSQL, so that only the
    connections opened through it are counted; a SQLite URL as it is."""
    if url.startswith("sqlite"):
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}application_name=proctor_pool_{uuid.uuid4().hex[:12]}"


def open_connections(url: str) -> int:
    """How many connections to ``url`` (made by :func:`tagged`) are open right now.

    PostgreSQL: its backends for that application name in ``pg_stat_activity``.
    SQLite: this process's file descriptors on the database file, from /proc: every
    connection keeps one open.
    """
    if url.startswith("sqlite"):
        database = Path(url.removeprefix("sqlite:///")).resolve()
        count = 0
        for fd in _FDS.iterdir():
            with contextlib.suppress(OSError):  # an fd closed while we looked
                count += fd.readlink() == database
        return count
    base, _, query = url.partition("?")
    name = parse_qs(query)["application_name"][0]
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           (name,)).fetchone()
    assert row is not None
    return int(row[0])


def run_burst(work: Callable[[], object], threads: int) -> list[BaseException]:
    """Start ``threads`` new threads that each run ``work`` at once, join them all,
    and return what they raised."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=60)
            work()
        except BaseException as exc:  # reported to the test, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert not worker.is_alive(), "a worker thread did not finish"
    return errors

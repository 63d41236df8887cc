"""The sweep's deletes of a backlog (the change feed's old rows, the proof nonces past
their window) run a chunk per transaction, oldest first: after a long outage they are
not one transaction holding SQLite's write lock (every decision's write waits behind
it) or one long PostgreSQL statement. On SQLite a write another connection makes
between two chunks does not wait at all."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from proctor.grants.accounting import forget_nonces
from proctor.store import Store, chunks, open_store
from proctor.store.changes import prune_changes
from proctor.store.tables import changes, proof_nonces

_IAT = 1_796_644_800  # the nonces' proof time; all of them past their window at _NOW
_NOW = datetime.fromtimestamp(_IAT + 200, UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def _fill(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(insert(changes), [{"kind": "agent", "key": f"a{n}"} for n in range(25)])
        conn.execute(insert(proof_nonces), [
            {"nonce": f"{_IAT:010d}:n{n:02d}", "expires_at": _NOW - timedelta(seconds=60)}
            for n in range(25)])


def _left(store: Store) -> tuple[int, int, int]:
    """The changes left, the first of them, the nonces left."""
    with store.reading() as conn:
        count, first = conn.execute(select(func.count(), func.min(changes.c.seq))).one()
        nonces = conn.execute(select(func.count()).select_from(proof_nonces)).scalar_one()
    return int(count), int(first), int(nonces)


@pytest.mark.parametrize("sweep", ["changes", "nonces"])
def test_a_backlog_is_deleted_a_chunk_per_transaction_oldest_first(
        store: Store, sweep: str) -> None:
    _fill(store)
    with store.reading() as conn:
        first = int(conn.execute(select(func.min(changes.c.seq))).scalar_one())
    run: Callable[..., int] = (
        (lambda **k: prune_changes(store, keep=5, **k)) if sweep == "changes"
        else (lambda **k: forget_nonces(store, _NOW, **k)))
    assert run(chunk=4, most_chunks=2) == 8  # a process stopped after two chunks
    count, oldest, nonces = _left(store)
    if sweep == "changes":
        assert (count, oldest, nonces) == (17, first + 8, 25)
        assert run(chunk=4) == 12  # the rest, the newest 5 kept
        assert _left(store)[:2] == (5, first + 20)
    else:
        assert (count, nonces) == (25, 17)
        with store.reading() as conn:
            assert min(conn.execute(select(proof_nonces.c.nonce)).scalars()).endswith("n08")
        assert run(chunk=4) == 17
        assert _left(store)[2] == 0
    assert run() == 0


@pytest.mark.parametrize("sweep", ["changes", "nonces"])
def test_a_write_between_two_chunks_takes_sqlites_lock_at_once(
        tmp_path: Path, sweep: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "proctor.db")
    store = open_store(f"sqlite:///{path}")
    _fill(store)
    seen: list[tuple[int, int]] = []

    def write_meanwhile(seconds: float) -> None:  # the sweep's pause between two chunks
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # SQLITE_BUSY at once if a chunk held it
            other.execute("INSERT INTO changes (kind, key) VALUES ('agent', 'meanwhile')")
            seen.append(other.execute("SELECT (SELECT count(*) FROM changes), "
                                      "(SELECT count(*) FROM proof_nonces)").fetchone())
            other.execute("COMMIT")
        finally:
            other.close()

    monkeypatch.setattr(chunks, "_pause", write_meanwhile)
    try:
        if sweep == "changes":
            assert prune_changes(store, keep=5, chunk=10) == 20
            # the write saw the first chunk committed; the second is the last (the
            # write's own row is newer than the newest 5 the prune began with: kept)
            assert seen == [(15 + 1, 25)]
        else:
            assert forget_nonces(store, _NOW, chunk=10) == 25
            assert seen == [(26, 15), (27, 5)]
    finally:
        store.close()

"""The chain head a SQLite writer remembers: read no more once it is alone, refused by the
compare-and-set when another process moved it, exact across processes and a kill -9; on
either database, a moved head writes nothing and a long batch every row."""

from __future__ import annotations

import base64
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from proctor.audit import AuditEvent, AuditLog, verifiers_for, verify_store
from proctor.audit.chain import chain_hash
from proctor.audit.driver import TRUST_AFTER, AppendConnection, EventRow, WriteCursor
from proctor.clock import FrozenClock
from proctor.grants import IssuerKeyring
from proctor.keys import LocalSigner
from proctor.store import open_store
from proctor.store.tables import audit_events, proof_nonces
from tests.audit.helpers import agent_event
from tests.conftest import sqlite_only

ROOT = Path(__file__).resolve().parents[2]


def _traced(store: Any) -> list[str]:
    """Every statement the connections taken from the store's pool from now on run."""
    statements: list[str] = []

    @event.listens_for(store.engine, "checkout")
    def _trace(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    return statements


@sqlite_only
def test_a_lone_writer_stops_reading_the_head_and_a_moved_head_is_built_on_again(
    database_url: str, clock: FrozenClock, signer: LocalSigner
) -> None:
    mine, other = open_store(database_url), open_store(database_url)
    statements = _traced(mine)
    logs = [AuditLog(s, signer=signer, clock=clock, checkpoint_every=7) for s in (mine, other)]
    try:
        for n in range(TRUST_AFTER + 5):
            logs[0].record(agent_event(clock, n))
        quiet = statements[statements.index("BEGIN IMMEDIATE") :]
        reads = [s for s in quiet if s.startswith("SELECT seq, hash FROM audit_head")]
        assert len(reads) == TRUST_AFTER  # then the compare-and-set alone
        assert sum(s.startswith("UPDATE audit_head") for s in quiet) == TRUST_AFTER + 5

        moved = logs[1].record(agent_event(clock, 100))  # another process appends
        del statements[:]
        after = logs[0].record(agent_event(clock, 101))
        assert "ROLLBACK" in statements  # the batch on the head it remembered, refused
        assert (moved.seq, after.seq) == (TRUST_AFTER + 6, TRUST_AFTER + 7)
        for n in range(3):
            logs[n % 2].record(agent_event(clock, 200 + n))
        report = verify_store(mine, verifiers_for([signer]))
        assert report.is_valid, report.problem
        assert (report.events, report.checkpoints) == (TRUST_AFTER + 10, 2)
    finally:
        for log in logs:
            log.close()
        mine.close()
        other.close()


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.strip())
    into.put("")  # end of output


class _Writer:
    """A burst_writer process and the event ids it confirmed."""

    def __init__(self, database_url: str, home: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.audit.burst_writer", database_url, "4", str(home)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=_lines, args=(self.process.stdout, self.lines),
                                       daemon=True)
        self.reader.start()
        self.confirmed: list[str] = []
        assert self.lines.get(timeout=60) == "ready"

    def confirm(self, count: int) -> None:
        """Wait until ``count`` more of its events were confirmed durable."""
        wanted = len(self.confirmed) + count
        while len(self.confirmed) < wanted:
            line = self.lines.get(timeout=60)
            assert line, "the writer stopped early"
            self.confirmed.append(line)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        while True:  # ids printed before the kill but not read yet
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line:
                self.confirmed.append(line)


@sqlite_only
@pytest.mark.slow
def test_processes_appending_to_one_sqlite_file_and_one_killed_keep_the_chain_exact(
    database_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    master_key = secrets.token_bytes(32)
    store = open_store(database_url)  # migrated before the writers race to
    keyring = IssuerKeyring(store, clock, master_key)
    keyring.current()
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PROCTOR_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode()}
    audit = AuditLog(store, signer=keyring, clock=clock, checkpoint_every=50)
    writers: list[_Writer] = []
    mine: list[str] = []
    try:
        for n in range(TRUST_AFTER + 2):  # this process alone: it stops reading the head
            mine.append(audit.record(agent_event(clock, n)).event_id)
        writers = [_Writer(database_url, tmp_path, env) for _ in range(2)]
        for writer in writers:
            writer.confirm(150)
        writers[0].kill()  # mid-burst: its open batch is rolled back
        writers[1].confirm(150)
        for n in range(20):  # on a head two other processes moved
            mine.append(audit.record(agent_event(clock, 1000 + n)).event_id)
        writers[1].confirm(50)
    finally:
        for writer in writers:
            if writer.process.returncode is None:
                writer.kill()
        audit.close()
    try:
        report = verify_store(store, keyring.checkpoint_verifiers())
        with store.transaction() as conn:
            stored = set(conn.execute(select(audit_events.c.event_id)).scalars())
    finally:
        store.close()
    assert report.is_valid, report.problem
    confirmed = [*mine, *(i for w in writers for i in w.confirmed)]
    missing = [event_id for event_id in confirmed if event_id not in stored]
    assert not missing, f"{len(missing)} confirmed events are gone"
    assert report.events >= len(confirmed) >= len(mine) + 500


def _rows(head: Any, events: list[AuditEvent]) -> tuple[list[EventRow], list[str]]:
    """``events`` as rows chained onto ``head``, and their times as their bodies hold them."""
    rows, times, (seq, prev) = [], [], head
    for event_ in events:
        body, time = event_.canonical_body_and_time()
        digest = chain_hash(prev, body)
        seq += 1
        rows.append(EventRow(seq, event_.id, event_.time, "agent", event_.actor.id,
                             event_.task, event_.action, "allow", body.decode(), prev, digest))
        times.append(time)
        prev = digest
    return rows, times


@pytest.mark.parametrize("count", [1, 4, 5, 300])  # PostgreSQL: one statement, or COPY
def test_a_batch_appends_every_row_in_order_whatever_its_length(
    database_url: str, clock: FrozenClock, signer: LocalSigner, count: int
) -> None:
    store = open_store(database_url)
    conn = AppendConnection(store)
    try:
        head = conn.read_head()
        events = [agent_event(clock, n) for n in range(count)]
        rows, times = _rows(head, events)
        new = conn.append(head, lambda _tx, at: (*_rows(at, events)[:1], None, times))
        assert new == (head.seq + count, rows[-1].hash)
        assert conn.read_head() == new
        report = verify_store(store, verifiers_for([signer]))
        assert report.is_valid, report.problem
        assert report.events == head.seq + count
    finally:
        conn.close()
        store.close()


@pytest.mark.parametrize("count", [3, 40])
def test_a_head_moved_under_the_compare_and_set_writes_no_row_and_undoes_the_effects(
    database_url: str, clock: FrozenClock, count: int
) -> None:
    store = open_store(database_url)
    conn = AppendConnection(store)
    try:
        head = conn.read_head()

        def build(tx: WriteCursor, at: Any) -> tuple[list[EventRow], None, list[str]]:
            # an effect of the batch, then the head moved by someone else meanwhile
            tx.execute("INSERT INTO proof_nonces (nonce, expires_at) VALUES ({p}, {p})",
                       ["n-moved", tx.time(datetime(2026, 12, 2, tzinfo=UTC))])
            tx.execute("UPDATE audit_head SET seq = seq + 1 WHERE id = 1")
            rows, times = _rows(at, [agent_event(clock, n) for n in range(count)])
            return rows, None, times

        assert conn.append(head, build) is None
        assert conn.read_head() == head
        with store.engine.connect() as db:
            assert db.execute(select(func.count()).select_from(audit_events)).scalar() == 0
            assert db.execute(select(func.count()).select_from(proof_nonces)).scalar() == 0
    finally:
        conn.close()
        store.close()

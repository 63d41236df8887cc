"""``kill -9`` in the middle of a burst loses nothing that was confirmed."""

from __future__ import annotations

import base64
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from proctor.audit import load_checkpoints, verify_store
from proctor.clock import FrozenClock
from proctor.grants import IssuerKeyring
from proctor.store import open_store
from proctor.store.tables import audit_events

ROOT = Path(__file__).resolve().parents[2]


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line.strip())
    into.put("")  # end of output


@pytest.mark.slow
def test_a_killed_writer_leaves_a_chain_that_verifies_with_every_confirmed_event(
    database_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    master_key = secrets.token_bytes(32)
    store = open_store(database_url)  # migrate before the writer races to
    kid = IssuerKeyring(store, clock, master_key).current().kid
    store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PROCTOR_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode()}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.burst_writer", database_url, "8", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    confirmed: list[str] = []
    try:
        assert lines.get(timeout=60) == "ready"
        while len(confirmed) < 400:  # mid-burst: eight threads keep writing
            line = lines.get(timeout=60)
            assert line, "the writer stopped early"
            confirmed.append(line)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    reader.join(timeout=30)
    assert process.stdout is not None
    process.stdout.close()
    while True:  # ids printed before the kill but not read yet
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if line:
            confirmed.append(line)
    assert process.returncode == -signal.SIGKILL

    store = open_store(database_url)
    try:
        report = verify_store(store, IssuerKeyring(store, clock, master_key)
                              .checkpoint_verifiers())
        signed_by = {checkpoint.kid for checkpoint in load_checkpoints(store)}
        with store.transaction() as conn:
            stored = set(conn.execute(select(audit_events.c.event_id)).scalars())
    finally:
        store.close()
    assert report.is_valid, report.problem
    assert report.checkpoints >= 1 and signed_by == {kid}  # the keyring's key signed them
    missing = [event_id for event_id in confirmed if event_id not in stored]
    assert not missing, f"{len(missing)} confirmed events are gone"
    assert report.events >= len(confirmed)

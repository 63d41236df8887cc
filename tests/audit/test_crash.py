"""``kill -9`` in the middle of a burst loses nothing that was confirmed."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from proctor.audit import verifiers_for, verify_store
from proctor.keys import LocalSigner
from proctor.store import open_store
from proctor.store.tables import audit_events

ROOT = Path(__file__).resolve().parents[2]


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line.strip())
    into.put("")  # end of output


@pytest.mark.slow
def test_a_killed_writer_leaves_a_chain_that_verifies_with_every_confirmed_event(
    database_url: str, tmp_path: Path, signer: LocalSigner
) -> None:
    open_store(database_url).close()  # migrate before the writer races to
    key = tmp_path / "key.pem"
    key.write_bytes(signer.to_pem())
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.burst_writer", database_url, "8", str(key)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
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
        report = verify_store(store, verifiers_for([signer]))
        with store.transaction() as conn:
            stored = set(conn.execute(select(audit_events.c.event_id)).scalars())
    finally:
        store.close()
    assert report.is_valid, report.problem
    missing = [event_id for event_id in confirmed if event_id not in stored]
    assert not missing, f"{len(missing)} confirmed events are gone"
    assert report.events >= len(confirmed)

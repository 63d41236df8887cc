"""The API benchmark runs end to end against a real ``proctor serve`` with two workers;
its figures are for docs/benchmarks.md, not CI, so nothing is asserted about timings."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
import pytest

from tests.bench.quick import BENCH, assert_positive_figures, run_smoke

ENDED_SECONDS = 30  # a bound, not a wait
FIGURES = ("decide_http_per_s", "decide_http_p99_ms", "http_over_inprocess",
           "inprocess_decide_p50_ms")


@pytest.mark.slow
@pytest.mark.postgres
def test_smoke_run_ends_with_a_json_line_and_every_answer_an_allow(postgres_server: str) -> None:
    run = run_smoke("api.py")
    assert_positive_figures(run, FIGURES)
    assert run.report["workload"]["workers"] == 2
    assert run.report["not_allowed"] == 0, run.report
    assert run.returncode == 0, run.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_a_run_ended_by_sigterm_stops_its_server_and_drops_its_database(
        postgres_server: str) -> None:
    """Python's default for SIGTERM ended the bench at once: its ``proctor serve`` and the
    server's workers ran on, orphaned, and its ``proctor_bench_*`` database stayed."""
    with subprocess.Popen(
            [sys.executable, str(BENCH / "api.py"), "--smoke", "--seconds", "600",
             "--postgres", postgres_server], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) as bench:
        ended = _end_when_ready(bench)
    said, out = ended.stderr, ended.stdout
    assert bench.returncode == 128 + signal.SIGTERM, said
    assert "interrupted by SIGTERM" in said
    assert not out.strip()  # no report of a run cut short
    server, database, workers = ended.server, ended.database, ended.workers
    assert len(workers) >= 2
    for pid in (server, *workers):
        assert _ended(pid), pid
    assert not _database_exists(postgres_server, database)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended: gone, or dead and not yet reaped (a worker the
    bench killed with its group is its server's child: init reaps it when it gets to
    it), waited for up to :data:`ENDED_SECONDS` (a SIGKILL's delivery, on a busy machine)."""
    deadline = time.monotonic() + ENDED_SECONDS
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if stat.rpartition(")")[2].split()[0] in {"Z", "X"}:  # the state, after the name
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@dataclass
class Ended:
    """What the bench said, and the server, workers and database it had when signalled."""

    stderr: str
    stdout: str
    server: int
    database: str
    workers: list[int]


def _end_when_ready(bench: subprocess.Popen[str]) -> Ended:
    """Wait for the bench to say its server is up, then SIGTERM it."""
    said: list[str] = []
    lines: queue.Queue[str] = queue.Queue()

    def read(stream: IO[str]) -> None:
        for line in stream:
            said.append(line)
            lines.put(line)

    assert bench.stderr is not None and bench.stdout is not None
    reader = threading.Thread(target=read, args=(bench.stderr,), daemon=True)
    reader.start()
    try:
        ready = None
        while ready is None:  # the event: the bench says its server is up
            ready = READY.search(lines.get(timeout=300))
        server = int(ready["pid"])
        workers = children_of(server)
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=300)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    reader.join(30)
    return Ended("".join(said), bench.stdout.read(), server, ready["database"], workers)


READY = re.compile(r"proctor serve \(pid (?P<pid>\d+)\) ready on port \d+, database "
                   r"(?P<database>proctor_bench_[0-9a-f]+)")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text("ascii")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None

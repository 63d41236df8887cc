"""How fast is the audit log, next to plain inserts on the same database in the same run?

Usage::

    uv run python bench/audit.py            # the full run, a few minutes
    uv run python bench/audit.py --quick    # under 30 s, fewer events

Every figure is durable: SQLite in WAL mode with ``synchronous=FULL`` (a
temporary file), PostgreSQL with its default ``synchronous_commit=on`` (a
fresh database on ``PROCTOR_TEST_PG_URL``'s server, dropped afterwards).

- *baselines*: the same rows, pre-built, written with the driver and no
  hashing: one row per commit, and 100 rows per commit;
- *events_per_s*: ``AuditLog.record_async`` from 256 concurrent asyncio
  tasks, each call returning only once its event is durable; group commit
  batches whatever is queued. The events are built before timing, like the
  baseline's rows (canonical JSON, hashing and the write are timed);
  *cpu_us_per_event* is the process's CPU (every thread) per event of that
  phase: Python's cost per event, which a loaded machine inflates less than
  the rate;
- *decision_events_per_s*: the same, but each task first builds its event
  from a decision (``decision_event``: masking, request digest): the whole
  audit cost of one ``decide_and_record`` apart from ``decide`` itself;
- *threads*: ``AuditLog.record`` from 64 OS threads, events built before;
- *verify_events_per_s*: ``verify_store`` over the chain just written;
- *search_…_ms*: ``search_events`` / ``iter_events`` by task and by actor over that
  chain (200 tasks, 20 agents), the median of 40 searches each, once events are
  written until at least 3,072 rows lie past the keys table's mark (``search_tail_rows``,
  less than ``KEYS_EVERY`` = 4,096): the newest 100 of a task, every event of a task,
  the newest 100 of an actor; ``search_…_cpu_ms``: the searching thread's CPU (the
  database's work and Python's, less moved by the load than the wall time).

Prints a table, then one JSON object on its last line.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import select

import harness
from proctor.audit import (
    AuditLog,
    EventFilter,
    decision_event,
    iter_events,
    search_events,
    verifiers_for,
    verify_store,
)
from proctor.audit.events import new_event_id
from proctor.keys import LocalSigner
from proctor.policy import Decision, EntityRef, Outcome, ReasonCode, call_context
from proctor.policy.model import DecisionRequest
from proctor.store import Store, open_store
from proctor.store.tables import audit_head

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
DECISION = Decision(Outcome.ALLOW, ReasonCode.PERMITTED, ("coding-read",),
                    ("the coding agent may read its repositories",), revision=7)


def request(n: int) -> DecisionRequest:
    context = call_context(now=NOW, args={"repo_path": f"/srv/repos/app-{n % 50}",
                                          "max_count": 20},
                           task=f"task-{n % 200}", purpose="fix the failing build",
                           on_behalf_of="alice@acme.example", source_ip="10.0.0.7",
                           delegation_chain=["spiffe://acme.example/agent/planner"])
    return DecisionRequest(EntityRef("Agent", f"spiffe://acme.example/agent/coder-{n % 20}"),
                           "tool:git/git_log", EntityRef("Tool", "git/git_log"), context)


REQUESTS = [request(n) for n in range(500)]


# Each event built is 33 us after the one before (the goal's 30,000 per second), as a
# clock moves: an event's id is time-ordered (UUIDv7, the millisecond first), so ids of one
# time would fall at random in the unique index, which a deployment's never do (before 7
# December every event had one time: ~360 WAL pages per 200-event commit, ~220 this way).
_TICKS = itertools.count()


def tick() -> datetime:
    return NOW + timedelta(microseconds=33 * next(_TICKS))


def event(n: int) -> Any:
    return decision_event(REQUESTS[n % len(REQUESTS)], DECISION, now=tick(), grant="acc-7f3a")


def sample_rows(count: int, start: int) -> list[tuple[Any, ...]]:
    body = event(0).canonical_body().decode()
    rows = []
    for i in range(count):
        time = tick()
        rows.append((start + i, new_event_id(time), time, "agent",
                     f"spiffe://acme.example/agent/c{i % 20}", "task-1", "tool:git/git_log",
                     "allow", body, "0" * 64, "1" * 64))
    return rows


def baseline_sqlite(path: Path, single: int, batched: int) -> tuple[float, float]:
    """Rows per second: one INSERT per commit, then 100 rows per commit (executemany)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    insert = ("INSERT INTO audit_events (seq, event_id, time, actor_type, actor_id, task, action,"
              " decision, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    rows = [(*r[:2], r[2].isoformat(sep=" "), *r[3:]) for r in sample_rows(single, 10**9)]
    started = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, row)
        conn.execute("COMMIT")
    one = single / (time.perf_counter() - started)
    rows = [(*r[:2], r[2].isoformat(sep=" "), *r[3:]) for r in sample_rows(batched, 2 * 10**9)]
    started = time.perf_counter()
    for i in range(0, batched, 100):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows[i:i + 100])
        conn.execute("COMMIT")
    hundred = batched / (time.perf_counter() - started)
    conn.execute("DELETE FROM audit_events WHERE seq >= 1000000000")
    conn.close()
    return one, hundred


def baseline_postgres(url: str, batched: int) -> float:
    rows = sample_rows(batched, 10**9)
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for i in range(0, batched, 100):
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO audit_events (seq, event_id, time, actor_type, actor_id, task, "
                    "action, decision, body, prev_hash, hash) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows[i:i + 100])
            conn.commit()
        rate = batched / (time.perf_counter() - started)
        conn.execute("DELETE FROM audit_events WHERE seq >= 1000000000")
        conn.commit()
    return rate


def with_asyncio(audit: AuditLog, count: int, callers: int, *, build: bool,
                 cpu: dict[str, float] | None = None) -> float:
    """Events per second; ``cpu["us_per_event"]`` gets the process's CPU per event (every
    thread: the callers' loop and the writer)."""
    ready = [] if build else [event(n) for n in range(count)]

    async def caller(first: int) -> None:
        for n in range(first, count, callers):
            await audit.record_async(event(n) if build else ready[n])

    async def run() -> float:
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        if cpu is not None:
            cpu["us_per_event"] = (time.process_time() - cpu_started) / count * 1e6
        return time.perf_counter() - started

    return count / asyncio.run(run())


def with_threads(audit: AuditLog, count: int, callers: int) -> float:
    ready = [event(n) for n in range(count)]

    def caller(first: int) -> None:
        for n in range(first, count, callers):
            audit.record(ready[n])

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - started)


def measure_log(url: str, count: int, signer: LocalSigner) -> dict[str, float]:
    store = open_store(url)
    try:
        results: dict[str, float] = {}
        cpu: dict[str, float] = {}
        runs: list[tuple[str, Callable[[AuditLog], float]]] = [
            ("async", lambda log: with_asyncio(log, count, 256, build=False, cpu=cpu)),
            ("decisions", lambda log: with_asyncio(log, count // 2, 256, build=True)),
            ("threads", lambda log: with_threads(log, count // 2, 64)),
        ]
        for name, run in runs:
            audit = AuditLog(store, signer=signer)
            try:
                results[name] = run(audit)
                results[f"{name}_mean_batch"] = audit.events_written / max(audit.batches, 1)
            finally:
                audit.close()
        started = time.perf_counter()
        report = verify_store(store, verifiers_for([signer]))
        elapsed = time.perf_counter() - started
        if not report.is_valid:
            raise SystemExit(f"the chain does not verify: {report.problem}")
        results["verify"] = report.events / elapsed
        results["async_cpu_us"] = cpu["us_per_event"]
        results.update(measure_searches(store, signer))
        return results
    finally:
        store.close()


SEARCH_TAIL = 3072  # rows past the keys' mark the searches are measured at (at least)


def tail_rows(store: Store) -> int:
    with store.reading() as conn:
        seq, keyed = conn.execute(select(audit_head.c.seq, audit_head.c.keyed)).one()
    return int(seq) - int(keyed or 0)


def measure_searches(store: Store, signer: LocalSigner, samples: int = 40
                     ) -> dict[str, float]:
    """Median milliseconds of three searches, with at least :data:`SEARCH_TAIL` rows
    past the keys' mark (fewer than a fill's 4,096: writing them fills no keys)."""
    short = SEARCH_TAIL - tail_rows(store)
    if short > 0:
        audit = AuditLog(store, signer=signer)
        try:
            with_asyncio(audit, short, 64, build=False)
        finally:
            audit.close()
    figures: dict[str, float] = {"tail": tail_rows(store)}
    searches: dict[str, Callable[[int], object]] = {
        "task_newest100": lambda n: search_events(store, EventFilter(task=f"task-{n % 200}"),
                                                  limit=100),
        "task_all": lambda n: list(iter_events(store, EventFilter(task=f"task-{n % 200}"))),
        "actor_newest100": lambda n: search_events(
            store, EventFilter(actor_id=f"spiffe://acme.example/agent/coder-{n % 20}"),
            limit=100),
    }
    times: dict[str, list[float]] = {name: [] for name in searches}
    cpu: dict[str, list[float]] = {name: [] for name in searches}
    for n in range(samples):  # alternated, so that drift hits all three alike
        for name, search in searches.items():
            started, cpu_started = time.perf_counter(), time.thread_time()
            search(7 * n + 3)
            cpu[name].append((time.thread_time() - cpu_started) * 1000)
            times[name].append((time.perf_counter() - started) * 1000)
    figures.update({name: statistics.median(found) for name, found in times.items()})
    figures.update({f"{name}_cpu": statistics.median(found) for name, found in cpu.items()})
    return figures


def log_figures(log: dict[str, float], backend: str, verify: str) -> dict[str, float]:
    """The figures of ``measure_log`` on one backend, named as the report names them
    (the search figures: no suffix for SQLite, ``_postgres``)."""
    suffix = "" if backend == "sqlite" else f"_{backend}"
    return {
        f"events_per_s_{backend}": round(log["async"]),
        f"decision_events_per_s_{backend}": round(log["decisions"]),
        f"events_per_s_{backend}_threads": round(log["threads"]),
        f"mean_batch_{backend}": round(log["async_mean_batch"], 1),
        f"cpu_us_per_event_{backend}": round(log["async_cpu_us"], 1),
        verify: round(log["verify"]),
        **{f"search_{name}_ms{suffix}": round(log[name], 2)
           for name in ("task_newest100", "task_all", "actor_newest100")},
        **{f"search_{name}_cpu_ms{suffix}": round(log[f"{name}_cpu"], 2)
           for name in ("task_newest100", "task_all", "actor_newest100")},
        f"search_tail_rows{suffix}": round(log["tail"]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = harness.parser(__doc__.splitlines()[0], quick_help="fewer events: under 30 s")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    options = parser.parse_args(argv)
    count = harness.sized(options, full=60_000, quick=6_000, smoke=300)
    single = harness.sized(options, full=1_000, quick=200, smoke=20)
    signer = LocalSigner.generate()
    figures: dict[str, Any] = {"mode": harness.mode(options), "events": count,
                               "python": platform.python_version(),
                               "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
                               "load_1min_start": round(harness.load_average(), 2)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        url = f"sqlite:///{path}"
        open_store(url).close()
        one, hundred = baseline_sqlite(path, single, count)
        log = measure_log(url, count, signer)
    figures.update({
        "baseline_sqlite_single_row_commits_per_s": round(one),
        "baseline_sqlite_batch100_rows_per_s": round(hundred),
        **log_figures(log, "sqlite", verify="verify_events_per_s"),
    })
    problem = None if options.no_postgres else harness.postgres_problem(harness.PG_ADMIN_URL)
    if problem is not None:
        print(f"{problem}: skipped", file=sys.stderr)
    elif not options.no_postgres:
        with harness.postgres_database(harness.PG_ADMIN_URL) as pg_url:
            open_store(pg_url).close()
            hundred = baseline_postgres(pg_url, count)
            log = measure_log(pg_url, count, signer)
        figures.update({
            "baseline_postgres_batch100_rows_per_s": round(hundred),
            **log_figures(log, "postgres", verify="verify_events_per_s_postgres"),
        })
    figures["load_1min_end"] = round(harness.load_average(), 2)
    figures["sqlite_vs_batch100_baseline"] = round(
        figures["events_per_s_sqlite"] / figures["baseline_sqlite_batch100_rows_per_s"], 2)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    harness.print_json_line(figures, sort_keys=True)

if __name__ == "__main__":
    main()

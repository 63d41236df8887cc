"""How fast does ``POST /v1/decide`` answer over HTTP, next to the same decision in process?

Usage::

    uv run python bench/api.py            # the full run, about a minute
    uv run python bench/api.py --quick    # under 30 s

It starts ``proctor serve --workers 2`` (two uvicorn worker processes) on
PostgreSQL (127.0.0.1:5432, or ``PROCTOR_TEST_PG_URL`` / ``--postgres``; a
``proctor_bench_*`` database made and dropped here) and drives it on loopback
from this process, with a small asyncio HTTP/1.1 client on keep-alive
connections (cheaper per request than a general client, so that it takes less
of the machine from the server). One agent (own key, P-256) holds one grant for
``git/git_log`` under ``/srv/repos/``; every request carries a fresh proof of
possession, made before the timed phase; every answer must be an allow.

Phases, in this order:

- **in process** (the baseline): ``Enforcer.decide_call`` on the same database,
  one thread; half before the HTTP phases and half after;
- **sequential**: one request in flight: ``decide_http_p50_ms`` and
  ``decide_http_p99_ms``; ``http_over_inprocess`` is that p50 divided by the
  in-process p50;
- **loaded**: ``--concurrency`` connections for ``--seconds``:
  ``decide_http_per_s`` (answers / wall time) and ``decide_http_p99_ms_loaded``.

Under that load, where the CPU goes: the workers' event-loop threads
(``server_loop_cpu_ms_per_decision_loaded``: HTTP, the app, the hop to a thread) and how
they split between the workers (``worker_loop_cpu_split``: on Linux each worker listens
on a socket of its own and the kernel spreads connections by a hash of their addresses;
elsewhere they share one and whichever wakes first takes them), the bench database's
PostgreSQL backends (``postgres_cpu_ms_per_decision_loaded``), and server + PostgreSQL +
client (``machine_cpu_ms_per_decision_loaded``) with the rate at which that cost would
keep every core busy (``decide_http_per_s_cpu_bound``): the most this machine could
answer, the bench's client included, whatever else runs on it.

The server's per-principal rate limit is lifted for the run (``server.toml``):
it is a policy, not a cost being measured. Prints a table, then one JSON
object on its last line; exits 1 if any answer was not an allow.

Ended by SIGTERM, SIGHUP or Ctrl-C, it stops the server (and so its workers), drops its
database and removes its home before it exits (128 + the signal's number, no report).
The server runs in a session of its own: a Ctrl-C in the terminal reaches the bench
alone, which stops the server in order. The server's stderr goes to a file in the run's
temporary directory (a pipe nobody read while the server ran could fill and stop it),
shown if the server exits before it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

import harness
from api_workload import ARGS, TARGET, TOOL, Requests, Setup, proofs, set_up
from harness import Goal
from proctor.enforcement import ToolCall

WORKERS = 2
READY_SECONDS = 180  # a bound, not a wait: generous, for a shared machine
GOALS = {"decide_http_per_s": Goal(">=", 1500), "decide_http_p99_ms": Goal("<=", 10)}


@dataclass(frozen=True)
class Plan:
    """How much to measure: in-process decisions, sequential requests, the loaded phase."""

    inprocess: int
    sequential: int
    seconds: float
    concurrency: int


QUICK = Plan(inprocess=100, sequential=200, seconds=3.0, concurrency=16)
FULL = Plan(inprocess=1000, sequential=2000, seconds=15.0, concurrency=32)
SMOKE = Plan(inprocess=10, sequential=20, seconds=0.5, concurrency=4)


def inprocess(setup: Setup, count: int) -> list[int]:
    """``count`` decisions of the same call in this process; nanoseconds each."""
    samples = []
    enforcer, token = setup.runtime.enforcer, setup.grant.token
    for _ in range(count):
        proof = proofs(setup, 1)[0]  # made just before its use, and not timed
        started = time.perf_counter_ns()
        verdict = enforcer.decide_call(token, proof, ToolCall(TOOL, ARGS, target=TARGET))
        samples.append(time.perf_counter_ns() - started)
        if not verdict.is_allowed:
            raise SystemExit(f"in-process decision was {verdict.code}: {verdict.reasons}")
    return samples


# --- the server and the client ----------------------------------------------------------


@contextmanager
def served(home: Path, pg_url: str) -> Iterator[tuple[int, int]]:
    """``proctor serve --workers 2`` on ``home``, once ready: its port and process id."""
    port = harness.free_port()
    env = {**os.environ, "PROCTOR_HOME": str(home), "PROCTOR_DATABASE_URL": pg_url,
           "PROCTOR_TRUST_DOMAIN": "acme.example"}
    errors = home.parent / "serve.stderr"
    with errors.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "proctor.cli", "serve", "--port", str(port), "--workers",
             str(WORKERS)], env=env, stdout=subprocess.DEVNULL, stderr=sink,
            start_new_session=True)
    # One client for the whole wait: ``httpx.get`` builds a client, and with it a TLS
    # context that loads the CA bundle, on every try (most of the smoke run's own CPU).
    try:
        deadline = time.monotonic() + READY_SECONDS
        with httpx.Client(timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise SystemExit("proctor serve exited: " + errors.read_text(
                        "utf-8", "replace"))
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"proctor serve was not ready within {READY_SECONDS} s")
                time.sleep(0.2)
        print(f"api.py: proctor serve (pid {process.pid}) ready on port {port}, database "
              f"{pg_url.rsplit('/', 1)[1]}", file=sys.stderr, flush=True)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        # a worker that outlived its server (killed, say): its session is the server's
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> bytes | None:
    """Send one request on a keep-alive connection; None if the answer is an allow,
    else the answer."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    if head.startswith(b"HTTP/1.1 200") and b'"decision":"allow"' in body:
        return None
    return head.split(b"\r\n", 1)[0] + b" " + body


async def drive(port: int, requests: Requests, concurrency: int, seconds: float | None
                ) -> tuple[list[int], list[str], float]:
    """Send ``requests`` over ``concurrency`` connections (until ``seconds`` pass, if
    given); returns the latencies, the answers that were not allows, and the wall time.
    Making a request (its proof) is not timed."""
    latencies: list[int] = []
    failures: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds if seconds is not None else None

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while stop_at is None or time.perf_counter() < stop_at:
                request = requests.next()
                if request is None:
                    return
                sent = time.perf_counter_ns()
                refused = await exchange(reader, writer, request)
                if refused is not None:
                    failures.append(refused.decode("utf-8", "replace")[:300])
                latencies.append(time.perf_counter_ns() - sent)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - started


# --- where the CPU goes ---------------------------------------------------------------------


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text("ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_of(server: int) -> list[int]:
    """The process ids of ``proctor serve``'s worker processes (its children)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent = int(Path(entry.path, "stat").read_text("ascii").rsplit(")", 1)[1]
                             .split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == server and b"resource_tracker" not in Path(
                    entry.path, "cmdline").read_bytes():  # multiprocessing's, not a worker
                found.append(int(entry.name))
    return found


def loop_cpu_seconds(workers: Sequence[int]) -> dict[int, float]:
    """Each worker's main thread (its event loop: HTTP, the app, the hop to a thread)."""
    seconds = {}
    for pid in workers:
        with contextlib.suppress(OSError, ValueError, IndexError):
            seconds[pid] = _cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    return seconds


def postgres_cpu_seconds(pg_url: str) -> dict[int, float]:
    """The CPU of each backend of the bench's database, by process id (PostgreSQL runs
    on this machine: its backends are processes here)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")]
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            seconds[pid] = _cpu_seconds(Path(f"/proc/{pid}/stat"))
    return seconds


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings (a process first seen in ``after`` counts whole)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# --- the run ------------------------------------------------------------------------------


def quantile_ms(samples: Sequence[int], percent: int) -> float:
    """The ``percent``-th percentile of ``samples`` (nanoseconds) in milliseconds, by
    nearest rank."""
    return harness.nearest_rank(samples, percent) / 1e6


def run(plan: Plan, admin_url: str) -> dict[str, Any]:
    load_at_start = harness.load_average()
    with tempfile.TemporaryDirectory() as tmp, harness.postgres_database(admin_url) as pg_url:
        home = Path(tmp) / "home"
        setup = set_up(home, pg_url)
        try:
            cpu_at = time.process_time()
            baseline = inprocess(setup, plan.inprocess // 2)
            inproc_cpu = time.process_time() - cpu_at
            with served(home, pg_url) as (port, server):
                # one request per new connection, one after another, so that every worker
                # has loaded its caches (keys, slices) before anything is timed
                for _ in range(24):
                    asyncio.run(drive(port, Requests(setup, port, 1), 1, None))
                seq_latency, seq_failures, _ = asyncio.run(
                    drive(port, Requests(setup, port, plan.sequential), 1, None))
                workers = workers_of(server)
                loops_at, database_at = loop_cpu_seconds(workers), postgres_cpu_seconds(pg_url)
                server_at = harness.process_cpu_seconds(server, children=True)
                client_at = time.process_time()
                load_latency, load_failures, wall = asyncio.run(
                    drive(port, Requests(setup, port, 10**9), plan.concurrency, plan.seconds))
                server_cpu = (harness.process_cpu_seconds(server, children=True)
                              - server_at)
                client_cpu = time.process_time() - client_at
                loops = loop_cpu_seconds(workers)
                loop_cpu = spent(loops_at, loops)
                database_cpu = spent(database_at, postgres_cpu_seconds(pg_url))
                loop_split = sorted((loops[pid] - loops_at.get(pid, 0.0) for pid in loops),
                                    reverse=True)
            cpu_at = time.process_time()
            baseline += inprocess(setup, plan.inprocess - plan.inprocess // 2)
            inproc_cpu += time.process_time() - cpu_at
        finally:
            setup.runtime.close()
    inproc_p50 = statistics.median(baseline) / 1e6
    http_p50 = quantile_ms(seq_latency, 50)
    return {
        "decide_http_per_s": round(len(load_latency) / wall, 1),
        "decide_http_p99_ms": round(quantile_ms(seq_latency, 99), 3),
        "http_over_inprocess": round(http_p50 / inproc_p50, 3),
        "decide_http_p50_ms": round(http_p50, 3),
        "decide_http_p50_ms_loaded": round(quantile_ms(load_latency, 50), 3),
        "decide_http_p99_ms_loaded": round(quantile_ms(load_latency, 99), 3),
        "inprocess_decide_p50_ms": round(inproc_p50, 3),
        "inprocess_decide_p99_ms": round(quantile_ms(baseline, 99), 3),
        # CPU per decision, counted by the kernel: less at the mercy of other work than
        # wall time; the in-process figure includes making each proof
        "server_cpu_ms_per_decision_loaded": round(server_cpu / len(load_latency) * 1e3, 3),
        "inprocess_cpu_ms_per_decision": round(inproc_cpu / len(baseline) * 1e3, 3),
        "client_cpu_ms_per_request_loaded": round(client_cpu / len(load_latency) * 1e3, 3),
        # of the server's: the workers' event loops (HTTP, the app, the hop to a thread)
        "server_loop_cpu_ms_per_decision_loaded": round(
            loop_cpu / len(load_latency) * 1e3, 3),
        "postgres_cpu_ms_per_decision_loaded": round(database_cpu / len(load_latency) * 1e3, 3),
        # server + PostgreSQL + client: what one decision costs this machine, and the rate
        # at which that would keep every core busy (the most it could answer, whatever the
        # server's own speed)
        "machine_cpu_ms_per_decision_loaded": round(
            (server_cpu + database_cpu + client_cpu) / len(load_latency) * 1e3, 3),
        "decide_http_per_s_cpu_bound": round(
            (os.cpu_count() or 1) * len(load_latency) / (server_cpu + database_cpu + client_cpu),
            1),
        "worker_loop_cpu_split": [round(part / (loop_cpu or 1.0), 2) for part in loop_split],
        "not_allowed": len(seq_failures) + len(load_failures),
        "first_not_allowed": next(iter(seq_failures + load_failures), None),
        "goals": {k: str(goal) for k, goal in GOALS.items()},
        "goals_met": {
            "decide_http_per_s": GOALS["decide_http_per_s"].is_met(len(load_latency) / wall),
            "decide_http_p99_ms": GOALS["decide_http_p99_ms"].is_met(
                quantile_ms(seq_latency, 99)),
        },
        "workload": {"workers": WORKERS, "concurrency": plan.concurrency,
                     "loaded_seconds": plan.seconds, "loaded_requests": len(load_latency),
                     "sequential_requests": len(seq_latency),
                     "inprocess_decisions": len(baseline), "database": "postgresql",
                     "client": "asyncio HTTP/1.1, keep-alive, same machine"},
        "machine": harness.machine(load_at_start, versions=harness.versions(
            "fastapi", "starlette", "uvicorn", "cedarpy", "psycopg", "sqlalchemy")),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = harness.parser("POST /v1/decide over HTTP, 2 workers")
    harness.add_postgres(parser)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    options = parser.parse_args(argv)
    plan = harness.sized(options, full=FULL, quick=QUICK, smoke=SMOKE)
    if options.concurrency or options.seconds:
        plan = Plan(plan.inprocess, plan.sequential, options.seconds or plan.seconds,
                    options.concurrency or plan.concurrency)
    with harness.interruptible("the server stopped, its database dropped, its home removed"):
        report = {"mode": harness.mode(options), **run(plan, options.postgres)}
    for key in ("decide_http_per_s", "decide_http_p99_ms", "http_over_inprocess",
                "decide_http_p50_ms", "decide_http_p50_ms_loaded", "decide_http_p99_ms_loaded",
                "inprocess_decide_p50_ms", "inprocess_decide_p99_ms",
                "server_cpu_ms_per_decision_loaded", "server_loop_cpu_ms_per_decision_loaded",
                "postgres_cpu_ms_per_decision_loaded", "inprocess_cpu_ms_per_decision",
                "client_cpu_ms_per_request_loaded", "machine_cpu_ms_per_decision_loaded",
                "decide_http_per_s_cpu_bound", "not_allowed"):
        goal = report["goals"].get(key, "")
        print(f"{key:<40}{report[key]:>10}  {goal}")
    print(f"{'workload':<30}{report['workload']}")
    print(f"{'machine':<30}{report['machine']}")
    harness.print_json_line(report)
    if report["not_allowed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

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

The server's per-principal rate limit is lifted for the run (``server.toml``):
it is a policy, not a cost being measured. Prints a table, then one JSON
object on its last line; exits 1 if any answer was not an allow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey
from psycopg import sql

from proctor.config import Settings
from proctor.enforcement import ToolCall
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.proofs import public_jwk
from proctor.identity import Manifest, OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.server import ApiTokens

PG_ADMIN_URL = os.environ.get("PROCTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AGENT = "spiffe://acme.example/agent/coder"
TOOL = "git/git_log"
ARGS = {"repo_path": "/srv/repos/app"}
TARGET = "https://gateway.acme.example/mcp"
WORKERS = 2
GOALS = {"decide_http_per_s": ">= 1500", "decide_http_p99_ms": "<= 10"}


@dataclass(frozen=True)
class Plan:
    inprocess: int
    sequential: int
    seconds: float
    concurrency: int


QUICK = Plan(inprocess=100, sequential=200, seconds=3.0, concurrency=16)
FULL = Plan(inprocess=1000, sequential=2000, seconds=15.0, concurrency=32)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"proctor_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


@dataclass
class Setup:
    runtime: Runtime
    key: ec.EllipticCurvePrivateKey
    grant: IssuedGrant


def set_up(home: Path, pg_url: str) -> Setup:
    settings = Settings(home=home, database_url=pg_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    (home / "server.toml").write_text("rate_per_second = 1000000.0\nrate_burst = 1000000\n",
                                      encoding="utf-8")
    runtime = open_runtime(settings)
    ApiTokens(runtime.store, runtime.clock).ensure_admin()
    key = ec.generate_private_key(ec.SECP256R1())
    manifest = Manifest("claude-sonnet-4", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                        (TOOL,), "sha256:" + "c" * 64)
    runtime.registry.register(AGENT, owner="alice@acme.example", groups=["coding-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest)
    runtime.enforcer.refresh_principals()
    task = runtime.grants.start_task(AGENT, purpose="fix the build",
                                     on_behalf_of="alice@acme.example")
    grant = runtime.grants.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": TOOL, "args": {"repo_path": {"prefix": ["/srv/repos/"]}}}]}), ttl_seconds=900)
    return Setup(runtime, key, grant)


def workload_proof(key: ec.EllipticCurvePrivateKey, runtime: Runtime) -> str:
    """The agent's own-key proof (a JWS good for 5 minutes), sent as a bearer token."""
    at = int(runtime.clock.now().timestamp())
    claims = {"sub": AGENT, "iss": AGENT, "aud": runtime.registry.trust.audience, "iat": at,
              "exp": at + 300, "jti": secrets.token_hex(8)}
    return jwt.encode({"alg": "ES256"}, claims, ECKey.import_key(key), algorithms=["ES256"])


def proofs(setup: Setup, count: int) -> list[str]:
    now = setup.runtime.clock.now()
    return [make_proof(setup.key, setup.grant.token, method="tools/call", target=TARGET,
                       now=now) for _ in range(count)]


def inprocess(setup: Setup, count: int) -> list[int]:
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


def cpu_seconds(root: int) -> float:
    """User and system CPU time, from /proc, of process ``root`` and its children (the
    uvicorn workers): what the server spent, whatever else the machine ran."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1]
        except (OSError, ValueError):
            continue
        fields = rest.split()
        pid, ppid = int(entry.name), int(fields[1])
        if root in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def served(home: Path, pg_url: str) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {**os.environ, "PROCTOR_HOME": str(home), "PROCTOR_DATABASE_URL": pg_url,
           "PROCTOR_TRUST_DOMAIN": "acme.example"}
    process = subprocess.Popen(
        [sys.executable, "-m", "proctor.cli", "serve", "--port", str(port), "--workers",
         str(WORKERS)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit("proctor serve exited: "
                                 + (process.stderr.read().decode() if process.stderr else ""))
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("proctor serve was not ready within 60 s")
            time.sleep(0.2)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


class Requests:
    """Fresh requests, made as they are sent: a proof is good for 60 s, an own-key
    workload proof for 5 minutes, and the phases of a loaded machine last longer."""

    def __init__(self, setup: Setup, port: int, limit: int) -> None:
        self._setup = setup
        self._port = port
        self.limit = limit
        self.made = 0
        self._workload = workload_proof(setup.key, setup.runtime)
        self._workload_at = time.monotonic()

    def next(self) -> bytes | None:
        if self.made >= self.limit:
            return None
        self.made += 1
        if time.monotonic() - self._workload_at > 120:
            self._workload = workload_proof(self._setup.key, self._setup.runtime)
            self._workload_at = time.monotonic()
        proof = proofs(self._setup, 1)[0]
        body = json.dumps({"token": self._setup.grant.token, "proof": proof,
                           "call": {"tool": TOOL, "args": ARGS}, "target": TARGET},
                          separators=(",", ":")).encode()
        head = (f"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
                f"Authorization: Bearer {self._workload}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
        return head + body


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


# --- the run ------------------------------------------------------------------------------


def quantile_ms(samples: Sequence[int], q: float) -> float:
    ordered = sorted(samples)
    index = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[index] / 1e6


def run(plan: Plan, admin_url: str) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, postgres_database(admin_url) as pg_url:
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
                server_at, client_at = cpu_seconds(server), time.process_time()
                load_latency, load_failures, wall = asyncio.run(
                    drive(port, Requests(setup, port, 10**9), plan.concurrency, plan.seconds))
                server_cpu = cpu_seconds(server) - server_at
                client_cpu = time.process_time() - client_at
            cpu_at = time.process_time()
            baseline += inprocess(setup, plan.inprocess - plan.inprocess // 2)
            inproc_cpu += time.process_time() - cpu_at
        finally:
            setup.runtime.close()
    inproc_p50 = statistics.median(baseline) / 1e6
    http_p50 = quantile_ms(seq_latency, 0.5)
    return {
        "decide_http_per_s": round(len(load_latency) / wall, 1),
        "decide_http_p99_ms": round(quantile_ms(seq_latency, 0.99), 3),
        "http_over_inprocess": round(http_p50 / inproc_p50, 3),
        "decide_http_p50_ms": round(http_p50, 3),
        "decide_http_p50_ms_loaded": round(quantile_ms(load_latency, 0.5), 3),
        "decide_http_p99_ms_loaded": round(quantile_ms(load_latency, 0.99), 3),
        "inprocess_decide_p50_ms": round(inproc_p50, 3),
        "inprocess_decide_p99_ms": round(quantile_ms(baseline, 0.99), 3),
        # CPU per decision, counted by the kernel: less at the mercy of other work than
        # wall time; the in-process figure includes making each proof
        "server_cpu_ms_per_decision_loaded": round(server_cpu / len(load_latency) * 1e3, 3),
        "inprocess_cpu_ms_per_decision": round(inproc_cpu / len(baseline) * 1e3, 3),
        "client_cpu_ms_per_request_loaded": round(client_cpu / len(load_latency) * 1e3, 3),
        "not_allowed": len(seq_failures) + len(load_failures),
        "first_not_allowed": next(iter(seq_failures + load_failures), None),
        "goals": GOALS,
        "goals_met": {
            "decide_http_per_s": len(load_latency) / wall >= 1500,
            "decide_http_p99_ms": quantile_ms(seq_latency, 0.99) <= 10,
        },
        "workload": {"workers": WORKERS, "concurrency": plan.concurrency,
                     "loaded_seconds": plan.seconds, "loaded_requests": len(load_latency),
                     "sequential_requests": len(seq_latency),
                     "inprocess_decisions": len(baseline), "database": "postgresql",
                     "client": "asyncio HTTP/1.1, keep-alive, same machine"},
        "machine": {
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "versions": {p: metadata.version(p) for p in (
                "fastapi", "starlette", "uvicorn", "cedarpy", "psycopg", "sqlalchemy")},
            "load_average_1m": {"start": round(load_at_start, 2),
                                "end": round(os.getloadavg()[0], 2)},
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="POST /v1/decide over HTTP, 2 workers")
    parser.add_argument("--quick", action="store_true", help="fewer samples, under 30 s")
    parser.add_argument("--postgres", default=PG_ADMIN_URL,
                        help="an admin URL of the PostgreSQL server (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    options = parser.parse_args(argv)
    plan = QUICK if options.quick else FULL
    if options.concurrency or options.seconds:
        plan = Plan(plan.inprocess, plan.sequential, options.seconds or plan.seconds,
                    options.concurrency or plan.concurrency)
    report = {"mode": "quick" if options.quick else "full", **run(plan, options.postgres)}
    for key in ("decide_http_per_s", "decide_http_p99_ms", "http_over_inprocess",
                "decide_http_p50_ms", "decide_http_p50_ms_loaded", "decide_http_p99_ms_loaded",
                "inprocess_decide_p50_ms", "inprocess_decide_p99_ms",
                "server_cpu_ms_per_decision_loaded", "inprocess_cpu_ms_per_decision",
                "client_cpu_ms_per_request_loaded", "not_allowed"):
        goal = GOALS.get(key, "")
        print(f"{key:<30}{report[key]:>12}  {goal}")
    print(f"{'workload':<30}{report['workload']}")
    print(f"{'machine':<30}{report['machine']}")
    print(json.dumps(report))
    if report["not_allowed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

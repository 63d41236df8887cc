"""How much latency does the MCP gateway add to a tool call?

Usage::

    uv run python bench/gateway.py             # the full run, 2,000 calls per variant
    uv run python bench/gateway.py --quick     # under 30 s, 120 calls per variant
    uv run python bench/gateway.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

One run, one upstream: a small MCP server (``echo``, ``bench/echo_upstream.py``),
over stdio and over streamable HTTP. Each variant is timed against its baseline in
the same run, interleaved call by call (direct, then through the gateway, then
direct…), so drift on the machine hits both alike:

- stdio: an MCP client → the upstream directly, against the client →
  ``proctor mcp wrap`` → the same upstream (a separate process, as in use);
- HTTP: a client → the upstream over streamable HTTP, against the client →
  ``proctor gateway`` (``/mcp/bench``, bearer grant and a DPoP proof per call)
  → the same upstream over HTTP.

Through the gateway, each call is decided in full: grant (signature, proof,
nonce stored, use counted, revocation read), Cedar, audit event written,
output guard. ``decide_p50_ms`` is that decision alone (``Enforcer.decide_call``
in this process, same store), to show where the added time goes.

The proctor home is a temporary directory with the example policies and one
more for the ``bench`` upstream; SQLite unless ``--postgres`` names a server (a
``proctor_bench_*`` database is created and dropped).

``stdio_*_sleeps_{main,others}_per_call`` and ``http_gateway_sleeps_*``: how often each
proxy's main thread (its event loop) and its other threads went to sleep per call, from
the kernel's count of voluntary context switches: each sleep ends in a wake-up, and a
thread hop costs two (one thread wakes the other, which later wakes the first). A
blocking fsync is a sleep too, of whichever thread commits.

``*_concurrent_<n>_*`` (``n`` = 8 and 32): the same deployment with ``n`` calls in
flight at once, against the upstream directly and against a bare SDK relay under the
same concurrency (``bench/gateway_concurrent.py``): HTTP with ``n`` agents' sessions
(one grant each), stdio with ``n`` calls at once on the wrapper's one session.

Prints a table, then one JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import gateway_concurrent as concurrent
import harness
from echo_upstream import RELAY_MARKER, WAIT, client, relay_command, upstream_command
from gateway_concurrent import thread_sleeps
from grants_workload import postgres_commit, sqlite_commit
from harness import Goal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from proctor.clock import SystemClock  # noqa: E402
from proctor.config import Settings  # noqa: E402
from proctor.enforcement import ToolCall  # noqa: E402
from proctor.gateway import GrantAuth  # noqa: E402
from proctor.grants import GrantScope, IssuedGrant, make_proof  # noqa: E402
from proctor.grants.proofs import public_jwk  # noqa: E402
from proctor.identity import Manifest, OwnKeyProof  # noqa: E402
from proctor.runtime import Runtime, init_home, open_runtime  # noqa: E402

AGENT = "spiffe://acme.example/agent/coder"
OWNER = "alice@acme.example"
EXAMPLES = ROOT / "src" / "proctor" / "examples" / "policies"
BENCH_TOOLS = """
  - {server: bench, name: echo, sensitivity: internal,
     input_schema: {type: object, properties: {text: {type: string}}, required: [text]}}
"""
BENCH_POLICY = """
@id("bench-echo")
@reason("the benchmark's agent may echo")
permit (principal in Group::"coding-agents", action == Action::"tool:bench/echo", resource);
"""
GOALS = {"stdio_added_p50_ms": Goal("<=", 1.5), "stdio_added_p99_ms": Goal("<=", 3),
         "http_added_p50_ms": Goal("<=", 2), "stdio_added_vs_floor": Goal("<=", 1)}


# --- the deployment --------------------------------------------------------------------------

@dataclass
class Deployment:
    settings: Settings
    runtime: Runtime
    key: ec.EllipticCurvePrivateKey
    key_file: Path
    grant: IssuedGrant
    tmp: Path
    # one grant each for the concurrent case's HTTP agents (a task of its own each)
    grants: list[IssuedGrant]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PROCTOR_HOME": str(self.settings.home),
                "PROCTOR_DATABASE_URL": self.settings.database_url,
                "PROCTOR_TRUST_DOMAIN": "acme.example", "PROCTOR_GRANT": self.grant.token,
                "PYTHONPATH": str(ROOT / "src")}


def deploy(tmp: Path, database_url: str) -> Deployment:
    policies = tmp / "policies"
    shutil.copytree(EXAMPLES, policies)
    with (policies / "tools.yaml").open("a") as catalog:
        catalog.write(BENCH_TOOLS)
    (policies / "bench.cedar").write_text(BENCH_POLICY)
    home = tmp / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings, policies_from=policies)
    runtime = open_runtime(settings)
    key = ec.generate_private_key(ec.SECP256R1())
    digest = "sha256:" + "0" * 64
    runtime.registry.register(AGENT, owner=OWNER, groups=["coding-agents"],
                              proof=OwnKeyProof(public_jwk(key)),
                              manifest=Manifest(model_id="bench", weights_digest=digest,
                                                system_prompt_digest=digest, tools=(),
                                                dependency_lock_digest=digest))
    runtime.enforcer.refresh_principals()
    key_file = tmp / "agent.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    scope = GrantScope.from_json({"tools": [{"tool": "bench/*"}]})
    grant, *grants = (
        runtime.grants.issue(runtime.grants.start_task(AGENT, purpose="benchmark",
                                                       on_behalf_of=OWNER).id,
                             scope, ttl_seconds=900)
        for _ in range(1 + max(concurrent.LEVELS)))
    return Deployment(settings, runtime, key, key_file, grant, tmp, grants)


@contextmanager
def database(postgres: str | None, tmp: Path) -> Iterator[str]:
    """A SQLite file in ``tmp``, or a fresh database on the PostgreSQL server ``postgres``."""
    if postgres is None:
        yield f"sqlite:///{tmp / 'proctor.db'}"
        return
    with harness.postgres_database(postgres) as url:
        yield url


# --- measuring -------------------------------------------------------------------------------

async def interleaved(sessions: dict[str, ClientSession], calls: int, warmup: int,
                      cpu: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Milliseconds per call, variant by variant in rotating order; with ``cpu`` (variant
    → the process id of its proxy), also ``<variant>_cpu`` in milliseconds: the proxy
    process's CPU per call after the warm-up, from the kernel's count, and
    ``<variant>_sleeps``: its main thread's and its other threads' sleeps per call."""
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    cpu_at: dict[str, float] = {}
    sleeps_at: dict[str, tuple[int, int]] = {}
    for i in range(warmup + calls):
        if i == warmup:
            cpu_at = {name: harness.process_cpu_seconds(pid) for name, pid in (cpu or {}).items()}
            sleeps_at = {name: thread_sleeps(pid) for name, pid in (cpu or {}).items()}
        for name in harness.rotation(order, i):
            start = time.perf_counter_ns()
            with anyio.fail_after(WAIT):
                result = await sessions[name].call_tool("echo", {"text": "ping"})
            elapsed = (time.perf_counter_ns() - start) / 1e6
            if result.is_error:
                raise RuntimeError(f"{name}: the call failed")
            if i >= warmup:
                samples[name].append(elapsed)
    for name, pid in (cpu or {}).items():
        spent = harness.process_cpu_seconds(pid) - cpu_at[name]
        samples[f"{name}_cpu"] = [spent * 1e3 / calls]
        main, others = thread_sleeps(pid)
        samples[f"{name}_sleeps"] = [(main - sleeps_at[name][0]) / calls,
                                     (others - sleeps_at[name][1]) / calls]
    return samples


@asynccontextmanager
async def started(args: list[str], env: dict[str, str]) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)


async def serving(proc: subprocess.Popen[bytes], url: str) -> None:
    """Wait until ``proc`` answers on ``url``."""
    with anyio.fail_after(WAIT):
        async with httpx2.AsyncClient() as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args!r} exited")
                try:
                    await http.get(url)
                    return
                except httpx2.TransportError:
                    await anyio.sleep(0.1)


@dataclass(frozen=True)
class AtOnce:
    """The concurrent case's size: about ``calls`` calls per variant and level, in
    ``blocks`` blocks (each caller makes ``calls / (blocks * level)`` a block)."""

    calls: int
    blocks: int

    def per_caller(self, level: int) -> int:
        return max(1, self.calls // (self.blocks * level))


async def measure(deployment: Deployment, calls: int, warmup: int, at_once: AtOnce
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]],
                             dict[str, dict[str, float | None]]]:
    """Both transports, one call at a time then at once; the HTTP servers start while
    the stdio variants are measured (the HTTP relay once the upstream serves)."""
    upstream_port, port, relay_port = (harness.free_port() for _ in range(3))
    public = f"http://127.0.0.1:{port}"
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    relay_url = f"http://127.0.0.1:{relay_port}/mcp"
    config = deployment.tmp / "gateway.yaml"
    config.write_text(json.dumps({
        "gateway": {"public_url": public, "listen": f"127.0.0.1:{port}"},
        "upstreams": {"bench": {"url": upstream_url}}}))
    gateway = [sys.executable, "-m", "proctor.cli", "gateway", "--config", str(config)]
    wrap = ["-m", "proctor.cli", "mcp", "wrap", "--agent", "coder", "--server", "bench",
            "--key-file", str(deployment.key_file), "--", *upstream_command()]
    direct = StdioServerParameters(command=sys.executable, args=upstream_command()[1:])
    via = StdioServerParameters(command=sys.executable, args=wrap, env=deployment.env, cwd=ROOT)
    relay = StdioServerParameters(command=sys.executable, args=relay_command()[1:])
    rows: dict[str, dict[str, float | None]] = {}
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(started(upstream_command(upstream_port),
                                                           dict(os.environ)))
        proxy = await stack.enter_async_context(started(gateway, deployment.env))
        async with client(stdio_client(direct)) as a, client(stdio_client(via)) as b, \
                client(stdio_client(relay)) as c:
            # the HTTP relay connects to the upstream as it starts
            await serving(upstream, upstream_url)
            relay_http = await stack.enter_async_context(started(
                relay_command(relay_port, upstream_url), dict(os.environ)))
            proxies = {"gateway": harness.child_pid(" mcp wrap "),
                       "relay": harness.child_pid(RELAY_MARKER)}
            stdio = await interleaved({"direct": a, "gateway": b, "relay": c}, calls, warmup,
                                      proxies)
            for level in concurrent.LEVELS:
                tallies = await concurrent.at_once(
                    {"direct": [a] * level, "gateway": [b] * level, "relay": [c] * level},
                    at_once.per_caller(level), at_once.blocks, proxies)
                rows[f"stdio_{level}"] = concurrent.figures(tallies)
        await serving(proxy, f"{public}/.well-known/oauth-protected-resource")
        await serving(relay_http, relay_url)
        http = await measure_http(stack, deployment, calls, warmup, at_once,
                                  {"direct": upstream_url, "gateway": f"{public}/mcp/bench",
                                   "relay": relay_url},
                                  {"gateway": proxy.pid, "relay": relay_http.pid}, rows)
    return stdio, http, rows


async def measure_http(stack: AsyncExitStack, deployment: Deployment, calls: int, warmup: int,
                       at_once: AtOnce, urls: dict[str, str], proxies: dict[str, int],
                       rows: dict[str, dict[str, float | None]]) -> dict[str, list[float]]:
    """The HTTP variants: one session each, one call at a time (the relay not among
    them, as before); then ``n`` sessions each at once (``rows``)."""
    async def session(url: str, grant: IssuedGrant | None) -> ClientSession:
        auth = None if grant is None else GrantAuth(grant.token, deployment.key, SystemClock())
        http = await stack.enter_async_context(httpx2.AsyncClient(timeout=WAIT, auth=auth))
        return await stack.enter_async_context(client(streamable_http_client(url,
                                                                             http_client=http)))

    first = {name: await session(url, deployment.grant if name == "gateway" else None)
             for name, url in urls.items()}
    http = await interleaved({"direct": first["direct"], "gateway": first["gateway"]},
                             calls, warmup, {"gateway": proxies["gateway"]})
    most = max(concurrent.LEVELS)
    agents = {name: [await session(url, grant if name == "gateway" else None)
                     for grant in deployment.grants[:most]]
              for name, url in urls.items()}
    for level in concurrent.LEVELS:
        tallies = await concurrent.at_once({name: sessions[:level]
                                            for name, sessions in agents.items()},
                                           at_once.per_caller(level), at_once.blocks, proxies)
        rows[f"http_{level}"] = concurrent.figures(tallies)
    return http


def measure_decision(deployment: Deployment, calls: int) -> tuple[list[float], float]:
    """``Enforcer.decide_call`` alone, in this process, on the same store: milliseconds
    per call, and the process's CPU per call in milliseconds (the audit writer's thread
    included; making the proofs not)."""
    runtime, grant = deployment.runtime, deployment.grant
    target = "mcp://bench/echo"
    samples: list[float] = []
    cpu = 0.0
    for _ in range(calls):
        proof = make_proof(deployment.key, grant.token, method="tools/call", target=target,
                           now=runtime.clock.now())
        cpu_at, start = time.process_time(), time.perf_counter_ns()
        verdict = runtime.enforcer.decide_call(grant.token, proof, ToolCall(
            "bench/echo", {"text": "ping"}, target=target))
        samples.append((time.perf_counter_ns() - start) / 1e6)
        cpu += time.process_time() - cpu_at
        if not verdict.is_allowed:
            raise RuntimeError(f"the decision was {verdict.code}")
    return samples, cpu * 1e3 / calls


def figures(samples: dict[str, list[float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, values in samples.items():
        if name.endswith("_cpu"):
            out[f"{name}_ms_per_call"] = round(values[0], 3)
            continue
        if name.endswith("_sleeps"):
            out[f"{name}_main_per_call"] = round(values[0], 2)
            out[f"{name}_others_per_call"] = round(values[1], 2)
            continue
        out[f"{name}_p50_ms"] = round(statistics.median(values), 3)
        out[f"{name}_p99_ms"] = round(harness.nearest_rank(values, 99), 3)
    out["added_p50_ms"] = round(out["gateway_p50_ms"] - out["direct_p50_ms"], 3)
    out["added_p99_ms"] = round(out["gateway_p99_ms"] - out["direct_p99_ms"], 3)
    if "relay_p50_ms" in out:
        out["relay_added_p50_ms"] = round(out["relay_p50_ms"] - out["direct_p50_ms"], 3)
    return out


def durable_commit_p50_ms(url: str, tmp: Path, count: int) -> float:
    """A bare durable commit on the bench's database (SQLite: a file beside it, WAL and
    synchronous=FULL as the store opens it), median of ``count``."""
    with ExitStack() as stack:
        if url.startswith("sqlite"):
            write = stack.enter_context(sqlite_commit(tmp / "bare-commits.db"))
        else:
            write, _ = stack.enter_context(postgres_commit(url))
        samples = []
        for _ in range(count):
            start = time.perf_counter_ns()
            write(None)
            samples.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(samples)


def is_met(figure: object, goal: Goal) -> bool:
    return isinstance(figure, int | float) and goal.is_met(figure)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__.split("\n\n")[0], quick_help="under 30 s")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to use")
    args = parser.parse_args(argv)
    calls, warmup = harness.sized(args, full=(2000, 100), quick=(120, 20), smoke=(30, 5))
    at_once = harness.sized(args, full=AtOnce(2000, 5), quick=AtOnce(128, 2),
                            smoke=AtOnce(1, 1))
    load = harness.load_average()
    with tempfile.TemporaryDirectory() as tmp, database(args.postgres, Path(tmp)) as url:
        deployment = deploy(Path(tmp), url)
        try:
            stdio_samples, http_samples, rows = anyio.run(measure, deployment, calls, warmup,
                                                          at_once)
            stdio, http = figures(stdio_samples), figures(http_samples)
            decision, decide_cpu_ms = measure_decision(deployment, calls)
            commit_ms = durable_commit_p50_ms(url, Path(tmp), calls)
        finally:
            deployment.runtime.close()
    # the floor of stdio_added_p50_ms: a bare SDK pass-through, plus one durable commit;
    # on a busy machine the pass-through's median can come out below the direct calls'
    # (a negative time added), which counts as nothing, not as less than the commit
    floor = max(stdio["relay_added_p50_ms"], 0.0) + commit_ms
    result = {
        "stdio_added_p50_ms": stdio["added_p50_ms"], "stdio_added_p99_ms": stdio["added_p99_ms"],
        "http_added_p50_ms": http["added_p50_ms"],
        "stdio_added_vs_floor": round(stdio["added_p50_ms"] / floor, 3) if floor > 0 else None,
        "stdio_relay_added_p50_ms": stdio["relay_added_p50_ms"],
        "durable_commit_p50_ms": round(commit_ms, 3),
        "decide_p50_ms": round(statistics.median(decision), 3),
        # CPU per call, from the kernel's counts: what each proxy process spent, whatever
        # else the machine ran; the decision's share of it is decide_cpu_ms
        "stdio_gateway_cpu_ms_per_call": stdio["gateway_cpu_ms_per_call"],
        "stdio_relay_cpu_ms_per_call": stdio["relay_cpu_ms_per_call"],
        # how often the wrapper's threads went to sleep per call (each one a wake-up):
        # its event loop's thread, and the rest (the audit writer's, anyio's workers)
        "stdio_gateway_sleeps_main_per_call": stdio["gateway_sleeps_main_per_call"],
        "stdio_gateway_sleeps_others_per_call": stdio["gateway_sleeps_others_per_call"],
        "stdio_relay_sleeps_main_per_call": stdio["relay_sleeps_main_per_call"],
        "stdio_relay_sleeps_others_per_call": stdio["relay_sleeps_others_per_call"],
        "http_gateway_cpu_ms_per_call": http["gateway_cpu_ms_per_call"],
        # the HTTP gateway's too: its event loop's thread, and the rest
        "http_gateway_sleeps_main_per_call": http["gateway_sleeps_main_per_call"],
        "http_gateway_sleeps_others_per_call": http["gateway_sleeps_others_per_call"],
        "decide_cpu_ms": round(decide_cpu_ms, 3),
        # n calls at once (bench/gateway_concurrent.py): calls/s and added latency through
        # each gateway, against the bare SDK relay at the same concurrency
        **{key: value for name, row in rows.items()
           for key, value in concurrent.headline(name, row).items()},
        "goals": {key: str(goal) for key, goal in GOALS.items()},
        "stdio": stdio, "http": http, "concurrent": rows, "calls": calls,
        "mode": harness.mode(args),
        "backend": "postgresql" if args.postgres else "sqlite",
        "machine": harness.machine(load, **harness.versions("mcp")),
    }
    print(f"{'':10}{'direct p50':>12}{'gateway p50':>13}{'added p50':>11}{'added p99':>11}")
    for name, row in (("stdio", stdio), ("http", http)):
        print(f"{name:10}{row['direct_p50_ms']:>10.3f}ms{row['gateway_p50_ms']:>11.3f}ms"
              f"{row['added_p50_ms']:>9.3f}ms{row['added_p99_ms']:>9.3f}ms")
    result["goals_met"] = {key: is_met(result[key], goal) for key, goal in GOALS.items()}
    print(f"the decision alone (Enforcer.decide_call): p50 {result['decide_p50_ms']:.3f} ms")
    print(f"a bare SDK stdio pass-through adds {result['stdio_relay_added_p50_ms']:.3f} ms, "
          f"a durable commit takes {result['durable_commit_p50_ms']:.3f} ms")
    print(f"CPU per call: stdio wrapper {result['stdio_gateway_cpu_ms_per_call']:.3f} ms, "
          f"bare pass-through {result['stdio_relay_cpu_ms_per_call']:.3f} ms, HTTP gateway "
          f"{result['http_gateway_cpu_ms_per_call']:.3f} ms; the decision alone "
          f"{result['decide_cpu_ms']:.3f} ms")
    print(f"thread sleeps per call (main / others): stdio wrapper "
          f"{result['stdio_gateway_sleeps_main_per_call']:.2f} / "
          f"{result['stdio_gateway_sleeps_others_per_call']:.2f}, bare pass-through "
          f"{result['stdio_relay_sleeps_main_per_call']:.2f} / "
          f"{result['stdio_relay_sleeps_others_per_call']:.2f}, HTTP gateway "
          f"{result['http_gateway_sleeps_main_per_call']:.2f} / "
          f"{result['http_gateway_sleeps_others_per_call']:.2f}")
    for line in concurrent.table(rows):
        print(line)
    harness.print_json_line(result)


if __name__ == "__main__":
    main()

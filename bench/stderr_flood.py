"""What one upstream's stderr flood costs another agent's calls in the same gateway.

Usage::

    uv run python bench/stderr_flood.py            # 6 rounds of 1,000 calls per variant
    uv run python bench/stderr_flood.py --quick    # 4 rounds of 300
    uv run python bench/stderr_flood.py --smoke    # 2 rounds of 20

``proctor gateway`` is one process for every agent's sessions, and each stdio
upstream's stderr is read and redacted in it (``proctor.gateway.stderr``). Here the
process relays one upstream's stderr (``UpstreamStderr``, the real output guard's
redaction, the log ``/dev/null``) while a coroutine makes another agent's "calls":
two hops to a worker thread, each the output guard's scan of a small result (what a
gateway call does beside its decision and its upstream's answer). Two variants,
alternated round by round (``harness.rotation``):

- ``quiet``: the upstream writes nothing to its stderr;
- ``flood``: it writes 1,000-line chunks of 34-byte lines to its stderr as fast as
  it can, from before the calls start to after they end.

CPU is the process's per call (every thread: the relay's and its writer's
included), wall the call's. Prints a line per variant, then one JSON object on its
last line: the medians over rounds and ``flood_over_quiet`` (their ratio).
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import harness

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from proctor.gateway.stderr import StderrRedaction, UpstreamStderr  # noqa: E402
from proctor.oversight.guard import OutputGuard  # noqa: E402

STARTED = b"started\n"
QUIET = "import os, sys; os.write(1, b'started\\n'); sys.stdin.read()"
FLOOD = """
import os
chunk = b"flood line of the stderr upstream\\n" * 1000
os.write(1, b"started\\n")
while True:
    os.write(2, chunk)
"""
RESULT = {"content": [{"type": "text", "text": "hello from the echo upstream " * 20}]}


async def one_round(variant: str, calls: int) -> tuple[float, float]:
    """The process's CPU and the wall time per call, in ms, with the upstream of ``variant``."""
    token = secrets.token_urlsafe(24)
    guard = OutputGuard(known_secrets=[token])
    with Path(os.devnull).open("w", encoding="utf-8") as log:
        stderr = UpstreamStderr(log, StderrRedaction([token], guard))
        upstream = subprocess.Popen(
            [sys.executable, "-c", FLOOD if variant == "flood" else QUIET],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr.child_end())
        stderr.spawned()
        assert upstream.stdout is not None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(stderr.relay)
                # the flood under way before the calls are timed
                assert await anyio.to_thread.run_sync(upstream.stdout.readline) == STARTED
                for _ in range(20):
                    await anyio.to_thread.run_sync(guard.scan, RESULT)
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    await anyio.to_thread.run_sync(guard.scan, RESULT)
                    await anyio.to_thread.run_sync(guard.scan, RESULT)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                upstream.kill()
                await stderr.finish()
        finally:
            upstream.kill()
            upstream.wait()
            upstream.stdout.close()
            if upstream.stdin is not None:
                upstream.stdin.close()
    return cpu * 1000 / calls, wall * 1000 / calls


def main(argv: Sequence[str] | None = None) -> None:
    options = harness.parser(__doc__.split("\n\n")[0]).parse_args(
        sys.argv[1:] if argv is None else list(argv))
    rounds, calls = harness.sized(options, full=(6, 1000), quick=(4, 300), smoke=(2, 20))
    load = harness.load_average()
    samples: dict[str, list[tuple[float, float]]] = {"quiet": [], "flood": []}
    for index in range(rounds):
        for variant in harness.rotation(list(samples), index):
            samples[variant].append(anyio.run(one_round, variant, calls))
    report: dict[str, Any] = {"bench": "stderr_flood", "mode": harness.mode(options),
                              "rounds": rounds, "calls_per_round": calls}
    for variant, got in samples.items():
        cpu = statistics.median(c for c, _ in got)
        wall = statistics.median(w for _, w in got)
        report[f"{variant}_cpu_ms_per_call"] = round(cpu, 3)
        report[f"{variant}_wall_ms_per_call"] = round(wall, 3)
        print(f"{variant:6} cpu {cpu:8.3f} ms/call  wall {wall:8.3f} ms/call")
    report["flood_over_quiet"] = {
        kind: round(report[f"flood_{kind}_ms_per_call"] / report[f"quiet_{kind}_ms_per_call"], 2)
        for kind in ("cpu", "wall")}
    report["machine"] = harness.machine(load)
    harness.print_json_line(report)


if __name__ == "__main__":
    main()

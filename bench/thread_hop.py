"""What the hop of a gateway's decision off its event loop costs, five ways.

Usage::

    uv run python bench/thread_hop.py            # 3,000 calls per variant
    uv run python bench/thread_hop.py --quick    # 600
    uv run python bench/thread_hop.py --smoke    # 30

This bench decides the enforcer bench's allowed call for a held grant
(``Enforcer.decide_held_call``, SQLite) from a coroutine under ``anyio.run``, five ways
alternated call by call:

- ``anyio``: ``anyio.to_thread.run_sync`` (``Enforcer.decide_held_call_async``, the
  stdio wrapper's way until 7 December);
- ``own_thread``: one long-lived thread fed by a ``queue.SimpleQueue``, its answer set on
  an asyncio future with ``call_soon_threadsafe``, with what ``run_sync`` guarantees
  kept: the caller's context variables (trace spans) copied into the thread, and a
  cancelled caller waiting for the decision to finish (a shielded wait);
- ``inline``: no hop, the decision on the event loop's own thread (which then waits
  for the write: nothing else on the loop runs meanwhile, so this is a floor, not a
  design);
- ``on_loop``: ``Enforcer.decide_held_call_on_loop``: the decision's CPU on the
  loop, its write handed to the audit writer's thread, which answers an asyncio
  future once committed; ``on_loop_share`` is the share of its calls (and of
  ``on_loop_led``'s) decided that way (the rest went whole to a worker thread: a view
  was cold);
- ``on_loop_led``: the same on a loop that leads its own writes (``AuditLog.lead_on``,
  the stdio wrapper's way since 7 December, afternoon): nobody else writing, the
  write is committed on the loop's thread, no hop at all.

CPU is the process's per call (every thread: the audit writer's included), wall the
call's. Prints a line per variant, then one JSON object on its last line:
``hop_cpu_ms`` / ``hop_p50_ms`` (median per call by variant) and each way's cost over
``inline``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

import harness
from api_workload import set_up
from enforcer_workload import CALL, sqlite_url

FULL, QUICK, SMOKE = 3_000, 600, 30
WARMUP = 50

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context,
             Callable[..., Any], tuple[Any, ...]]


class OwnThread:
    """One long-lived thread running what it is handed, in the caller's context."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="decisions", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, context, fn, args = job
            try:
                result, error = context.run(fn, *args), None
            except Exception as exc:
                result, error = None, exc
            loop.call_soon_threadsafe(_settle, future, result, error)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), fn, args))
        with anyio.CancelScope(shield=True):  # as run_sync: the decision is waited for
            result = await future
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def measure(calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        setup = set_up(home, sqlite_url(home))
        runtime = setup.runtime
        held = runtime.grants.hold(setup.grant.token, setup.key)
        decide = runtime.enforcer.decide_held_call
        own = OwnThread()
        not_allowed = 0

        def check(verdict: Any) -> None:
            nonlocal not_allowed
            not_allowed += not verdict.is_allowed

        async def via_anyio() -> None:
            check(await anyio.to_thread.run_sync(decide, held, CALL))

        async def via_own_thread() -> None:
            check(await own.run(decide, held, CALL))

        async def inline() -> None:
            check(decide(held, CALL))

        async def on_loop() -> None:
            check(await runtime.enforcer.decide_held_call_on_loop(held, CALL))

        async def on_loop_led() -> None:
            runtime.audit.lead_on(asyncio.get_running_loop())
            try:
                check(await runtime.enforcer.decide_held_call_on_loop(held, CALL))
            finally:
                runtime.audit.lead_on(None)

        variants: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("anyio", via_anyio), ("own_thread", via_own_thread), ("inline", inline),
            ("on_loop", on_loop), ("on_loop_led", on_loop_led)]
        cpu: dict[str, list[float]] = {name: [] for name, _ in variants}
        wall: dict[str, list[float]] = {name: [] for name, _ in variants}
        try:
            for _ in range(WARMUP):
                for _, call in variants:
                    await call()
            enforcer = runtime.enforcer
            on_loop_at, on_thread_at = enforcer.decided_on_loop, enforcer.decided_on_thread
            for index in range(calls):
                turn = index % len(variants)
                for name, call in variants[turn:] + variants[:turn]:
                    cpu_at, wall_at = time.process_time(), time.perf_counter()
                    await call()
                    cpu[name].append((time.process_time() - cpu_at) * 1e3)
                    wall[name].append((time.perf_counter() - wall_at) * 1e3)
            on_loop_share = (enforcer.decided_on_loop - on_loop_at) / max(1, (
                enforcer.decided_on_loop - on_loop_at + enforcer.decided_on_thread
                - on_thread_at))
        finally:
            own.close()
            runtime.close()
    cpu_ms = {name: round(statistics.median(v), 4) for name, v in cpu.items()}
    p50_ms = {name: round(statistics.median(v), 4) for name, v in wall.items()}
    return {
        "calls": calls, "hop_cpu_ms": cpu_ms, "hop_p50_ms": p50_ms,
        "anyio_hop_cpu_ms": round(cpu_ms["anyio"] - cpu_ms["inline"], 4),
        "own_thread_hop_cpu_ms": round(cpu_ms["own_thread"] - cpu_ms["inline"], 4),
        "own_thread_vs_anyio_cpu": round(cpu_ms["own_thread"] / cpu_ms["anyio"], 4),
        "on_loop_hop_cpu_ms": round(cpu_ms["on_loop"] - cpu_ms["inline"], 4),
        "on_loop_vs_anyio_cpu": round(cpu_ms["on_loop"] / cpu_ms["anyio"], 4),
        "on_loop_led_hop_cpu_ms": round(cpu_ms["on_loop_led"] - cpu_ms["inline"], 4),
        "on_loop_led_vs_on_loop_p50": round(p50_ms["on_loop_led"] / p50_ms["on_loop"], 4),
        "on_loop_share": round(on_loop_share, 4),
        "not_allowed": not_allowed,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = harness.parser(
        "A decision's hop off the event loop: anyio, own thread, none, on the loop, led there")
    options = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    calls = harness.sized(options, full=FULL, quick=QUICK, smoke=SMOKE)
    load = harness.load_average()
    report: dict[str, Any] = {"mode": harness.mode(options), **anyio.run(measure, calls)}
    report["machine"] = harness.machine(load)
    for name, cpu_ms in report["hop_cpu_ms"].items():
        print(f"{name:<12} cpu {cpu_ms:.3f} ms  p50 {report['hop_p50_ms'][name]:.3f} ms")
    print(f"load {os.getloadavg()[0]:.2f}")
    harness.print_json_line(report)
    if report["not_allowed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

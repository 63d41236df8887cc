"""The gateway benchmark's concurrent case: many calls in flight at once.

``bench/gateway.py`` times one call at a time; here ``n`` callers call at once, each
making its calls one after the other, and every variant is run the same way in
blocks of rotating order (direct, through the gateway, through the bare SDK relay,
then the next block one further along), so drift on the machine hits all alike:

- HTTP: ``n`` agents' sessions at once (``n`` grants, one MCP session each), to the
  upstream directly, through ``proctor gateway``, and through a bare SDK relay over
  streamable HTTP (``echo_upstream.py --serve-http-relay``);
- stdio: one agent with ``n`` calls in flight on its one session (``proctor mcp wrap``
  serves one agent), to the upstream directly, through the wrapper, and through the
  bare SDK relay over stdio.

For each variant: calls per second (all calls of its blocks over their wall time) and
each call's latency; for the proxies, their CPU and thread sleeps per call (as the
sequential case counts them: a hand-off to another thread is two).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from mcp import ClientSession

import harness
from echo_upstream import WAIT

LEVELS = (8, 32)


def thread_sleeps(pid: int) -> tuple[int, int]:
    """How often process ``pid``'s main thread and its other threads went to sleep so
    far (the kernel's voluntary context switches): each sleep ends in a wake-up, the
    cost of a thread hop (bench/thread_hop.py)."""
    main = others = 0
    for entry in os.scandir(f"/proc/{pid}/task"):
        try:
            status = Path(entry.path, "status").read_text("ascii")
        except OSError:  # a thread that ended meanwhile
            continue
        line = next(x for x in status.splitlines() if x.startswith("voluntary_ctxt_switches"))
        count = int(line.split()[1])
        if int(entry.name) == pid:
            main += count
        else:
            others += count
    return main, others


@dataclass
class Tally:
    """One variant's calls at one level: each call's milliseconds, the calls and the
    wall seconds of its blocks, and (for a proxy) its process's CPU and sleeps."""

    samples_ms: list[float] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    sleeps: tuple[int, int] = (0, 0)


async def block(callers: Sequence[ClientSession], calls: int, samples: list[float]) -> float:
    """Every caller at once, each making ``calls`` calls in turn; the block's wall seconds."""

    async def caller(session: ClientSession) -> None:
        for _ in range(calls):
            start = time.perf_counter_ns()
            result = await session.call_tool("echo", {"text": "ping"})
            samples.append((time.perf_counter_ns() - start) / 1e6)
            if result.is_error:
                raise RuntimeError("a concurrent call failed")

    began = time.perf_counter()
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            for session in callers:
                group.start_soon(caller, session)
    return time.perf_counter() - began


async def at_once(variants: Mapping[str, Sequence[ClientSession]], calls: int, blocks: int,
                  proxies: Mapping[str, int]) -> dict[str, Tally]:
    """``blocks`` blocks of each variant in rotating order, every caller making ``calls``
    calls a block, after a warm-up block of one call each; ``proxies``: variant → its
    proxy's pid."""
    tallies = {name: Tally() for name in variants}
    order = list(variants)
    for index in range(blocks + 1):
        for name in harness.rotation(order, index):
            tally, pid = tallies[name], proxies.get(name)
            samples: list[float] = []
            cpu_at = harness.process_cpu_seconds(pid) if pid else 0.0
            sleeps_at = thread_sleeps(pid) if pid else (0, 0)
            seconds = await block(variants[name], calls if index else 1, samples)
            if index == 0:
                continue  # the warm-up block
            tally.samples_ms += samples
            tally.calls += len(samples)
            tally.seconds += seconds
            if pid:
                tally.cpu_seconds += harness.process_cpu_seconds(pid) - cpu_at
                main, others = thread_sleeps(pid)
                tally.sleeps = (tally.sleeps[0] + main - sleeps_at[0],
                                tally.sleeps[1] + others - sleeps_at[1])
    return tallies


def figures(tallies: Mapping[str, Tally]) -> dict[str, float | None]:
    """Per variant ``<v>_per_s``, ``<v>_p50_ms``, ``<v>_p99_ms`` (and for a proxy its CPU
    and sleeps per call); then ``added_*`` (the gateway's, over direct), the relay's
    added p50, and the same-run ratios to the relay."""
    out: dict[str, float] = {}
    for name, tally in tallies.items():
        out[f"{name}_per_s"] = round(tally.calls / tally.seconds, 1)
        out[f"{name}_p50_ms"] = round(statistics.median(tally.samples_ms), 3)
        out[f"{name}_p99_ms"] = round(harness.nearest_rank(tally.samples_ms, 99), 3)
        if name != "direct":
            out[f"{name}_cpu_ms_per_call"] = round(tally.cpu_seconds * 1e3 / tally.calls, 3)
            out[f"{name}_sleeps_main_per_call"] = round(tally.sleeps[0] / tally.calls, 2)
            out[f"{name}_sleeps_others_per_call"] = round(tally.sleeps[1] / tally.calls, 2)
    for name in ("gateway", "relay"):
        out[f"{name}_added_p50_ms"] = round(out[f"{name}_p50_ms"] - out["direct_p50_ms"], 3)
        out[f"{name}_added_p99_ms"] = round(out[f"{name}_p99_ms"] - out["direct_p99_ms"], 3)
    out["per_s_vs_relay"] = round(out["gateway_per_s"] / out["relay_per_s"], 3)
    # the gateway's added p50 over the relay's; a relay that came out at or below direct
    # (a busy machine) leaves it undefined
    relay_added = out["relay_added_p50_ms"]
    return {**out, "added_p50_vs_relay": (round(out["gateway_added_p50_ms"] / relay_added, 3)
                                          if relay_added > 0 else None)}


def headline(name: str, row: Mapping[str, float | None]) -> dict[str, float | None]:
    """The top-level JSON keys of one row (``http_8``: ``http_concurrent_8_*``)."""
    transport, level = name.split("_")
    prefix = f"{transport}_concurrent_{level}"
    return {
        f"{prefix}_per_s": row["gateway_per_s"],
        f"{prefix}_added_p50_ms": row["gateway_added_p50_ms"],
        f"{prefix}_added_p99_ms": row["gateway_added_p99_ms"],
        f"{prefix}_relay_per_s": row["relay_per_s"],
        f"{prefix}_relay_added_p50_ms": row["relay_added_p50_ms"],
        f"{prefix}_direct_per_s": row["direct_per_s"],
        f"{prefix}_per_s_vs_relay": row["per_s_vs_relay"],
        f"{prefix}_added_p50_vs_relay": row["added_p50_vs_relay"],
        f"{prefix}_gateway_cpu_ms_per_call": row["gateway_cpu_ms_per_call"],
        f"{prefix}_gateway_sleeps_others_per_call": row["gateway_sleeps_others_per_call"],
    }


def table(rows: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """The printed lines of the concurrent case, one per transport and level."""
    lines = [f"{'at once':14}{'direct/s':>10}{'gateway/s':>11}{'relay/s':>9}"
             f"{'added p50':>11}{'added p99':>11}{'relay added':>13}"]
    for name, row in rows.items():
        lines.append(f"{name:14}{row['direct_per_s']:>10.0f}{row['gateway_per_s']:>11.0f}"
                     f"{row['relay_per_s']:>9.0f}{row['gateway_added_p50_ms']:>9.3f}ms"
                     f"{row['gateway_added_p99_ms']:>9.3f}ms{row['relay_added_p50_ms']:>11.3f}ms")
    return lines

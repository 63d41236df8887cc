"""The gateway benchmark runs end to end; its figures are for docs/benchmarks.md, not CI."""

from __future__ import annotations

import pytest

from tests.bench.quick import run_quick

FIGURES = ("stdio_added_p50_ms", "stdio_added_p99_ms", "http_added_p50_ms", "decide_p50_ms",
           "stdio_relay_added_p50_ms", "durable_commit_p50_ms", "stdio_added_vs_floor",
           "stdio_gateway_cpu_ms_per_call", "stdio_relay_cpu_ms_per_call",
           "http_gateway_cpu_ms_per_call", "decide_cpu_ms")


@pytest.mark.slow
def test_smoke_run_calls_the_same_upstream_both_ways_and_ends_with_a_json_line() -> None:
    run = run_quick("gateway.py")
    assert run.returncode == 0, run.stderr
    for key in FIGURES:
        value = run.report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
    for transport in ("stdio", "http"):
        figures = run.report[transport]
        assert figures["direct_p50_ms"] > 0 and figures["gateway_p50_ms"] > 0
        # every call through the gateway was decided, so it cannot be faster than direct
        assert figures["gateway_p50_ms"] > figures["direct_p50_ms"]
    assert run.report["calls"] == 30
    # the floors are measured: a bare pass-through is a process hop, never free
    assert run.report["stdio"]["relay_p50_ms"] > run.report["stdio"]["direct_p50_ms"]
    assert run.report["durable_commit_p50_ms"] > 0
    # read from the kernel's counts (in ticks: a smoke run's few calls may round to 0)
    for key in ("stdio_gateway_cpu_ms_per_call", "stdio_relay_cpu_ms_per_call",
                "http_gateway_cpu_ms_per_call", "decide_cpu_ms"):
        assert run.report[key] >= 0, key
    assert set(run.report["goals_met"]) == set(run.report["goals"])

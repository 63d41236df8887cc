"""The gateway benchmark runs end to end; its figures are for docs/benchmarks.md, not CI.

The smoke run is the bench's ``main(["--smoke"])`` in this process (the client side of
every variant, its deployment and its decisions); what it measures still runs as
processes of their own, as in use: ``proctor mcp wrap``, ``proctor gateway``, the bare
pass-through and the upstreams. The bench's own start as a process is not its subject
(``bench/gateway.py --quick`` is run as a process to record its figures)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from tests.bench.quick import bench_module

FIGURES = ("stdio_added_p50_ms", "stdio_added_p99_ms", "http_added_p50_ms", "decide_p50_ms",
           "stdio_relay_added_p50_ms", "durable_commit_p50_ms", "stdio_added_vs_floor",
           "stdio_gateway_cpu_ms_per_call", "stdio_relay_cpu_ms_per_call",
           "http_gateway_cpu_ms_per_call", "decide_cpu_ms",
           "stdio_gateway_sleeps_main_per_call", "stdio_gateway_sleeps_others_per_call",
           "stdio_relay_sleeps_main_per_call", "stdio_relay_sleeps_others_per_call",
           *(f"{transport}_concurrent_{level}_{figure}"
             for transport in ("stdio", "http") for level in (8, 32)
             for figure in ("per_s", "added_p50_ms", "added_p99_ms", "relay_per_s",
                            "relay_added_p50_ms", "direct_per_s", "per_s_vs_relay",
                            "gateway_cpu_ms_per_call", "gateway_sleeps_others_per_call")))


@pytest.mark.slow
def test_smoke_run_calls_the_same_upstream_both_ways_and_ends_with_a_json_line() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # its processes' stderr stays the test's
        bench_module("gateway.py").main(["--smoke"])
    printed = out.getvalue().strip().splitlines()
    assert printed, "the bench printed nothing"
    report = json.loads(printed[-1])
    assert isinstance(report, dict) and report.get("mode") == "smoke", report
    for key in FIGURES:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
    for transport in ("stdio", "http"):
        figures = report[transport]
        assert figures["direct_p50_ms"] > 0 and figures["gateway_p50_ms"] > 0
        # every call through the gateway was decided, so it cannot be faster than direct
        assert figures["gateway_p50_ms"] > figures["direct_p50_ms"]
    assert report["calls"] == 30
    # the floors are measured (whether the pass-through's median is above the direct one
    # is a matter of timing: 30 calls on a loaded machine can put it either side)
    assert report["stdio"]["relay_p50_ms"] > 0
    assert report["stdio"]["relay_p99_ms"] >= report["stdio"]["relay_p50_ms"]
    assert report["durable_commit_p50_ms"] > 0
    # read from the kernel's counts (in ticks: a smoke run's few calls may round to 0)
    for key in ("stdio_gateway_cpu_ms_per_call", "stdio_relay_cpu_ms_per_call",
                "http_gateway_cpu_ms_per_call", "decide_cpu_ms"):
        assert report[key] >= 0, key
    # each call wakes the wrapper's event loop at least once: the agent's line arrives
    assert report["stdio_gateway_sleeps_main_per_call"] >= 1
    assert set(report["goals_met"]) == set(report["goals"])
    # the concurrent case: every variant made its calls at each level, all at once
    assert set(report["concurrent"]) == {"stdio_8", "stdio_32", "http_8", "http_32"}
    for name, row in report["concurrent"].items():
        for variant in ("direct", "gateway", "relay"):
            assert row[f"{variant}_per_s"] > 0 and row[f"{variant}_p50_ms"] > 0, (name, variant)
        ratio = row["added_p50_vs_relay"]
        assert ratio is None or isinstance(ratio, float), name

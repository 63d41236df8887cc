"""The gateway benchmark runs end to end; its figures are for docs/benchmarks.md, not CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gateway.py"
FIGURES = ("stdio_added_p50_ms", "stdio_added_p99_ms", "http_added_p50_ms", "decide_p50_ms")


@pytest.mark.slow
def test_quick_run_calls_the_same_upstream_both_ways_and_ends_with_a_json_line() -> None:
    # generous bound: the run takes about 30 s alone, but CI machines are shared
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=BENCH.parents[1], check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in FIGURES:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
    for transport in ("stdio", "http"):
        figures = report[transport]
        assert figures["direct_p50_ms"] > 0 and figures["gateway_p50_ms"] > 0
        # every call through the gateway was decided, so it cannot be faster than direct
        assert figures["gateway_p50_ms"] > figures["direct_p50_ms"]
    assert report["calls"] == 120

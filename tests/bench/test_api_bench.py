"""The API benchmark runs end to end against a real ``proctor serve`` with two workers;
its figures are for docs/benchmarks.md, not CI, so nothing is asserted about timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api.py"
FIGURES = ("decide_http_per_s", "decide_http_p99_ms", "http_over_inprocess",
           "inprocess_decide_p50_ms")


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_run_ends_with_a_json_line_and_every_answer_an_allow(postgres_server: str) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=BENCH.parents[1], check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    report = json.loads(lines[-1])
    for key in FIGURES:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, done.stderr)
        assert value > 0, key
    assert report["workload"]["workers"] == 2
    assert report["not_allowed"] == 0, report
    assert done.returncode == 0, done.stderr

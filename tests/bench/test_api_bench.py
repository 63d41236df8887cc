"""The API benchmark runs end to end against a real ``proctor serve`` with two workers;
its figures are for docs/benchmarks.md, not CI, so nothing is asserted about timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api.py"
PG_ADMIN_URL = os.environ.get("PROCTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
FIGURES = ("decide_http_per_s", "decide_http_p99_ms", "http_over_inprocess",
           "inprocess_decide_p50_ms")


def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_run_ends_with_a_json_line_and_every_answer_an_allow() -> None:
    if not IN_CI and not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable (PROCTOR_TEST_PG_URL)")
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

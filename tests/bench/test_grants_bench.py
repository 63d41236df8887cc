"""The grants benchmark runs end to end; its figures are for docs/benchmarks.md, not CI.

It measures PostgreSQL too. Outside CI a missing server skips this test; with
``CI=true`` the benchmark runs anyway and fails loudly, because CI must measure
both backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "grants.py"
PG_ADMIN_URL = os.environ.get("PROCTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
FIGURES = ("grants_issued_per_s", "check_warm_p50_us", "pop_check_vs_raw_verify", "revoke_100k_s")


def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_run_ends_with_a_json_line_holding_the_four_figures() -> None:
    if not IN_CI and not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable (PROCTOR_TEST_PG_URL)")
    # generous bound: the run takes well under 30 s alone, but CI machines are shared
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=BENCH.parents[1], check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    report = json.loads(lines[-1])
    assert isinstance(report, dict)
    for key in FIGURES:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, done.stderr)
        assert value > 0, key
    assert report["all_descendants_revoked"] is True, report["revocation"]
    assert done.returncode == 0, done.stderr

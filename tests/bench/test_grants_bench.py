"""The grants benchmark runs end to end; its figures are for docs/benchmarks.md, not CI.

It measures PostgreSQL too. Outside CI a missing server skips this test; with
``CI=true`` the benchmark runs anyway and fails loudly, because CI must measure
both backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "grants.py"
FIGURES = ("grants_issued_per_s", "check_warm_p50_us", "pop_check_vs_raw_verify", "revoke_100k_s")


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_run_ends_with_a_json_line_holding_the_four_figures(postgres_server: str) -> None:
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

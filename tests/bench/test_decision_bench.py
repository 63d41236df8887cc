"""The decision benchmark runs end to end; its figures are for docs/benchmarks.md, not CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "decision.py"
FIGURES = ("ratio_small_vs_cedarpy", "speedup_1000_vs_unsliced", "p99_over_p50_1000", "load_1000_s")


@pytest.mark.slow
def test_quick_run_ends_with_a_json_line_holding_the_four_figures() -> None:
    # generous bound: the run takes well under 30 s alone, but CI machines are shared
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=BENCH.parents[1], check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    for key in FIGURES:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert value > 0, key

"""The decision benchmark runs end to end; its figures are for docs/benchmarks.md, not CI."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke

FIGURES = ("ratio_small_vs_cedarpy", "speedup_1000_vs_unsliced", "p99_over_p50_1000", "load_1000_s")


@pytest.mark.slow
def test_smoke_run_ends_with_a_json_line_holding_the_four_figures() -> None:
    run = run_smoke("decision.py")
    assert run.returncode == 0, run.stderr
    assert_positive_figures(run, FIGURES)

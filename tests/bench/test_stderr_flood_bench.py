"""The stderr flood benchmark runs end to end; its figures are for docs/benchmarks.md,
not CI, so nothing is asserted about timings."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke


@pytest.mark.slow
def test_smoke_run_reports_another_agents_calls_with_a_quiet_and_a_flooding_upstream() -> None:
    run = run_smoke("stderr_flood.py")
    assert run.returncode == 0, run.stderr
    assert_positive_figures(run, [f"{variant}_{kind}_ms_per_call" for variant in ("quiet", "flood")
                                  for kind in ("cpu", "wall")])
    assert set(run.report["flood_over_quiet"]) == {"cpu", "wall"}
    assert run.report["rounds"] == 2 and run.report["calls_per_round"] == 20

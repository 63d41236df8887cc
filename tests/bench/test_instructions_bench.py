"""The instructions bench runs end to end without valgrind (the count under valgrind takes
minutes: docs/benchmarks.md); its figures are for docs/benchmarks.md, not CI, so nothing
is asserted about timings."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke


@pytest.mark.slow
def test_smoke_run_decides_every_call_and_reports_its_cpu_per_decision() -> None:
    run = run_smoke("instructions.py")
    assert run.returncode == 0, run.stderr
    assert run.report["decisions"] == 20  # each one allowed, or the run would have ended
    assert_positive_figures(run, ("decide_cpu_ms", "user_ms_per_decision"))
    assert run.report["voluntary_switches_per_decision"] >= 0

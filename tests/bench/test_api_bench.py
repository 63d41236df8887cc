"""The API benchmark runs end to end against a real ``proctor serve`` with two workers;
its figures are for docs/benchmarks.md, not CI, so nothing is asserted about timings."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke

FIGURES = ("decide_http_per_s", "decide_http_p99_ms", "http_over_inprocess",
           "inprocess_decide_p50_ms")


@pytest.mark.slow
@pytest.mark.postgres
def test_smoke_run_ends_with_a_json_line_and_every_answer_an_allow(postgres_server: str) -> None:
    run = run_smoke("api.py")
    assert_positive_figures(run, FIGURES)
    assert run.report["workload"]["workers"] == 2
    assert run.report["not_allowed"] == 0, run.report
    assert run.returncode == 0, run.stderr

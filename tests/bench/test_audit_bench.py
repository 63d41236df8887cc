"""The audit benchmark runs end to end; its figures are for docs/benchmarks.md, not CI."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke

FIGURES = ("events_per_s_sqlite", "verify_events_per_s", "baseline_sqlite_batch100_rows_per_s",
           "baseline_sqlite_single_row_commits_per_s", "cpu_us_per_event_sqlite")


@pytest.mark.slow
def test_smoke_run_ends_with_a_json_line_holding_the_figures() -> None:
    run = run_smoke("audit.py")
    assert run.returncode == 0, run.stderr
    assert_positive_figures(run, FIGURES)

"""The enforcer benchmark runs end to end on SQLite and PostgreSQL; its figures are for
docs/benchmarks.md, not CI, so nothing is asserted about timings."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke

FIGURES = ("decide_cpu_ms", "decide_cpu_vs_floor", "decide_p50_ms", "decide_per_s_concurrent",
           "decide_per_s_concurrent_postgres", "decide_per_s_concurrent_vs_cpu",
           "decide_cpu_ms_10k_vs_1", "agent_change_ms_10k", "revocation_seen_p99_ms")


@pytest.mark.slow
@pytest.mark.postgres
def test_smoke_run_reports_every_figure_of_the_hot_path_and_every_call_allowed(
        postgres_server: str) -> None:
    run = run_smoke("enforcer.py")
    assert run.returncode == 0, run.stderr
    assert_positive_figures(run, FIGURES)
    assert run.report["not_allowed"] == 0, run.report
    assert run.report["workload"]["fleet"] == 1_000  # the smoke run's; 10,000 otherwise
    # the second process refused each revoked grant as revoked, not for another reason
    assert run.report["revocation_seen_codes"] == ["grant_revoked"]
    assert set(run.report["goals_met"]) == set(run.report["goals"])

"""The grants benchmark runs end to end; its figures are for docs/benchmarks.md, not CI.

It measures PostgreSQL too. Outside CI a missing server skips this test; with
``CI=true`` the benchmark runs anyway and fails loudly, because CI must measure
both backends.
"""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke

FIGURES = ("grants_issued_per_s", "check_warm_p50_us", "pop_check_vs_raw_verify", "revoke_100k_s")


@pytest.mark.slow
@pytest.mark.postgres
def test_smoke_run_ends_with_a_json_line_holding_the_four_figures(postgres_server: str) -> None:
    run = run_smoke("grants.py")
    assert_positive_figures(run, FIGURES)
    assert run.report["all_descendants_revoked"] is True, run.report["revocation"]
    assert run.returncode == 0, run.stderr

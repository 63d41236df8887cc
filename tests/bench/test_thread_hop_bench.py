"""The thread-hop benchmark runs end to end; its figures are for docs/benchmarks.md, not
CI, so nothing is asserted about timings."""

from __future__ import annotations

import pytest

from tests.bench.quick import assert_positive_figures, run_smoke


@pytest.mark.slow
def test_smoke_run_reports_each_way_of_deciding_off_the_loop_and_every_call_allowed() -> None:
    run = run_smoke("thread_hop.py")
    assert run.returncode == 0, run.stderr
    assert set(run.report["hop_cpu_ms"]) == {"anyio", "own_thread", "inline", "on_loop",
                                               "on_loop_led"}
    assert_positive_figures(run, ("own_thread_vs_anyio_cpu", "on_loop_vs_anyio_cpu",
                                  "on_loop_led_vs_on_loop_p50"))
    assert 0 < run.report["on_loop_share"] <= 1
    assert all(v > 0 for v in run.report["hop_cpu_ms"].values())
    assert run.report["not_allowed"] == 0
    assert run.report["calls"] == 30

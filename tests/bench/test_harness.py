"""The harness every bench measures with: rotation, quantiles, the machine, PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import harness


def test_a_percentile_is_the_smallest_sample_with_that_share_at_or_below_it() -> None:
    hundred = list(range(100, 0, -1))
    assert harness.nearest_rank(hundred, 99) == 99  # not the maximum: one sample is above
    assert harness.nearest_rank(hundred, 50) == 50
    assert harness.nearest_rank(list(range(1, 121)), 99) == 119  # rank ceil(118.8)
    assert harness.nearest_rank([7.5], 99) == 7.5


def test_each_round_starts_one_variant_further_along() -> None:
    names = ["a", "b", "c"]
    assert [harness.rotation(names, r) for r in (-1, 0, 1, 2, 3)] == [
        ["c", "a", "b"], ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_measure_calls_every_variant_each_round_on_that_rounds_input_and_refills_by_block(
) -> None:
    calls: list[tuple[str, int]] = []
    refills: list[int] = []
    variants: dict[str, harness.Variant] = {
        "a": (lambda i: calls.append(("a", i)), range(5)),
        "b": (lambda i: calls.append(("b", i)), range(5)),
    }

    figures = harness.measure(variants, rounds=8, warmup=3, block=4,
                              refill=lambda: refills.append(len(calls)))

    # rounds -3..7: input r % 5, "a" first in even rounds, "b" first in odd ones
    expected = []
    for r in range(-3, 8):
        pair = [("a", r % 5), ("b", r % 5)]
        expected += pair if r % 2 == 0 else pair[::-1]
    assert calls == expected
    # before the first round (-3), then before rounds 0 and 4
    assert refills == [0, 6, 14]
    assert set(figures) == {"a", "b"}
    for latency in figures.values():
        assert 0 < latency.p50_us <= latency.p99_us
        assert latency.per_s == pytest.approx(1e6 / latency.mean_us)


def test_the_machine_names_the_load_at_start_and_end_after_what_the_bench_adds() -> None:
    described = harness.machine(1.234, versions=harness.versions("psycopg"))
    assert list(described) == ["platform", "cpu_count", "python", "versions", "load_average_1m"]
    assert described["versions"] == {"psycopg": psycopg.__version__}
    assert described["load_average_1m"]["start"] == 1.23
    assert described["load_average_1m"]["end"] >= 0


def test_a_latency_reports_only_the_figures_asked_for_rounded() -> None:
    latency = harness.Latency.of([1_234, 2_345, 3_456], [1_000, 2_000, 3_000])
    assert latency.as_json("p50_us", "cpu_p99_us", digits=1) == {"p50_us": 2.3,
                                                                 "cpu_p99_us": 3.0}


@pytest.mark.postgres
def test_a_bench_database_exists_during_the_run_and_is_dropped_after(
        postgres_server: str) -> None:
    with harness.postgres_database(postgres_server) as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("proctor_bench_")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    with psycopg.connect(postgres_server) as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (name,)).fetchone() is None


def test_an_unreachable_server_ends_the_run_with_its_address_and_no_password() -> None:
    url = f"postgresql://bench:hunter2@127.0.0.1:{harness.free_port()}/postgres"
    with pytest.raises(SystemExit) as ended, harness.postgres_database(url):
        pytest.fail("no database can be made on a server nobody listens on")
    message = str(ended.value)
    assert "is not reachable" in message and "127.0.0.1" in message
    assert "hunter2" not in message


def test_a_goal_is_shown_as_written_and_met_only_on_its_side_of_the_limit() -> None:
    assert [str(harness.Goal(">=", 3000)), str(harness.Goal("<", 0.5))] == [">= 3000", "< 0.5"]
    assert harness.Goal("<=", 1.3).is_met(1.3) and not harness.Goal("<=", 1.3).is_met(1.31)
    assert not harness.Goal("<", 1).is_met(1) and harness.Goal(">", 1).is_met(1.01)


def test_a_run_is_full_quick_or_smoke_and_picks_its_plan_so() -> None:
    parsed = harness.parser("a bench")
    picked = {mode: harness.sized(parsed.parse_args(args), full=1, quick=2, smoke=3)
              for mode, args in (("full", []), ("quick", ["--quick"]), ("smoke", ["--smoke"]))}
    assert picked == {"full": 1, "quick": 2, "smoke": 3}
    assert [harness.mode(parsed.parse_args(a)) for a in ([], ["--quick"], ["--smoke"])] == [
        "full", "quick", "smoke"]
    with pytest.raises(SystemExit):  # one or the other
        parsed.parse_args(["--quick", "--smoke"])

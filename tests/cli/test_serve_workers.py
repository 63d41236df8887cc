"""How many workers `proctor serve` starts when `--workers` is not given."""

from __future__ import annotations

import pytest

from proctor.cli.serve import default_workers


@pytest.mark.parametrize(("cpus", "expected"), [(None, 1), (1, 1), (2, 2), (16, 2)])
def test_postgresql_gets_a_second_worker_only_with_a_second_cpu(
        monkeypatch: pytest.MonkeyPatch, cpus: int | None, expected: int) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert default_workers(is_embedded=False) == expected


def test_the_embedded_default_runs_one_process_however_many_cpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_workers(is_embedded=True) == 1

"""Running a bench as its tests do: ``--smoke`` (every path, the fewest samples), in a
subprocess from the repository's root, its last line read as the JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class QuickRun:
    """A finished ``--smoke`` run: its exit status, its stderr and its report."""

    returncode: int
    stderr: str
    report: dict[str, Any]


def run_quick(script: str) -> QuickRun:
    """Run ``bench/<script> --smoke``; fails the test, with its stderr, if it printed nothing
    or its last line is not a JSON object, or does not say it was the smoke run."""
    # generous bound: a run takes seconds alone, but CI machines are shared
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    report = json.loads(lines[-1])
    assert isinstance(report, dict), done.stderr
    assert report.get("mode") == "smoke", (report, done.stderr)
    return QuickRun(done.returncode, done.stderr, report)


def assert_positive_figures(run: QuickRun, keys: Iterable[str]) -> None:
    """Every figure named is a number (not a boolean) above zero."""
    for key in keys:
        value = run.report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, run.stderr)
        assert value > 0, key

"""Running a bench as its tests do: ``--smoke`` (every path, the fewest samples), in a
subprocess from the repository's root, its last line read as the JSON report; or a bench
module imported in the test's process, for what does not need a run of its own."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def bench_module(script: str) -> ModuleType:
    """``bench/<script>`` imported in this process, once (as ``bench_<name>``, with
    ``bench/`` on the path for its ``harness``): its ``main(argv)`` is the command line
    without a new interpreter."""
    name = f"bench_{Path(script).stem}"
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / script)
    assert spec is not None and spec.loader is not None, script
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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

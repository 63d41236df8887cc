"""Running a bench as its tests do: its ``main(["--smoke"])`` (every path, the fewest
samples) in the test's process, its last line read as the JSON report. What a bench
measures still runs as processes of their own where it does in use (a server, a second
process watching revocations); the bench's own start as a process is not its subject, and
would cost an interpreter and every import again (``--quick`` runs as a process record the
figures of docs/benchmarks.md)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
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


def run_smoke(script: str, *args: str) -> QuickRun:
    """Run ``bench/<script>``'s ``main(["--smoke", *args])`` in this process; fails the
    test, with what it wrote to stderr, if it printed nothing or its last line is not a
    JSON object, or does not say it was the smoke run. Its exit status is what ``main``
    returned or gave ``sys.exit`` (a message there is written to its stderr, as Python
    does)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            returned = bench_module(script).main(["--smoke", *args])
        except SystemExit as exc:
            returned = exc.code
        if isinstance(returned, str):
            print(returned, file=sys.stderr)
    returncode = returned if isinstance(returned, int) else 0 if returned is None else 1
    lines = out.getvalue().strip().splitlines()
    assert lines, err.getvalue()
    report = json.loads(lines[-1])
    assert isinstance(report, dict), err.getvalue()
    assert report.get("mode") == "smoke", (report, err.getvalue())
    return QuickRun(returncode, err.getvalue(), report)


def assert_positive_figures(run: QuickRun, keys: Iterable[str]) -> None:
    """Every figure named is a number (not a boolean) above zero."""
    for key in keys:
        value = run.report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, run.stderr)
        assert value > 0, key

"""The order the suite runs in: the longest modules first on every worker, so that the
workers finish together.

pytest-xdist's ``worksteal`` hands each worker an equal share of the collection, in order
(the first worker the first share), and lets an idle worker take the later half of
another's queue. A long test collected last would start on one worker while the other has
nothing left to take: the suite waits for it alone. So the modules are weighed, the heavy
ones are dealt out to the shares heaviest first (each to the lightest share so far), and
each share starts with its heavy modules and is filled up with the light ones in their
collected order. What is left to steal at the end is light.

``tests/durations.json`` holds each test's measured seconds (setup, call and teardown;
only the tests of a second or more). A module's weight is the sum of its tests'; the
tests of a module stay together and in their own order (a module-scoped fixture is set
up once per worker, as before). Modules that share a session fixture worth sharing are
one unit (``TOGETHER``), so that one worker runs them all. Record the file again after a
quiet run that changed what is long::

    PROCTOR_RECORD_DURATIONS=tests/durations.json scripts/test
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).resolve().parent / "durations.json"
#: What is recorded: the tests at least this long (the others weigh next to nothing).
RECORDED_SECONDS = 1.0
#: Modules scheduled as one unit with another: they share one expensive session fixture,
#: which a worker sets up once for all of them.
TOGETHER = {"tests/e2e/test_demo_compliance.py": "tests/e2e/test_demo.py"}


def unit_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return TOGETHER.get(module, module)


def share_sizes(count: int, workers: int) -> list[int]:
    """How many tests each worker is first handed, as xdist's ``worksteal`` deals them."""
    sizes = []
    for i in range(workers):
        size = count // (workers - i)
        sizes.append(size)
        count -= size
    return sizes


def deal(items: list[pytest.Item], seconds: dict[str, float], workers: int) -> None:
    """Reorder ``items`` in place so that each worker's first share starts with its part of
    the heavy units (heaviest first) and ends with light units in their collected order.
    The order is the same on every worker (xdist requires it)."""
    weight: dict[str, float] = defaultdict(float)
    for nodeid, value in seconds.items():
        weight[unit_of(nodeid)] += value
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(unit_of(item.nodeid), []).append(item)
    heavy = sorted((u for u in units if weight.get(u, 0.0) > 0), key=lambda u: -weight[u])
    light = [item for u, members in units.items() if u not in weight for item in members]
    sizes = share_sizes(len(items), max(workers, 1))
    shares: list[list[pytest.Item]] = [[] for _ in sizes]
    loads = [0.0 for _ in sizes]
    for unit in heavy:
        open_shares = [i for i, s in enumerate(shares) if len(s) + len(units[unit]) <= sizes[i]]
        target = min(open_shares or range(len(shares)), key=lambda i: loads[i])
        shares[target].extend(units[unit])
        loads[target] += weight[unit]
    for i, share in enumerate(shares):
        while len(share) < sizes[i] and light:
            share.append(light.pop(0))
    items[:] = [item for share in shares for item in share] + light


def workers() -> int:
    """How many workers share the run: xdist tells its workers; 1 without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): float(v) for k, v in data.items()}


class Recorder:
    """Sums each test's phases from the reports (on the controller, the workers' too) and
    writes the tests of ``RECORDED_SECONDS`` or more to ``path`` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        long = {k: round(v, 1) for k, v in sorted(self.seconds.items())
                if v >= RECORDED_SECONDS}
        self.path.write_text(json.dumps(long, indent=0) + "\n", encoding="utf-8")

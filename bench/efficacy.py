"""What proctor stops: AgentDojo's user tasks and prompt injections, replayed through
``Enforcer.decide_call`` with real grants, proofs, Cedar policies and audit.

Usage::

    # AgentDojo is in the `efficacy` dependency group, not a dependency of proctor
    uv run --group efficacy python bench/efficacy.py          # workspace, banking, slack: 2 min
    uv run --group efficacy python bench/efficacy.py --quick  # a fixed subset (CI), under 1 min
    uv run --group efficacy python bench/efficacy.py --suite banking   # any AgentDojo suite
                                        # that has a policy directory examples/agentdojo/NAME
    uv run --group efficacy python bench/efficacy.py --suite banking --write-tools
    uv run --group efficacy python bench/efficacy.py --suite banking --write-grants

No model is involved: the ground-truth calls are deterministic, and so is the
result. Prints a table, then one JSON object on its last line (``utility``,
``asr``, ``approval_rate`` per suite and overall). Exits 2, with one line, when a
suite, its policy directory, a tool's schema or a task's grant is missing. The
method and the recorded full run are in docs/efficacy.md.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the harness lives in examples/agentdojo
    sys.path.insert(0, str(ROOT))

from examples.agentdojo import suites  # noqa: E402
from examples.agentdojo.catalog import catalog_entries, write_catalog  # noqa: E402
from examples.agentdojo.deployment import Deployment  # noqa: E402
from examples.agentdojo.grants import load_grants, write_grants  # noqa: E402
from examples.agentdojo.replay import attack, run_user_task  # noqa: E402
from examples.agentdojo.report import SuiteReport, bounds, overall, print_table  # noqa: E402

import harness  # noqa: E402

POLICIES = ROOT / "examples" / "agentdojo"
DEFAULT_SUITES = ("workspace", "banking", "slack")
# --quick: every QUICK_STEP-th user task and every other replayable injection task;
# --smoke (the tests): every SMOKE_STEP-th user task and SMOKE_INJECTION_STEP-th injection
QUICK_STEP = 4
QUICK_INJECTION_STEP = 2
SMOKE_STEP = 8
SMOKE_INJECTION_STEP = 4


def policy_dir(name: str) -> Path:
    """The suite's policy directory; raises if there is none (nothing is guessed)."""
    directory = POLICIES / name
    if not directory.is_dir() or not any(directory.rglob("*.cedar")):
        raise suites.HarnessError(f"no policy directory for suite `{name}`: expected "
                                  f"`examples/agentdojo/{name}/` with its *.cedar files")
    return directory


def run_suite(name: str, *, steps: tuple[int, int], home: Path) -> SuiteReport:
    """Replay every ``steps[0]``-th user task of the suite, each against every
    ``steps[1]``-th replayable injection task."""
    suite = suites.load_suite(name)
    directory = policy_dir(name)
    tools = catalog_entries(directory, name, suites.tool_definitions(suite))
    tasks = suites.user_tasks(suite)
    grants = load_grants(directory, tasks)
    # An injection task whose ground truth is empty (AgentDojo judges it on the final
    # environment only) has no call to replay: it is reported, never counted as stopped.
    everything = suites.injection_tasks(suite)
    injections = [i for i in everything if i.calls]
    without = tuple(i.id for i in everything if not i.calls)
    tasks, injections = tasks[::steps[0]], injections[::steps[1]]
    deployment = Deployment(home / name, directory, tools, agent=f"{name}-assistant",
                            owner=f"user@{name}.example", approver=f"approver@{name}.example",
                            groups=["assistants"])
    try:
        results = [run_user_task(deployment, name, task, grants[task.id]) for task in tasks]
        print(f"{name}: {len(results)} user tasks replayed", file=sys.stderr)
        attacks = [attack(deployment, name, task, grants[task.id], injection)
                   for task in tasks for injection in injections]
        print(f"{name}: {len(attacks)} attacks replayed", file=sys.stderr)
        events = deployment.audit_events()
    finally:
        deployment.close()
    return SuiteReport(name, results, attacks, bounds(tasks, injections), events,
                       without, len(tasks) * len(without))


def write(name: str, *, tools: bool, grants: bool) -> None:
    suite = suites.load_suite(name)
    directory = POLICIES / name
    directory.mkdir(parents=True, exist_ok=True)
    if tools:
        print(f"wrote {write_catalog(directory, name, suites.tool_definitions(suite))}")
    if grants:
        print(f"wrote {write_grants(directory, suites.user_tasks(suite))}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser("AgentDojo replayed through proctor",
                            quick_help=f"every {QUICK_STEP}th user task, every "
                            f"{QUICK_INJECTION_STEP}nd injection task only")
    parser.add_argument("--suite", action="append", dest="names", metavar="NAME",
                        help="a suite (repeatable; default: workspace, banking, slack)")
    parser.add_argument("--write-tools", action="store_true",
                        help="write the suite's tools.yaml schemas from AgentDojo and stop")
    parser.add_argument("--write-grants", action="store_true",
                        help="draft the suite's grants.yaml by the rule and stop")
    options = parser.parse_args(argv)
    names = options.names or list(DEFAULT_SUITES)
    try:
        if options.write_tools or options.write_grants:
            for name in names:
                write(name, tools=options.write_tools, grants=options.write_grants)
            return 0
        with tempfile.TemporaryDirectory(prefix="proctor-efficacy-") as tmp:
            steps = harness.sized(options, full=(1, 1), quick=(QUICK_STEP, QUICK_INJECTION_STEP),
                                  smoke=(SMOKE_STEP, SMOKE_INJECTION_STEP))
            reports = [run_suite(name, steps=steps, home=Path(tmp)) for name in names]
    except suites.HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = {r.suite: r.as_json() for r in reports}
    summary = overall(reports)
    print_table({**rows, "overall": summary})
    document: dict[str, Any] = {
        "mode": harness.mode(options),
        "agentdojo": metadata.version("agentdojo"),
        "benchmark_version": suites.BENCHMARK_VERSION,
        "suites": rows,
        "overall": summary,
    }
    harness.print_json_line(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())

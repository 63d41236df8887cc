"""What one allowed decision costs in instructions: a measure the machine's load does not move.

Usage::

    uv run python bench/instructions.py --quick      # CPU per decision, no valgrind, < 30 s
    uv run python bench/instructions.py --valgrind   # instructions per decision (3-6 minutes)
    uv run python bench/instructions.py --smoke      # every path, the fewest decisions

On a shared machine the CPU time of ``Enforcer.decide_call`` moves by 5-30 % with what
else runs (caches, frequency, another process's threads); a change of a few percent is
lost in it. Instructions executed are not: valgrind counts them (``cachegrind
--cache-sim=no``; there are no hardware counters in a VM). This bench decides the
enforcer bench's allowed call (``enforcer_workload``: the API bench's agent, own P-256
key, its grant for ``git/git_log``, SQLite, a fresh proof per call) in a process of its
own under valgrind, twice: once with ``n1`` decisions after the warm-up and once with
``n2``; both make the same ``n2`` proofs (in blocks, just before they are used: a proof is
good for 60 s, and valgrind runs 10-50 times slower), so ``(I(n2) - I(n1)) / (n2 - n1)`` is
one decision's instructions, the process's start, imports, home and proofs taken out.
Every thread counts (the audit writer's share of the write included); ``PYTHONMALLOC=malloc``
(valgrind sees each allocation) and ``PYTHONHASHSEED=0`` make two runs alike. The pair is
run ``--repeat`` times; ``spread`` is (max - min) / min of the per-decision figures.

Without ``--valgrind`` (``--quick``, ``--smoke``, the tests), the same decisions run in
this process and the figure is the median process CPU per decision, as
``bench/enforcer.py`` measures it (noisy here; the instruction count is the figure to
compare commits by).

``--src DIR`` puts another checkout's ``src`` first on the measured process's path (the
bisection of docs/benchmarks.md: this driver, any commit's code).

Prints a line per run, then one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import proctor
from api_workload import proofs
from enforcer_workload import decide, home_on, sqlite_url

HERE = Path(__file__).resolve().parent
BLOCK = 25  # proofs made at once, just before they are used (good for 60 s)


@dataclass(frozen=True)
class Plan:
    """``warmup`` decisions, then ``n2`` proofs made: under valgrind ``n1`` of them decided
    in one process and all in the other, ``repeat`` times; without, all in this one."""

    warmup: int
    n1: int
    n2: int
    repeat: int = 1


VALGRIND = Plan(warmup=100, n1=100, n2=400, repeat=2)
IN_PROCESS = {"full": Plan(100, 0, 2000), "quick": Plan(100, 0, 2000), "smoke": Plan(5, 0, 20)}


def decisions(count: int, of: int, warmup: int) -> dict[str, Any]:
    """In this process: a fresh home, ``warmup`` decisions, then ``of`` proofs made in blocks
    and the first ``count`` of them decided. The process CPU of each decision, in ns."""
    cpu_ns: list[int] = []
    usage = {"user_s": 0.0, "system_s": 0.0, "voluntary_switches": 0, "involuntary_switches": 0}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        setup = home_on(home, sqlite_url(home))
        try:
            for at in range(0, warmup, BLOCK):
                for proof in proofs(setup, min(BLOCK, warmup - at)):
                    decide(setup, proof)
            clock = time.process_time_ns
            for at in range(0, of, BLOCK):
                block = proofs(setup, min(BLOCK, of - at))
                for index, proof in enumerate(block):
                    if at + index >= count:
                        break
                    before, started = resource.getrusage(resource.RUSAGE_SELF), clock()
                    decide(setup, proof)
                    cpu_ns.append(clock() - started)
                    _add_usage(usage, before, resource.getrusage(resource.RUSAGE_SELF))
        finally:
            setup.runtime.close()
    return {"decisions": len(cpu_ns), "cpu_ns": cpu_ns, "usage": usage}


def _add_usage(usage: dict[str, Any], before: Any, after: Any) -> None:
    """What the process spent between ``before`` and ``after`` (``getrusage``), added."""
    usage["user_s"] += after.ru_utime - before.ru_utime
    usage["system_s"] += after.ru_stime - before.ru_stime
    usage["voluntary_switches"] += after.ru_nvcsw - before.ru_nvcsw
    usage["involuntary_switches"] += after.ru_nivcsw - before.ru_nivcsw


def started(count: int, plan: Plan, src: str | None, out: Path) -> subprocess.Popen[str]:
    """One process deciding ``count`` calls (of ``plan.n2`` proofs) under valgrind."""
    env = {**os.environ, "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(src).resolve()), *filter(None, [env.get("PYTHONPATH")])])
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
               f"--cachegrind-out-file={out}", sys.executable, str(HERE / "instructions.py"),
               "--run", str(count), "--of", str(plan.n2), "--warmup", str(plan.warmup)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def counted(process: subprocess.Popen[str], count: int, out: Path, src: str | None) -> int:
    """The instructions the process of :func:`started` executed, once it ended."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the measured process failed ({process.returncode}):\n"
                         f"{stderr[-2000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    if report["decisions"] != count:
        raise SystemExit(f"{report['decisions']} decisions made, {count} asked")
    if src is not None and Path(report["proctor"]) != Path(src).resolve():
        raise SystemExit(f"the measured process imported proctor from {report['proctor']}")
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"no summary in {out.name}")


def under_valgrind(plan: Plan, src: str | None) -> dict[str, Any]:
    """``plan.repeat`` pairs, the two processes of a pair side by side (2 cores)."""
    per_decision: list[float] = []
    runs: list[dict[str, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(plan.repeat):
            outs = Path(tmp) / f"low{r}.out", Path(tmp) / f"high{r}.out"
            pair = started(plan.n1, plan, src, outs[0]), started(plan.n2, plan, src, outs[1])
            low = counted(pair[0], plan.n1, outs[0], src)
            high = counted(pair[1], plan.n2, outs[1], src)
            per_decision.append((high - low) / (plan.n2 - plan.n1))
            runs.append({"n1": plan.n1, "instructions_n1": low,
                         "n2": plan.n2, "instructions_n2": high})
            print(f"run {r + 1}: {per_decision[-1]:,.0f} instructions per decision "
                  f"({low:,} at {plan.n1}, {high:,} at {plan.n2})", flush=True)
    return {
        "instructions_per_decision": round(statistics.median(per_decision)),
        "instructions_per_decision_runs": [round(x) for x in per_decision],
        "spread": round((max(per_decision) - min(per_decision)) / min(per_decision), 5),
        "runs": runs,
    }


def in_process(plan: Plan) -> dict[str, Any]:
    made = decisions(plan.n2, plan.n2, plan.warmup)
    cpu = made["cpu_ns"]
    print(f"{len(cpu)} decisions, median process CPU {statistics.median(cpu) / 1e6:.3f} ms",
          flush=True)
    usage, count = made["usage"], max(len(cpu), 1)
    return {"decisions": len(cpu), "decide_cpu_ms": round(statistics.median(cpu) / 1e6, 4),
            "decide_cpu_ms_mean": round(statistics.fmean(cpu) / 1e6, 4),
            "user_ms_per_decision": round(usage["user_s"] / count * 1e3, 4),
            "system_ms_per_decision": round(usage["system_s"] / count * 1e3, 4),
            "voluntary_switches_per_decision": round(usage["voluntary_switches"] / count, 3),
            "involuntary_switches_per_decision": round(
                usage["involuntary_switches"] / count, 3)}


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--run"]:  # the measured process (under valgrind)
        inner = argparse.ArgumentParser()
        inner.add_argument("--run", type=int, required=True)
        inner.add_argument("--of", type=int, required=True)
        inner.add_argument("--warmup", type=int, required=True)
        options = inner.parse_args(args)
        made = decisions(options.run, options.of, options.warmup)
        harness.print_json_line({"decisions": made["decisions"],
                                 "proctor": str(Path(proctor.__file__).parent.parent)})
        return
    parser = harness.parser("Instructions (valgrind) or CPU per allowed decide_call")
    parser.add_argument("--valgrind", action="store_true",
                        help="count instructions under valgrind (minutes)")
    parser.add_argument("--src", help="a checkout's src directory to measure instead")
    parser.add_argument("--repeat", type=int, help="valgrind pairs to run (default 2)")
    options = parser.parse_args(args)
    load_at_start = harness.load_average()
    report: dict[str, Any] = {"mode": harness.mode(options)}
    if options.valgrind:
        plan = VALGRIND if options.repeat is None else Plan(
            VALGRIND.warmup, VALGRIND.n1, VALGRIND.n2, options.repeat)
        report.update(under_valgrind(plan, options.src))
        report["command"] = "valgrind --tool=cachegrind --cache-sim=no (PYTHONMALLOC=malloc)"
    else:
        report.update(in_process(IN_PROCESS[harness.mode(options)]))
    report["machine"] = harness.machine(load_at_start, versions=harness.versions(
        "cedarpy", "cryptography", "sqlalchemy"))
    harness.print_json_line(report)


if __name__ == "__main__":
    main()

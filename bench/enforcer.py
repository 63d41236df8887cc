"""What one decision costs on the enforcer's path, next to the floors of its real work.

Usage::

    uv run python bench/enforcer.py            # the full run, 2-4 minutes here
    uv run python bench/enforcer.py --quick    # under 30 s on a quiet machine
    uv run python bench/enforcer.py --smoke    # every path, the fewest samples (1,000 agents)

A decision's real work is one proof verification, one Cedar evaluation and one durable
write. This bench measures ``Enforcer.decide_call`` of one allowed call (the API bench's
agent, own key P-256, and its grant for ``git/git_log``; a fresh proof per call, made
before it is timed) against those floors, in the same run:

- **cost** (SQLite home): ``decide_call``, a raw cedarpy decision of the very request the
  enforcer built (the engine's whole active set, entities and schema handles) and one raw
  P-256 verify of a proof-size message, rotated call by call. CPU is the *process's*
  (every thread: the audit writer's share included). ``decide_cpu_ms`` is the median,
  ``decide_cpu_vs_floor`` that divided by the floors' medians added up, ``decide_p50_ms``
  the wall-clock median of the same sequential calls;
- **concurrency**: 32 threads in this process deciding for a few seconds, on SQLite and
  on PostgreSQL (a fresh ``proctor_bench_*`` database): ``decide_per_s_concurrent`` (and
  ``_postgres``), and ``decide_per_s_concurrent_vs_cpu`` = that rate times ``decide_cpu_ms``
  (1.0: every core-second of one thread turned into decisions);
- **fleet**: the same home once more with 9,999 more agents loaded in bulk and opened
  afresh: ``decide_cpu_ms_10k_vs_1`` rotates decisions in both homes;
  ``agent_change_ms_10k`` is one agent's risk score changed (``AgentRegistry.set_risk_score``,
  committed) until the engine has it (``Enforcer.ensure_current``), median;
- **revocation seen** (PostgreSQL): a second process checks a grant (``inspect``) again
  and again while this one revokes it; ``revocation_seen_p99_ms`` runs from the start of
  the revoking call to the other process's first refusal.

Prints a table, then one JSON object on its last line; exits 1 if a call that should
have been allowed was not.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from enforcer_workload import (
    Proofs,
    concurrent,
    decide,
    floors,
    home_on,
    load_fleet,
    reopened,
    revocation_seen,
    settings_for,
    sqlite_url,
    watch,
)
from harness import Goal

GOALS = {
    "decide_cpu_vs_floor": Goal("<=", 2.0),
    "decide_p50_ms": Goal("<=", 1.0),
    "decide_per_s_concurrent": Goal(">=", 1500),
    "decide_per_s_concurrent_postgres": Goal(">=", 1500),
    "decide_per_s_concurrent_vs_cpu": Goal(">=", 0.9),
    "agent_change_ms_10k": Goal("<=", 5),
    "decide_cpu_ms_10k_vs_1": Goal("<=", 1.1),
    "revocation_seen_p99_ms": Goal("<", 100),
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int
    callers: int
    seconds: float
    fleet: int
    changes: int
    fleet_rounds: int
    revocations: int


QUICK = Plan(rounds=300, warmup=50, callers=32, seconds=2.0, fleet=9_999, changes=2,
             fleet_rounds=200, revocations=20)
FULL = Plan(rounds=2000, warmup=200, callers=32, seconds=10.0, fleet=9_999, changes=11,
            fleet_rounds=1000, revocations=100)
SMOKE = Plan(rounds=20, warmup=5, callers=4, seconds=0.3, fleet=999, changes=1,
             fleet_rounds=10, revocations=3)


@dataclass(frozen=True)
class Timed:
    """Wall clock and process CPU of each call, in nanoseconds."""

    wall: list[int]
    cpu: list[int]

    def p50_ms(self) -> float:
        return statistics.median(self.wall) / 1e6

    def p99_ms(self) -> float:
        return harness.nearest_rank(self.wall, 99) / 1e6

    def cpu_ms(self) -> float:
        return statistics.median(self.cpu) / 1e6


def rotate(variants: Mapping[str, Callable[[], object]], rounds: int, warmup: int,
           refill: Callable[[], None]) -> dict[str, Timed]:
    """Like ``harness.measure``, but with the process's CPU time (the audit writer runs in
    a thread of its own) and variants that take no input; ``refill`` runs untimed every
    100 rounds (fresh proofs)."""
    names = list(variants)
    timed = {name: Timed([], []) for name in names}
    clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
    for r in range(-warmup, rounds):
        if r % 100 == 0 or r == -warmup:
            refill()
        for name in harness.rotation(names, r):
            call = variants[name]
            cpu_start, start = cpu_clock(), clock()
            call()
            end, cpu_end = clock(), cpu_clock()
            if r >= 0:
                timed[name].wall.append(end - start)
                timed[name].cpu.append(cpu_end - cpu_start)
    return timed


def run(plan: Plan, admin_url: str) -> dict[str, Any]:
    load_at_start = harness.load_average()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = home_on(root / "one", sqlite_url(root / "one"))
        fleet_home = root / "fleet"
        fleet = home_on(fleet_home, sqlite_url(fleet_home))
        try:
            # cost, against the floors
            proofs_one, proofs_fleet = Proofs(one), Proofs(fleet)
            sample = decide(one, proofs_one.take())
            floor = floors(one, sample)
            cost = rotate({
                "decide": lambda: decide(one, proofs_one.take()),
                "cedarpy": lambda: floor.cedar(None),
                "p256_verify": lambda: floor.verify(None),
            }, plan.rounds, plan.warmup, proofs_one.refill)
            cpu_ms = cost["decide"].cpu_ms()
            floor_ms = cost["cedarpy"].cpu_ms() + cost["p256_verify"].cpu_ms()
            report.update({
                "decide_cpu_ms": round(cpu_ms, 3),
                "decide_cpu_vs_floor": round(cpu_ms / floor_ms, 3),
                "decide_p50_ms": round(cost["decide"].p50_ms(), 3),
                "decide_p99_ms": round(cost["decide"].p99_ms(), 3),
                "floor_cpu_ms": {"cedarpy": round(cost["cedarpy"].cpu_ms(), 4),
                                 "p256_verify": round(cost["p256_verify"].cpu_ms(), 4)},
            })
            # concurrency on SQLite, after a warm-up of the same (untimed)
            stock = int(plan.seconds * 1800)  # room for 1,800 decisions a second
            warm_up(one, plan)
            sqlite_run = concurrent(one, plan.callers, plan.seconds, stock)
            # the fleet: 9,999 more agents, the home opened again
            load_fleet(fleet, plan.fleet)
            fleet = reopened(fleet, settings_for(fleet_home, sqlite_url(fleet_home)))
            proofs_fleet = Proofs(fleet)
            decide(fleet, proofs_fleet.take())

            def refill_both() -> None:
                proofs_one.refill()
                proofs_fleet.refill()

            sizes = rotate({"decide_1": lambda: decide(one, proofs_one.take()),
                            "decide_10k": lambda: decide(fleet, proofs_fleet.take())},
                           plan.fleet_rounds, plan.warmup, refill_both)
            changes = agent_changes(fleet, plan.changes)
        finally:
            one.runtime.close()
            fleet.runtime.close()
        with harness.postgres_database(admin_url) as pg_url:
            pg_home = root / "pg"
            on_pg = home_on(pg_home, pg_url)
            try:
                decide(on_pg, Proofs(on_pg).take())
                warm_up(on_pg, plan)
                pg_run = concurrent(on_pg, plan.callers, plan.seconds, stock)
                seen = revocation_seen(on_pg, settings_for(pg_home, pg_url), plan.revocations)
            finally:
                on_pg.runtime.close()
    report.update({
        "decide_per_s_concurrent": round(sqlite_run["per_s"], 1),
        "decide_per_s_concurrent_postgres": round(pg_run["per_s"], 1),
        "decide_per_s_concurrent_vs_cpu": round(sqlite_run["per_s"] * cpu_ms / 1e3, 3),
        "decide_cpu_ms_10k_vs_1": round(sizes["decide_10k"].cpu_ms()
                                        / sizes["decide_1"].cpu_ms(), 3),
        "agent_change_ms_10k": round(statistics.median(changes), 3),
        "revocation_seen_p99_ms": round(harness.nearest_rank(seen["seen_ms"], 99), 3),
        "revocation_seen_p50_ms": round(statistics.median(seen["seen_ms"]), 3),
        "revocation_seen_codes": seen["codes"],
        "concurrent": {"sqlite": _rounded(sqlite_run), "postgresql": _rounded(pg_run)},
        "fleet_cpu_ms": {"decide_1": round(sizes["decide_1"].cpu_ms(), 3),
                         "decide_10k": round(sizes["decide_10k"].cpu_ms(), 3)},
        "agent_change_runs_ms": [round(c, 2) for c in changes],
    })
    not_allowed = sqlite_run["not_allowed"] + pg_run["not_allowed"]
    report["not_allowed"] = not_allowed
    report["goals"] = {key: str(goal) for key, goal in GOALS.items()}
    report["goals_met"] = {key: goal.is_met(report[key]) for key, goal in GOALS.items()}
    report["workload"] = {"rounds": plan.rounds, "callers": plan.callers,
                          "concurrent_seconds": plan.seconds, "fleet": plan.fleet + 1,
                          "agent_changes": plan.changes, "revocations": plan.revocations}
    report["machine"] = harness.machine(load_at_start, versions=harness.versions(
        "cedarpy", "cryptography", "sqlalchemy", "psycopg"))
    return report


def warm_up(setup: Any, plan: Plan) -> None:
    """The concurrent phase once, untimed, for a quarter of its time: the pool's
    connections opened and the first batches written before the phase is timed."""
    run = concurrent(setup, plan.callers, plan.seconds / 4, int(plan.seconds / 4 * 1800))
    if run["not_allowed"]:
        raise SystemExit(f"{run['not_allowed']} calls were not allowed while warming up")


def agent_changes(setup: Any, count: int) -> list[float]:
    """Milliseconds from a change of one agent's risk score to the engine having it."""
    runtime = setup.runtime
    agent_id = runtime.registry.list_agents()[len(runtime.registry.list_agents()) // 2].id
    took = []
    for i in range(count):
        started = time.perf_counter_ns()
        runtime.registry.set_risk_score(agent_id, 10 + i % 2)
        runtime.enforcer.ensure_current(agent_id)
        took.append((time.perf_counter_ns() - started) / 1e6)
    return took


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--watch"]:  # the second process of the revocation phase
        watch(args[1], args[2])
        return
    parser = harness.parser("Enforcer.decide_call against the floors of its real work")
    harness.add_postgres(parser)
    options = parser.parse_args(args)
    plan = harness.sized(options, full=FULL, quick=QUICK, smoke=SMOKE)
    report = {"mode": harness.mode(options), **run(plan, options.postgres)}
    for key in ("decide_cpu_ms", "decide_cpu_vs_floor", "decide_p50_ms",
                "decide_per_s_concurrent", "decide_per_s_concurrent_postgres",
                "decide_per_s_concurrent_vs_cpu", "decide_cpu_ms_10k_vs_1",
                "agent_change_ms_10k", "revocation_seen_p99_ms", "not_allowed"):
        print(f"{key:<36}{report[key]:>12}  {report['goals'].get(key, '')}")
    print(f"{'floor_cpu_ms':<36}{report['floor_cpu_ms']}")
    print(f"{'machine':<36}{report['machine']}")
    harness.print_json_line(report)
    if report["not_allowed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

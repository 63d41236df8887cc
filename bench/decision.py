"""How fast is ``PolicyEngine.decide`` next to raw cedarpy, on the same requests?

Usage::

    uv run python bench/decision.py            # the full run, a few minutes
    uv run python bench/decision.py --quick    # under 30 s, fewer samples

Two scenarios share one tool catalog (100 tools on 10 servers), one set of
principals and seeded request generators:

- *small*: 10 policies; ``decide()`` against ``cedarpy.is_authorized`` with the
  same policies as one pre-parsed ``PolicySet``;
- *1000*: 1,000 policies spread over the 100 tools; ``decide()`` (which
  evaluates only the request's slice) against ``cedarpy.is_authorized`` with
  all 1,000 policies (unsliced). The smoke run, which only proves every path runs,
  spreads 100 policies instead; its report keeps the key names and gives the real
  count under ``workload.policies``.

The baseline gets pre-parsed ``PolicySet``, ``Entities`` and ``Schema``
handles, the same schema handle ``decide()`` uses, and its request dicts are
built before timing. It is also measured without a schema, and on the very
slice ``decide()`` evaluates, so that the engine's own overhead shows. Each
round times every variant once on the same request, in rotating order, so
drift on the machine hits all of them alike.

Prints a table, then one JSON object on its last line.
"""

from __future__ import annotations

import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cedarpy

import harness
from decision_telemetry import instrumented, switched_on
from decision_workload import build_catalog, build_principals, build_requests, policy_sources
from harness import Goal, Latency, Variant
from proctor.policy import CompiledPolicies, DecisionRequest, Outcome, PolicyEngine
from proctor.policy.compiled import forget_compiled
from proctor.policy.entities import principal_entities
from proctor.policy.source import parse_sources, read_policy_dir

GOALS = {
    "ratio_small_vs_cedarpy": Goal("<=", 1.3),
    # OpenTelemetry off (no OTEL_* variables): the instrumentation is one boolean test
    "telemetry_off_vs_decide_small": Goal("<=", 1.05),
    "speedup_1000_vs_unsliced": Goal(">=", 4.0),
    "p99_over_p50_1000": Goal("<=", 3.0),
    "load_1000_s": Goal("<", 0.5),
}


@dataclass(frozen=True)
class Plan:
    """How much to measure: rounds per scenario, repeats of the load and of its steps, and
    the distinct requests of each scenario (each is first checked against cedarpy on the
    whole set, untimed: the smoke run's largest cost with the 1,024 of a measuring run);
    and how many policies the *1000* scenario spreads (fewer only in the smoke run)."""

    small_rounds: int
    large_rounds: int
    warmup_rounds: int
    load_repeats: int
    step_repeats: int
    small_requests: int = 256
    large_requests: int = 1024
    large_policies: int = 1000


FULL = Plan(small_rounds=20_000, large_rounds=10_000, warmup_rounds=500, load_repeats=7,
            step_repeats=3)
QUICK = Plan(small_rounds=3_000, large_rounds=1_500, warmup_rounds=200, load_repeats=3,
             step_repeats=1)
SMOKE = Plan(small_rounds=100, large_rounds=100, warmup_rounds=10, load_repeats=1,
             step_repeats=1, small_requests=64, large_requests=100, large_policies=100)


# --- measuring ------------------------------------------------------------------------------


def as_json(latency: Latency) -> dict[str, float]:
    """A variant's wall-clock and CPU-time p50 and p99, to a tenth of a microsecond."""
    return latency.as_json("p50_us", "p99_us", "cpu_p50_us", "cpu_p99_us", digits=1)


@dataclass(frozen=True)
class Scenario:
    """What one scenario measured: latencies, and cedarpy's own split of one call."""

    latency: dict[str, Latency]
    cedar_us: dict[str, float]


def scenario(
    engine: PolicyEngine, compiled: CompiledPolicies, requests: list[DecisionRequest],
    rounds: int, warmup: int,
) -> Scenario:
    engine.activate(compiled)
    cedar_requests = [engine._cedar_request(r) for r in requests]
    slices = [compiled.slice_for(r.action, str(r.resource)) for r in requests]
    entities, schema = engine.entities.handle, engine.schema.handle
    full_results = [
        cedarpy.is_authorized(c, compiled.full, entities, schema=schema) for c in cedar_requests
    ]
    slice_results = [
        cedarpy.is_authorized(c, s, entities, schema=schema)
        for c, s in zip(cedar_requests, slices, strict=True)
    ]
    check_agreement(engine, requests, full_results, slice_results)

    def sliced(i: int) -> object:
        return cedarpy.is_authorized(cedar_requests[i], slices[i], entities, schema=schema)

    variants: dict[str, Variant] = {
        "decide": (engine.decide, requests),
        "decide_telemetry_off": (instrumented(engine.decide), requests),
        "cedarpy": (
            partial(cedarpy.is_authorized, policies=compiled.full, entities=entities,
                    schema=schema),
            cedar_requests,
        ),
        "cedarpy_no_schema": (
            partial(cedarpy.is_authorized, policies=compiled.full, entities=entities),
            cedar_requests,
        ),
        "cedarpy_on_slice": (sliced, range(len(requests))),
    }
    traced = switched_on(engine.decide)
    if traced is not None:
        variants["decide_telemetry_on"] = (traced, requests)
    return Scenario(
        harness.measure(variants, rounds, warmup),
        {
            "build_request": cedar_metric(full_results, "build_request_duration_micros"),
            "authz_full": cedar_metric(full_results, "authz_duration_micros"),
            "authz_slice": cedar_metric(slice_results, "authz_duration_micros"),
        },
    )


def cedar_metric(results: Sequence[cedarpy.AuthzResult], name: str) -> float:
    """The median of one of the durations cedarpy reports with each answer (untimed pass)."""
    return float(statistics.median(int(r.metrics.get(name, 0)) for r in results))


def check_agreement(
    engine: PolicyEngine, requests: Sequence[DecisionRequest],
    full_results: Sequence[cedarpy.AuthzResult], slice_results: Sequence[cedarpy.AuthzResult],
) -> None:
    """Every side must answer each request alike, or the comparison means nothing."""
    for request, full, sliced in zip(requests, full_results, slice_results, strict=True):
        decision = engine.decide(request)
        if decision.errors or list(full.diagnostics.errors):
            sys.exit(f"request {request} failed to evaluate: {decision.errors}")
        if full.decision is not sliced.decision:
            sys.exit(f"the slice and the full set disagree on {request}")
        if (decision.outcome is not Outcome.DENY) != full.allowed:
            sys.exit(f"decide() and cedarpy disagree on {request}")


def outcome_mix(
    engine: PolicyEngine, compiled: CompiledPolicies, requests: Sequence[DecisionRequest]
) -> dict[str, int]:
    """How many requests end in each reason code: the workload is not all denies."""
    engine.activate(compiled)
    mix: dict[str, int] = {}
    for request in requests:
        code = engine.decide(request).code.value
        mix[code] = mix.get(code, 0) + 1
    return dict(sorted(mix.items()))


def load_seconds(engine: PolicyEngine, sources: dict[str, str], repeats: int) -> list[float]:
    """Read the policy files from disk, parse and validate them, build the full set."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in sources.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        runs = []
        for _ in range(repeats):
            forget_compiled()  # a cold load: proctor keeps each file's parse and validation
            start = time.perf_counter_ns()
            engine.compile(read_policy_dir(root))
            runs.append((time.perf_counter_ns() - start) / 1e9)
    return runs


def load_breakdown(engine: PolicyEngine, sources: dict[str, str]) -> dict[str, float]:
    """The steps of :meth:`PolicyEngine.compile`, timed one by one (from memory, no disk)."""
    clock = time.perf_counter_ns
    forget_compiled()
    start = clock()
    policies = parse_sources(sources)
    parsed = clock()
    for text in sources.values():
        cedarpy.validate_policies(text, engine.schema.handle)
    validated = clock()
    CompiledPolicies(policies, engine.action_groups)
    indexed = clock()
    return {
        "parse_s": (parsed - start) / 1e9,
        "validate_s": (validated - parsed) / 1e9,
        "index_s": (indexed - validated) / 1e9,
    }


def slice_seconds(compiled: CompiledPolicies, requests: Sequence[DecisionRequest]) -> float:
    """Building every slice the requests touch (done lazily, on first use, in service)."""
    start = time.perf_counter_ns()
    for request in requests:
        compiled.slice_for(request.action, str(request.resource))
    return (time.perf_counter_ns() - start) / 1e9


# --- the run --------------------------------------------------------------------------------


def run(plan: Plan, seed: int) -> dict[str, Any]:
    load_at_start = harness.load_average()
    rng = random.Random(seed)
    catalog = build_catalog(rng)
    principals = build_principals(rng)
    engine = PolicyEngine(catalog, principal_entities(principals))
    tools = list(catalog)

    small_tools = tools[:4]
    small = engine.compile(policy_sources(rng, small_tools, count=10, global_count=2))
    small_requests = build_requests(rng, principals, small_tools, plan.small_requests)
    large_sources = policy_sources(rng, tools, count=plan.large_policies, global_count=10)
    large = engine.compile(large_sources)
    large_requests = build_requests(rng, principals, tools, plan.large_requests)

    load_runs = load_seconds(engine, large_sources, plan.load_repeats)
    steps = [load_breakdown(engine, large_sources) for _ in range(plan.step_repeats)]
    slices_s = slice_seconds(large, large_requests)
    small_run = scenario(engine, small, small_requests, plan.small_rounds, plan.warmup_rounds)
    large_run = scenario(engine, large, large_requests, plan.large_rounds, plan.warmup_rounds)

    s, g = small_run.latency, large_run.latency
    figures = {
        "ratio_small_vs_cedarpy": s["decide"].p50_us / s["cedarpy"].p50_us,
        "telemetry_off_vs_decide_small": s["decide_telemetry_off"].p50_us / s["decide"].p50_us,
        "speedup_1000_vs_unsliced": g["cedarpy"].p50_us / g["decide"].p50_us,
        "p99_over_p50_1000": g["decide"].p99_us / g["decide"].p50_us,
        "load_1000_s": statistics.median(load_runs),
    }
    return {
        **{k: round(v, 3) for k, v in figures.items()},
        "goals": {k: str(goal) for k, goal in GOALS.items()},
        "goals_met": {k: goal.is_met(figures[k]) for k, goal in GOALS.items()},
        "for_the_record": {
            "ratio_small_vs_cedarpy_no_schema": round(
                s["decide"].p50_us / s["cedarpy_no_schema"].p50_us, 3),
            "speedup_1000_vs_unsliced_no_schema": round(
                g["cedarpy_no_schema"].p50_us / g["decide"].p50_us, 3),
            "p99_over_p50_1000_cpu_time": round(
                g["decide"].cpu_p99_us / g["decide"].cpu_p50_us, 3),
            "decide_overhead_small_us": round(s["decide"].p50_us - s["cedarpy_on_slice"].p50_us, 1),
            "decide_overhead_1000_us": round(g["decide"].p50_us - g["cedarpy_on_slice"].p50_us, 1),
            "load_1000_runs_s": [round(x, 3) for x in load_runs],
            "load_1000_steps_s": {
                k: round(statistics.median(step[k] for step in steps), 3) for k in steps[0]
            },
            "first_use_slices_1000_s": round(slices_s, 3),
            "telemetry_on_cost_small_us": round(
                s["decide_telemetry_on"].p50_us - s["decide"].p50_us, 1)
            if "decide_telemetry_on" in s else None,
        },
        "latency_us": {
            "small": {k: as_json(v) for k, v in s.items()},
            "1000": {k: as_json(v) for k, v in g.items()},
        },
        "cedarpy_reported_us": {"small": small_run.cedar_us, "1000": large_run.cedar_us},
        "outcomes": {
            "small": outcome_mix(engine, small, small_requests),
            "1000": outcome_mix(engine, large, large_requests),
        },
        "workload": {
            "seed": seed, "tools": len(catalog), "entities": len(engine.entities),
            "policies": {"small": len(small), "1000": len(large)},
            "requests": {"small": len(small_requests), "1000": len(large_requests)},
            "rounds": {"small": plan.small_rounds, "1000": plan.large_rounds},
        },
        "machine": harness.machine(
            load_at_start, machine=platform.machine(),
            implementation=platform.python_implementation(),
            **harness.versions("cedarpy")),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{'latency (us)':<34}{'p50':>9}{'p99':>10}{'cpu p50':>10}{'cpu p99':>10}")
    for scenario_name, variants in report["latency_us"].items():
        for variant, f in variants.items():
            label = f"{scenario_name} policies: {variant}"
            print(f"{label:<34}{f['p50_us']:>9.1f}{f['p99_us']:>10.1f}"
                  f"{f['cpu_p50_us']:>10.1f}{f['cpu_p99_us']:>10.1f}")
    print()
    print(f"{'figure':<36}{'value':>9}  {'goal':<8}met")
    for key, goal in report["goals"].items():
        met = "yes" if report["goals_met"][key] else "NO"
        print(f"{key:<36}{report[key]:>9.3f}  {goal:<8}{met}")
    print()
    for key, value in report["for_the_record"].items():
        print(f"{key:<36}{value}")
    print(f"{'cedarpy_reported_us':<36}{report['cedarpy_reported_us']}")
    print(f"{'outcomes':<36}{report['outcomes']}")
    print(f"{'machine':<36}{report['machine']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = harness.parser("decide() against cedarpy, same requests")
    parser.add_argument("--seed", type=int, default=20261130, help="seed of the workload")
    options = parser.parse_args(argv)
    plan = harness.sized(options, full=FULL, quick=QUICK, smoke=SMOKE)
    report = {"mode": harness.mode(options), **run(plan, options.seed)}
    print_table(report)
    harness.print_json_line(report)


if __name__ == "__main__":
    main()

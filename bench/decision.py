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
  all 1,000 policies (unsliced).

The baseline gets pre-parsed ``PolicySet``, ``Entities`` and ``Schema``
handles, the same schema handle ``decide()`` uses, and its request dicts are
built before timing. It is also measured without a schema, and on the very
slice ``decide()`` evaluates, so that the engine's own overhead shows. Each
round times every variant once on the same request, in rotating order, so
drift on the machine hits all of them alike.

Prints a table, then one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import cedarpy

from proctor.policy import (
    CompiledPolicies,
    DecisionRequest,
    EntityRef,
    Outcome,
    PolicyEngine,
    Sensitivity,
    ToolCatalog,
    ToolSpec,
    call_context,
)
from proctor.policy.entities import principal_entities
from proctor.policy.source import parse_sources, read_policy_dir

SERVERS = ("fs", "git", "db", "mail", "crm", "http", "docs", "chat", "ci", "billing")
VERBS = ("read", "write", "list", "search", "delete", "create", "update", "export", "share",
         "admin")
GROUPS = ("engineering", "finance", "support", "ops", "security", "contractors")
TAGS = ("pii", "finance", "public", "internal", "customer", "legal")
PURPOSES = ("triage", "release", "audit", "support-ticket", "report")
INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "limit": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "recursive": {"type": "boolean"},
        "target": {"type": "string"},
    },
    "required": ["path", "limit", "tags"],
}
BASE_TIME = datetime(2026, 11, 30, tzinfo=UTC)

# name: (comparison, threshold); a figure meets its goal when comparison(figure, threshold)
GOALS: dict[str, tuple[Callable[[float, float], bool], str, float]] = {
    "ratio_small_vs_cedarpy": (operator.le, "<=", 1.3),
    "speedup_1000_vs_unsliced": (operator.ge, ">=", 4.0),
    "p99_over_p50_1000": (operator.le, "<=", 3.0),
    "load_1000_s": (operator.lt, "<", 0.5),
}


@dataclass(frozen=True)
class Plan:
    """How much to measure: rounds per scenario, repeats of the load and of its steps."""

    small_rounds: int
    large_rounds: int
    warmup_rounds: int
    load_repeats: int
    step_repeats: int


FULL = Plan(small_rounds=20_000, large_rounds=10_000, warmup_rounds=500, load_repeats=7,
            step_repeats=3)
QUICK = Plan(small_rounds=3_000, large_rounds=1_500, warmup_rounds=200, load_repeats=3,
             step_repeats=1)


# --- the workload ---------------------------------------------------------------------------


def build_catalog(rng: random.Random) -> ToolCatalog:
    levels = list(Sensitivity)
    return ToolCatalog(
        ToolSpec(server, verb, sensitivity=rng.choice(levels), input_schema=INPUT_SCHEMA)
        for server in SERVERS
        for verb in VERBS
    )


def build_principals(rng: random.Random) -> dict[str, Any]:
    humans = [{"id": f"h{i:02}", "groups": rng.sample(GROUPS, 1)} for i in range(20)]
    agents = [
        {
            "id": f"spiffe://acme.example/agent/a{i:02}",
            "owner": rng.choice(humans)["id"],
            "groups": rng.sample(GROUPS, rng.randint(1, 2)),
            "trust_state": "trusted" if rng.random() < 0.9 else "drifted",
            "risk_score": rng.randint(0, 100),
        }
        for i in range(50)
    ]
    return {"groups": [{"id": g} for g in GROUPS], "humans": humans, "agents": agents}


def tool_policy(rng: random.Random, tool: ToolSpec, index: int, kind: int) -> str:
    """A policy of the given ``kind`` scoped to ``tool``, its ``index``-th."""
    action = f'Action::"{tool.action_id}"'
    resource = f'Tool::"{tool.tool_id}"'
    group = rng.choice(GROUPS)
    head = f'@id("{tool.tool_id}#{index}")\n'
    kinds = [
        f"permit(principal in Group::\"{group}\", action == {action}, resource)\n"
        f"when {{ context.args.limit <= {rng.randint(10, 1000)} && "
        f"resource.sensitivity_level <= {rng.randint(1, 3)} }};",
        f"permit(principal, action == {action}, resource == {resource})\n"
        f"when {{ principal.risk_score < {rng.randint(20, 80)} && "
        f'context.args.path like "/srv/{group}/*" }};',
        f'@reason("contractors may not recurse")\nforbid(principal in Group::"contractors", '
        f"action == {action}, resource)\nwhen {{ context.args has recursive && "
        "context.args.recursive };",
        f'@reason("no production targets")\nforbid(principal, action in Action::"call", '
        f"resource == {resource})\n"
        'when { context.args has target && '
        'context.args.target like "*.prod.*" };',
        f'@approval("personal data needs a human")\npermit(principal in Group::"{group}", '
        f"action == {action}, resource)\nwhen {{ resource.sensitivity_level >= 2 && "
        f'context.args.tags.contains("{rng.choice(TAGS)}") }};',
        f'@reason("outside working hours")\nforbid(principal, action == {action}, resource)\n'
        f"unless {{ context.time.hour >= {rng.randint(5, 9)} && "
        f"context.time.hour < {rng.randint(17, 23)} }};",
        f"permit(principal, action == {action}, resource)\n"
        f'when {{ principal.owner in Group::"{group}" && '
        f'context.purpose == "{rng.choice(PURPOSES)}" }};',
        f'@reason("delegated too deep for this data")\nforbid(principal, action == {action}, '
        f"resource)\nwhen {{ context.delegation.depth > {rng.randint(1, 2)} && "
        f"resource.sensitivity_level >= {rng.randint(1, 3)} }};",
        f'permit(principal in Group::"{group}", action == {action}, resource == {resource})\n'
        f'when {{ context.args.tags.containsAny(["{rng.choice(TAGS)}", "{rng.choice(TAGS)}"]) '
        f"&& context.args.limit < {rng.randint(50, 500)} }};",
        f'@reason("risky agent touching secrets")\nforbid(principal, action == {action}, '
        f"resource)\nwhen {{ principal.risk_score > {rng.randint(60, 95)} && "
        'context.args.path like "*secret*" };',
    ]
    return head + kinds[kind % len(kinds)]


def global_policy(rng: random.Random, index: int) -> str:
    """A policy on every tool (``action in Action::"call"``); these sit in every slice."""
    head = f'@id("global#{index}")\n'
    kinds = [
        '@reason("agent is not trusted")\nforbid(principal, action in Action::"call", resource)\n'
        'unless { principal.trust_state == "trusted" };',
        '@reason("delegation chain too long")\nforbid(principal, action in Action::"call", '
        f"resource)\nwhen {{ context.delegation.depth > {rng.randint(2, 4)} }};",
        '@reason("contractors stay off this server")\nforbid(principal in Group::"contractors", '
        f'action in Action::"call", resource in Server::"{rng.choice(SERVERS)}");',
        'permit(principal in Group::"ops", action in Action::"call", resource)\n'
        f"when {{ resource.sensitivity_level <= 1 && context.time.hour >= {rng.randint(6, 9)} }};",
        '@reason("restricted data needs approval")\nforbid(principal, action in Action::"call", '
        "resource)\nwhen { resource.sensitivity_level == 3 && !context.approved && "
        f"principal.risk_score > {rng.randint(30, 70)} }};",
    ]
    return head + kinds[index % len(kinds)]


def policy_sources(
    rng: random.Random, tools: Sequence[ToolSpec], count: int, global_count: int
) -> dict[str, str]:
    """``count`` policies as files: ``global.cedar``, then one file per tool."""
    per_tool: dict[str, list[str]] = {t.tool_id: [] for t in tools}
    for i in range(count - global_count):
        tool, index = tools[i % len(tools)], i // len(tools)
        # every tool gets different kinds, however many tools there are
        per_tool[tool.tool_id].append(tool_policy(rng, tool, index, kind=index + i))
    sources = {"global.cedar": "\n\n".join(global_policy(rng, i) for i in range(global_count))}
    for tool_id, texts in per_tool.items():
        if texts:
            sources[f"{tool_id}.cedar"] = "\n\n".join(texts) + "\n"
    return sources


def build_requests(
    rng: random.Random, principals: dict[str, Any], tools: Sequence[ToolSpec], count: int
) -> list[DecisionRequest]:
    agents = [a["id"] for a in principals["agents"]]
    requests = []
    for _ in range(count):
        tool = rng.choice(tools)
        args: dict[str, Any] = {
            "path": f"/srv/{rng.choice(GROUPS)}/{rng.choice(['notes', 'secret-keys', 'q3'])}",
            "limit": rng.randint(1, 1200),
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
        }
        if rng.random() < 0.3:
            args["recursive"] = rng.random() < 0.5
        if rng.random() < 0.3:
            args["target"] = rng.choice(["db.prod.acme", "db.staging.acme"])
        depth = rng.choice([0, 0, 0, 1, 2, 3, 4])
        context = call_context(
            now=BASE_TIME + timedelta(hours=call_hour(rng)),
            args=args,
            purpose=rng.choice(PURPOSES),
            delegation_chain=[rng.choice(agents) for _ in range(depth)],
            approved=rng.random() < 0.2,
        )
        requests.append(
            DecisionRequest(EntityRef("Agent", rng.choice(agents)), tool.action_id,
                            EntityRef("Tool", tool.tool_id), context)
        )
    return requests


def call_hour(rng: random.Random) -> int:
    """Mostly working hours, so that hour-of-day forbids do not decide most requests."""
    return rng.randint(8, 18) if rng.random() < 0.85 else rng.randint(0, 23)


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Latency of one variant, in microseconds: wall clock, and this thread's CPU time."""

    p50_us: float
    p99_us: float
    cpu_p50_us: float
    cpu_p99_us: float

    @classmethod
    def of(cls, wall_ns: list[int], cpu_ns: list[int]) -> Figures:
        return cls(*_median_p99(wall_ns), *_median_p99(cpu_ns))

    def as_json(self) -> dict[str, float]:
        return {
            "p50_us": round(self.p50_us, 1), "p99_us": round(self.p99_us, 1),
            "cpu_p50_us": round(self.cpu_p50_us, 1), "cpu_p99_us": round(self.cpu_p99_us, 1),
        }


def _median_p99(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]  # nearest rank
    return statistics.median(ordered) / 1000, p99 / 1000


Variant = tuple[Callable[[Any], object], Sequence[Any]]


def measure(variants: dict[str, Variant], rounds: int, warmup: int) -> dict[str, Figures]:
    """Time each variant once per round, on request ``round % n``, in rotating order.

    CPU time is taken around the wall-clock reading, which it so leaves clean: on a
    shared machine the difference between the two is time spent waiting for a core.
    """
    names = list(variants)
    wall: dict[str, list[int]] = {name: [] for name in names}
    cpu: dict[str, list[int]] = {name: [] for name in names}
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for r in range(-warmup, rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            call, inputs = variants[name]
            arg = inputs[r % len(inputs)]
            cpu_start = cpu_clock()
            start = clock()
            call(arg)
            end = clock()
            cpu_end = cpu_clock()
            if r >= 0:
                wall[name].append(end - start)
                cpu[name].append(cpu_end - cpu_start)
    return {name: Figures.of(wall[name], cpu[name]) for name in names}


@dataclass(frozen=True)
class Scenario:
    """What one scenario measured: latencies, and cedarpy's own split of one call."""

    latency: dict[str, Figures]
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
    gc.collect()
    return Scenario(
        measure(variants, rounds, warmup),
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
            start = time.perf_counter_ns()
            engine.compile(read_policy_dir(root))
            runs.append((time.perf_counter_ns() - start) / 1e9)
    return runs


def load_breakdown(engine: PolicyEngine, sources: dict[str, str]) -> dict[str, float]:
    """The steps of :meth:`PolicyEngine.compile`, timed one by one (from memory, no disk)."""
    clock = time.perf_counter_ns
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


def machine(load_at_start: float) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cedarpy": metadata.version("cedarpy"),
        # other work on the machine shows in p99 first: say how busy it was
        "load_average_1m": {"start": round(load_at_start, 2),
                            "end": round(os.getloadavg()[0], 2)},
    }


# --- the run --------------------------------------------------------------------------------


def run(plan: Plan, seed: int) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]
    rng = random.Random(seed)
    catalog = build_catalog(rng)
    principals = build_principals(rng)
    engine = PolicyEngine(catalog, principal_entities(principals))
    tools = list(catalog)

    small_tools = tools[:4]
    small = engine.compile(policy_sources(rng, small_tools, count=10, global_count=2))
    small_requests = build_requests(rng, principals, small_tools, 256)
    large_sources = policy_sources(rng, tools, count=1000, global_count=10)
    large = engine.compile(large_sources)
    large_requests = build_requests(rng, principals, tools, 1024)

    load_runs = load_seconds(engine, large_sources, plan.load_repeats)
    steps = [load_breakdown(engine, large_sources) for _ in range(plan.step_repeats)]
    slices_s = slice_seconds(large, large_requests)
    small_run = scenario(engine, small, small_requests, plan.small_rounds, plan.warmup_rounds)
    large_run = scenario(engine, large, large_requests, plan.large_rounds, plan.warmup_rounds)

    s, g = small_run.latency, large_run.latency
    figures = {
        "ratio_small_vs_cedarpy": s["decide"].p50_us / s["cedarpy"].p50_us,
        "speedup_1000_vs_unsliced": g["cedarpy"].p50_us / g["decide"].p50_us,
        "p99_over_p50_1000": g["decide"].p99_us / g["decide"].p50_us,
        "load_1000_s": statistics.median(load_runs),
    }
    return {
        **{k: round(v, 3) for k, v in figures.items()},
        "goals": {k: f"{sign} {limit}" for k, (_, sign, limit) in GOALS.items()},
        "goals_met": {k: check(figures[k], limit) for k, (check, _, limit) in GOALS.items()},
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
        },
        "latency_us": {
            "small": {k: v.as_json() for k, v in s.items()},
            "1000": {k: v.as_json() for k, v in g.items()},
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
        "machine": machine(load_at_start),
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
    parser = argparse.ArgumentParser(description="decide() against cedarpy, same requests")
    parser.add_argument("--quick", action="store_true", help="fewer samples, under 30 s")
    parser.add_argument("--seed", type=int, default=20261130, help="seed of the workload")
    options = parser.parse_args(argv)
    report = {"mode": "quick" if options.quick else "full",
              **run(QUICK if options.quick else FULL, options.seed)}
    print_table(report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""A request proven well-typed in Python is decided exactly as when Cedar checks it against
the schema: a differential test.

The engine gives Cedar the schema only for requests :func:`proctor.policy.conformance.conforms`
cannot prove (``schema_checks_every_request`` makes it give it always: the reference).
Both are compared, whole ``Decision`` against whole ``Decision``, on

1. the decision bench's workloads (its seed, its 10- and 1,000-policy sets, all its
   requests), every one of which must take the fast path;
2. requests Hypothesis generates around the edges of the schema: every principal and
   resource type, known, unknown and special actions, contexts with fields missing,
   extra, of the wrong type (floats, booleans for numbers, tuples for lists, Longs out of
   range), the source address valid, invalid, or written as another extension, an entity
   or a plain string, strange strings, and arguments that do and do not fit the tool's
   type, including a record with a field named like a Cedar escape.

The run is derandomized, so CI always checks the same requests.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.policy import (
    DecisionRequest,
    EntityRef,
    PolicyEngine,
    Sensitivity,
    ToolCatalog,
    ToolSpec,
    call_context,
    conformance,
)
from proctor.policy.context import issue_context
from proctor.policy.entities import principal_entities

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import decision_workload as bench

_NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


class _Counting(PolicyEngine):
    """Counts which requests were proven (evaluated without the schema)."""

    proven = 0
    checked = 0

    def _schema_for(self, request: DecisionRequest, cedar_request: dict[str, Any]) -> Any:
        schema = super()._schema_for(request, cedar_request)
        if not self.schema_checks_every_request:
            if schema is None:
                self.proven += 1
            else:
                self.checked += 1
        return schema


def _both(engine: PolicyEngine, request: DecisionRequest) -> tuple[Any, Any]:
    engine.schema_checks_every_request = False
    fast = engine.decide(request)
    engine.schema_checks_every_request = True
    try:
        reference = engine.decide(request)
    finally:
        engine.schema_checks_every_request = False
    return fast, reference


def test_the_decision_benchs_workloads_decide_alike_without_cedars_request_check() -> None:
    rng = random.Random(20261130)  # the bench's own seed and order of draws
    catalog = bench.build_catalog(rng)
    principals = bench.build_principals(rng)
    engine = _Counting(catalog, principal_entities(principals))
    tools = list(catalog)
    small = engine.compile(bench.policy_sources(rng, tools[:4], count=10, global_count=2))
    small_requests = bench.build_requests(rng, principals, tools[:4], 256)
    large = engine.compile(bench.policy_sources(rng, tools, count=1000, global_count=10))
    large_requests = bench.build_requests(rng, principals, tools, 1024)
    outcomes: Counter[str] = Counter()
    for policies, requests in ((small, small_requests), (large, large_requests)):
        engine.activate(policies)
        for request in requests:
            fast, reference = _both(engine, request)
            assert fast == reference, request
            outcomes[fast.code.value] += 1
    assert engine.proven == len(small_requests) + len(large_requests)  # all on the fast path
    assert len(outcomes) >= 3, outcomes  # and not one answer for everything


# --- generated requests --------------------------------------------------------------------

_ARGS = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "path": {"type": "string"},
        "flag": {"type": ["boolean", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "nested": {"type": "object", "properties": {"inner": {"type": "integer"}},
                   "required": ["inner"]},
    },
    "required": ["n"],
}
_ESCAPING = {"type": "object", "properties": {
    "rec": {"type": "object", "properties": {
        "__entity": {"type": "object", "properties": {
            "type": {"type": "string"}, "id": {"type": "string"}}}}}}}
_TOOLS = (
    ToolSpec("s1", "t1", Sensitivity.PUBLIC, input_schema=_ARGS),
    ToolSpec("s1", "t2", Sensitivity.RESTRICTED, input_schema=_ARGS),
    ToolSpec("s2", "bare", Sensitivity.INTERNAL),
    ToolSpec("s2", "esc", Sensitivity.INTERNAL, input_schema=_ESCAPING),
)
_AGENT = "spiffe://acme.example/agent/a1"
_PRINCIPALS = {
    "humans": [{"id": "alice"}],
    "groups": [{"id": "g1"}],
    "agents": [{"id": _AGENT, "owner": "alice", "groups": ["g1"], "risk_score": 10}],
}
_POLICIES = """
permit (principal, action in Action::"call", resource)
when { context.time.hour >= 8 && context.delegation.depth < 2 };

forbid (principal, action == Action::"tool:s1/t1", resource)
when { context.args.n > 100 || (context.args has path && context.args.path like "*secret*") };

forbid (principal, action == Action::"tool:s1/t2", resource)
when { context.args has nested && context.args.nested.inner == 7 };

@approval("tagged personal data")
permit (principal, action == Action::"tool:s1/t2", resource)
when { context.args has tags && context.args.tags.contains("pii") };

forbid (principal, action in Action::"call", resource)
when { context has source_ip && !context.source_ip.isInRange(ip("10.0.0.0/8")) };

forbid (principal, action in Action::"call", resource)
when { context.sensitivity_seen >= 3 && !context.approved };

forbid (principal, action == Action::"tool:s2/esc", resource)
when { context.args has rec && context.args.rec has __entity };

permit (principal, action == Action::"grant:issue", resource)
when { context.has_use_limit && context.max_uses <= 10 && context.ttl_seconds < 3600 };

forbid (principal, action, resource) when { principal.risk_score > 50 };
"""

_odd_strings = st.sampled_from(["", "x", "/srv/secret/a", "\x00", "\ud800", "é" * 3, "a" * 300])
_longs = st.one_of(st.integers(-5, 200), st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1]))
_WRONG_VALUES = [1.5, 0.0, True, False, None, "", "\ud800", ("a",), [1], [True], 2**63,
                  -(2**63) - 1, {"__extn": 1}, {}]
_wrong = st.sampled_from(_WRONG_VALUES)
# Strategies are built once, here, not at each draw: Hypothesis validates a new strategy
# on its first draw, which cost more than the drawing itself. They draw from the same
# values as before; choices among values that depend on the draw (the tool's resource
# and action, the args or a wrong value) draw an index into them.
_booleans = st.booleans()
_hours = st.integers(0, 23)
_one_in_10 = st.integers(0, 9)
_one_in_20 = st.integers(0, 19)
_mutations = st.sampled_from(["drop", "add", "wrong"])
_fitting_longs = _longs.filter(lambda n: -(2**63) <= n < 2**63)
_fitting_tags = st.sampled_from([["pii"], ["x", "pii"], [], ["x"]])
_inner = st.sampled_from([7, 1])
_n_or_wrong = st.one_of(_longs, _wrong)
_path_or_wrong = st.one_of(_odd_strings, _wrong)
_flags = st.sampled_from([True, False, None, 1])
_tags = st.one_of(st.lists(st.sampled_from(["pii", "x", 3]), max_size=3), st.just(("pii",)))
_nested = st.sampled_from([{"inner": 7}, {"inner": 1}, {}, {"inner": "7"},
                           {"inner": 7, "more": 1}, [7]])
_recs = st.sampled_from([{"__entity": {"type": "Agent", "id": _AGENT}},
                         {"__entity": {"type": "x"}}, {}])
_args_shape = st.sampled_from([0, 0, 0, 1, 2, 3])  # the args, args, args, [1], None, "args"
_kinds = st.sampled_from(["call", "call", "call", "issue"])
_principals = st.sampled_from([("Agent", _AGENT), ("Agent", _AGENT),
                               ("Agent", "spiffe://acme.example/agent/ghost"),
                               ("Human", "alice"), ("Tool", "s1/t1")])
_tools = st.sampled_from(["s1/t1", "s1/t2", "s2/bare", "s2/esc", "s9/ghost"])
_fitting_tools = st.sampled_from(["s1/t1", "s1/t2", "s2/bare", "s2/esc"])
_resource_shape = st.sampled_from([0, 0, 1])  # the tool, the tool, Server::"s1"
_action_shape = st.sampled_from([0, 0, 1, 2])  # tool:<tool> twice, call, tool:s1/t1
_chains = st.lists(st.sampled_from([_AGENT, "x"]), max_size=3)
_agent_chains = st.lists(st.just(_AGENT), max_size=3)
_max_uses = st.sampled_from([None, 1, 10, 11])
_sensitivities = st.sampled_from(list(Sensitivity))
_constrained = st.lists(st.sampled_from(["n", "path"]), max_size=2)
_fitting_ips = st.sampled_from([None, None, "10.1.2.3", "192.168.0.1", "::1", "garbage"])
_wheres = st.sampled_from(["nowhere", "context", "time", "delegation", "grant"])


def _mutate(draw: st.DrawFn, record: dict[str, Any], spare: dict[str, Any]) -> dict[str, Any]:
    """``record`` with one field dropped, added, or given a wrong value, or left as it is."""
    what = draw(_mutations)
    out = dict(record)
    if what == "drop" and out:
        out.pop(draw(st.sampled_from(sorted(out))))
    elif what == "add":
        out[draw(st.sampled_from(["extra", *sorted(spare)]))] = draw(_wrong)
    elif what == "wrong" and out:
        out[draw(st.sampled_from(sorted(out)))] = draw(_wrong)
    return out


@st.composite
def _fitting_args(draw: st.DrawFn) -> dict[str, Any]:
    args: dict[str, Any] = {"n": draw(_fitting_longs)}
    if draw(_booleans):
        args["path"] = draw(_odd_strings)
    if draw(_booleans):
        args["tags"] = draw(_fitting_tags)
    if draw(_booleans):
        args["nested"] = {"inner": draw(_inner)}
    return args


@st.composite
def _args(draw: st.DrawFn) -> Any:
    args: dict[str, Any] = {"n": draw(_n_or_wrong)}
    if draw(_booleans):
        args["path"] = draw(_path_or_wrong)
    if draw(_booleans):
        args["flag"] = draw(_flags)
    if draw(_booleans):
        args["tags"] = draw(_tags)
    if draw(_booleans):
        args["nested"] = draw(_nested)
    if draw(_booleans):
        args["rec"] = draw(_recs)
    if draw(_booleans):
        args["unknown"] = draw(_wrong)
    return [args, args, args, [1], None, "args"][draw(_args_shape)]


_source_ips = st.sampled_from([
    None, "10.1.2.3", "192.168.0.1", "::1", "10.0.0.0/8", "garbage", "", "010.0.0.1",
    {"__extn": {"fn": "decimal", "arg": "1.0"}}, {"__entity": {"type": "Agent", "id": "x"}},
    {"__extn": {"fn": "ip", "arg": 5}}, "raw"])


@st.composite
def _requests(draw: st.DrawFn) -> DecisionRequest:
    if draw(_booleans):
        return draw(_FITTING_REQUESTS)
    kind = draw(_kinds)
    principal = draw(_principals)
    tool = draw(_tools)
    resource = [("Tool", tool), ("Tool", tool), ("Server", "s1")][draw(_resource_shape)]
    chain = draw(_chains)
    if kind == "issue":
        action = "grant:issue"
        context = issue_context(now=_NOW, task="t", purpose="p", on_behalf_of="alice",
                                ttl_seconds=draw(_longs), max_uses=draw(_max_uses),
                                delegation_chain=chain)
        context = _mutate(draw, context, {"source_ip": 1})
    else:
        action = [f"tool:{tool}", f"tool:{tool}", "call", "tool:s1/t1"][draw(_action_shape)]
        context = call_context(
            now=_NOW.replace(hour=draw(_hours)), task="t",
            purpose=draw(_odd_strings), on_behalf_of="alice", delegation_chain=chain,
            approved=draw(_booleans), sensitivity_seen=draw(_sensitivities),
            grant_constrained=draw(_constrained))
        context["args"] = draw(_ANY_ARGS)
        ip = draw(_source_ips)
        if isinstance(ip, str) and ip != "raw":
            context["source_ip"] = {"__extn": {"fn": "ip", "arg": ip}}
        elif ip is not None:
            context["source_ip"] = "10.0.0.1" if ip == "raw" else ip
        context = _mutate(draw, context, {"ttl_seconds": 1})
        for name in ("time", "delegation"):
            if isinstance(context.get(name), dict) and draw(_one_in_10) == 0:
                context[name] = _mutate(draw, context[name], {})
    if draw(_one_in_20) == 0:
        context.pop("args", None)
    return DecisionRequest(EntityRef(*principal), action, EntityRef(*resource), context)


@st.composite
def _fitting_requests(draw: st.DrawFn) -> DecisionRequest:
    """A request as the enforcer makes them, which the engine should prove."""
    tool = draw(_fitting_tools)
    ip = draw(_fitting_ips)
    context = call_context(
        now=_NOW.replace(hour=draw(_hours)), task="t", purpose=draw(_odd_strings),
        on_behalf_of="alice", delegation_chain=draw(_agent_chains),
        approved=draw(_booleans), source_ip=ip, sensitivity_seen=draw(_sensitivities),
        args=draw(_FITTING_ARGS) if tool.startswith("s1/") else {"extra": 1})
    # half of them with one thing wrong somewhere: a field dropped, added or mistyped
    where = draw(_wheres)
    if where == "context":
        context = _mutate(draw, context, {"source_ip": 1, "ttl_seconds": 1})
    elif where != "nowhere":
        context[where] = _mutate(draw, context[where], {})
    return DecisionRequest(EntityRef("Agent", _AGENT), f"tool:{tool}", EntityRef("Tool", tool),
                           context)


_FITTING_ARGS = _fitting_args()
_ANY_ARGS = _args()
_FITTING_REQUESTS = _fitting_requests()


def _field_paths(record: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, value in record.items():
        paths.append((*prefix, name))
        if isinstance(value, dict) and "__extn" not in value:
            paths.extend(_field_paths(value, (*prefix, name)))
    return paths


def _replaced(record: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``record`` with the field at ``path`` set to ``value`` (dropped if it is ``_DROP``)."""
    out = dict(record)
    if len(path) > 1:
        out[path[0]] = _replaced(out[path[0]], path[1:], value)
    elif value is _DROP:
        del out[path[0]]
    else:
        out[path[0]] = value
    return out


_DROP = object()


def test_every_field_dropped_or_given_every_wrong_value_decides_alike() -> None:
    """Exhaustively, on a request the engine proves: each field of its context (and of
    the records in it) dropped, or set to each wrong value; and an extra field added to
    each record."""
    engine = _Counting(ToolCatalog(_TOOLS), principal_entities(_PRINCIPALS))
    engine.activate(engine.compile({"p.cedar": _POLICIES}))
    context = call_context(now=_NOW, task="t", purpose="p", on_behalf_of="alice",
                           delegation_chain=[_AGENT], source_ip="10.0.0.1",
                           args={"n": 1, "tags": ["x"], "nested": {"inner": 1}},
                           grant_constrained=["n"])
    issue = issue_context(now=_NOW, task="t", purpose="p", on_behalf_of="alice",
                          ttl_seconds=60, max_uses=3)
    cases = [("tool:s1/t1", context), ("grant:issue", issue)]
    compared = 0
    for action, base in cases:
        resource = EntityRef("Tool", "s1/t1")
        assert _both(engine, DecisionRequest(EntityRef("Agent", _AGENT), action, resource,
                                             base))[0].code.value == "policy_permit"
        for path in _field_paths(base):
            for value in [_DROP, *_WRONG_VALUES]:
                request = DecisionRequest(EntityRef("Agent", _AGENT), action, resource,
                                          _replaced(base, path, value))
                fast, reference = _both(engine, request)
                assert fast == reference, (path, value)
                compared += 1
            if isinstance(_value_at(base, path), dict):
                request = DecisionRequest(EntityRef("Agent", _AGENT), action, resource,
                                          _replaced(base, (*path, "extra"), "x"))
                fast, reference = _both(engine, request)
                assert fast == reference, path
        extra = DecisionRequest(EntityRef("Agent", _AGENT), action, resource,
                                {**base, "extra": "x"})
        fast, reference = _both(engine, extra)
        assert fast == reference and fast.code.value == "invalid_request"
    assert compared > 300


def _value_at(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        record = record[name]
    return record


_ENGINE = _Counting(ToolCatalog(_TOOLS), principal_entities(_PRINCIPALS))
_ENGINE.activate(_ENGINE.compile({"p.cedar": _POLICIES}))
_SEEN: Counter[str] = Counter()


@settings(max_examples=800, derandomize=True, deadline=None)
@given(_requests())
def test_generated_requests_decide_alike_with_and_without_cedars_request_check(
        request: DecisionRequest) -> None:
    fast, reference = _both(_ENGINE, request)
    assert fast == reference
    _SEEN[fast.code.value] += 1


def test_the_generated_requests_took_both_paths_and_reached_every_kind_of_answer() -> None:
    # runs after the property above (file order): it proves the comparison was not vacuous
    if not _SEEN:
        test_generated_requests_decide_alike_with_and_without_cedars_request_check()
    # (a purpose with a lone surrogate is checked by Cedar, not proven: 139 proven of 800)
    assert _ENGINE.proven >= 120 and _ENGINE.checked >= 150, (_ENGINE.proven, _ENGINE.checked)
    assert {"policy_permit", "policy_forbid", "no_matching_permit", "approval_required",
            "invalid_request"} <= set(_SEEN), _SEEN


# --- the call context's check, written out -------------------------------------------------


@settings(max_examples=800, derandomize=True, deadline=None)
@given(_requests())
def test_the_written_out_call_check_answers_as_the_record_check_on_generated_contexts(
        request: DecisionRequest) -> None:
    context = request.context
    assert conformance._call(context) is conformance._CALL_RECORD(context)


def test_the_written_out_call_check_answers_as_the_record_check_on_every_wrong_field() -> None:
    base = call_context(now=_NOW, task="t", purpose="p", on_behalf_of="alice",
                        delegation_chain=[_AGENT], source_ip="10.0.0.1",
                        args={"n": 1}, grant_constrained=["n"])
    without_ip = {k: v for k, v in base.items() if k != "source_ip"}
    items = ["é", "\ud800", 1, True, None, ["x"], "x"]
    cases: list[Any] = [base, without_ip, None, [], "x", {**base, "extra": 1},
                        {**without_ip, "extra": 1}, {**without_ip, "source_ip": None}]
    for record in (base, without_ip):
        for path in _field_paths(record):
            for value in [_DROP, *_WRONG_VALUES]:
                cases.append(_replaced(record, path, value))
            if isinstance(_value_at(record, path), dict):
                cases.append(_replaced(record, (*path, "extra"), "x"))
        for field, inner in (("delegation", "chain"), ("grant", "constrained")):
            for item in items:
                cases.append(_replaced(record, (field, inner), ["x", item]))
        for field in ("task", "purpose", "on_behalf_of"):
            cases += [_replaced(record, (field,), "é"), _replaced(record, (field,), "a\ud800")]
    answers = Counter(conformance._call(c) for c in cases)
    for case in cases:
        assert conformance._call(case) is conformance._CALL_RECORD(case), case
    assert answers[True] >= 10 and answers[False] >= 200, answers

"""Sliced evaluation answers exactly as unsliced evaluation: a differential property test.

``CompiledPolicies`` gives Cedar only the policies whose action and resource
scopes can match a request. Hypothesis generates policy sets using every scope
form, both effects, ``@approval`` permits and conditions on the request,
principal and resource. With each policy set it draws a seed for a batch of
requests: known and unknown agents, every tool (including tools no policy names
and a tool missing from the catalog), mismatched action and resource, varying
arguments and approval. (The batch comes from ``random.Random(seed)``: drawing
each request's parts through Hypothesis took most of the test's time; a failure
still names its request.) For every request,

1. Cedar's answer on the slice (decision, determining policy ids, errors)
   equals its answer on the full set, and
2. ``PolicyEngine.decide`` equals the interpretation of the unsliced answer.

The run is derandomized, so CI always checks the same requests.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import product
from typing import Any

import cedarpy
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.policy import (
    CompiledPolicies,
    DecisionRequest,
    EntityRef,
    Outcome,
    PolicyEngine,
    ReasonCode,
    Sensitivity,
    ToolCatalog,
    ToolSpec,
    call_context,
)
from proctor.policy.engine import _interpret
from proctor.policy.entities import principal_entities

EXAMPLES = 200
BATCH = 50
MIN_COMPARED = 10_000

_NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
_ARGS = {"type": "object", "properties": {"n": {"type": "integer"}, "path": {"type": "string"}}}
_TOOLS = (
    ToolSpec("s1", "t1", Sensitivity.PUBLIC, input_schema=_ARGS),
    ToolSpec("s1", "t2", Sensitivity.INTERNAL, input_schema=_ARGS),
    ToolSpec("s2", "t3", Sensitivity.CONFIDENTIAL, input_schema=_ARGS),
    ToolSpec("s2", "t4", Sensitivity.RESTRICTED, input_schema=_ARGS),
    ToolSpec("s3", "t5", Sensitivity.INTERNAL, input_schema=_ARGS),
    # No policy names this tool, and it takes no arguments.
    ToolSpec("s3", "t6", Sensitivity.CONFIDENTIAL),
)
_GHOST_TOOL = "s9/ghost"  # named by policies, missing from the catalog
_NAMED_TOOLS = (*(t.tool_id for t in _TOOLS[:5]), _GHOST_TOOL)
_REQUESTED_TOOLS = (*(t.tool_id for t in _TOOLS), _GHOST_TOOL)
_NAMED_ACTIONS = (*(t.action_id for t in _TOOLS[:5]), "call")
_REQUESTED_ACTIONS = (*(t.action_id for t in _TOOLS), "call", f"tool:{_GHOST_TOOL}")
_SERVERS = ("s1", "s2", "s3", "s9")


def _agent(name: str) -> str:
    return f"spiffe://acme.example/agent/{name}"


_PRINCIPALS = {
    "humans": [{"id": "alice"}, {"id": "bob"}],
    "groups": [{"id": "g1"}, {"id": "g2", "groups": ["g1"]}, {"id": "g3"}],
    "agents": [
        {"id": _agent("a1"), "owner": "alice", "groups": ["g1"], "risk_score": 10},
        {"id": _agent("a2"), "owner": "bob", "groups": ["g2"], "trust_state": "drifted",
         "risk_score": 70},
        {"id": _agent("a3"), "owner": "alice", "groups": ["g3"], "trust_state": "suspended",
         "risk_score": 95},
    ],
}
_AGENTS = (_agent("a1"), _agent("a2"), _agent("a3"), _agent("ghost"))  # ghost: no entity


def _engine() -> PolicyEngine:
    return PolicyEngine(ToolCatalog(_TOOLS), principal_entities(_PRINCIPALS))


def _action(action_id: str) -> str:
    return f'Action::"{action_id}"'


# --- policy sets ---------------------------------------------------------------------------


# Strategies are built once, not at each draw: Hypothesis validates a new strategy on its
# first draw, which cost more than the drawing itself.
_principal_forms = st.sampled_from(["any", "eq", "in", "is", "is-in"])
_agents = st.sampled_from(_AGENTS)
_groups = st.sampled_from(["g1", "g2", "g3"])
_action_forms = st.sampled_from(["any", "eq", "in", "in-list"])
_named_actions = st.sampled_from(_NAMED_ACTIONS)
_action_lists = st.lists(_named_actions, min_size=1, max_size=3, unique=True)
_resource_forms = st.sampled_from(["any", "eq", "eq", "eq-escaped", "in-server", "is",
                                   "is-in-server", "in-tool"])
_servers = st.sampled_from(_SERVERS)
_named_tools = st.sampled_from(_NAMED_TOOLS)
_condition_forms = st.integers(0, 8)
_small_ints = st.integers(-1, 10)
_risk_scores = st.sampled_from([0, 25, 50, 75])
_levels = st.integers(0, 3)
_effects = st.sampled_from(["permit", "permit", "forbid"])
_booleans = st.booleans()
_one_in_3 = st.integers(0, 2)
_one_in_4 = st.integers(0, 3)
_keywords = st.sampled_from(["when", "unless"])
_policy_counts = st.integers(1, 12)


@st.composite
def _principal_scope(draw: st.DrawFn) -> str:
    form = draw(_principal_forms)
    if form == "any":
        return "principal"
    if form == "eq":
        return f'principal == Agent::"{draw(_agents)}"'
    group = draw(_groups)
    if form == "in":
        return f'principal in Group::"{group}"'
    if form == "is":
        return "principal is Agent"
    return f'principal is Agent in Group::"{group}"'


@st.composite
def _action_scope(draw: st.DrawFn) -> str:
    form = draw(_action_forms)
    if form == "any":
        return "action"
    if form == "eq":
        return f"action == {_action(draw(_named_actions))}"
    if form == "in":
        return f"action in {_action(draw(_named_actions))}"
    chosen = draw(_action_lists)
    return f"action in [{', '.join(_action(a) for a in chosen)}]"


@st.composite
def _resource_scope(draw: st.DrawFn) -> str:
    form = draw(_resource_forms)
    if form == "any":
        return "resource"
    if form == "is":
        return "resource is Tool"
    if form in ("in-server", "is-in-server"):
        server = draw(_servers)
        prefix = "resource in" if form == "in-server" else "resource is Tool in"
        return f'{prefix} Server::"{server}"'
    tool = draw(_named_tools)
    if form == "eq-escaped":
        # The same uid spelled with an escape: slicing must key on the uid, not the text.
        return f'resource == Tool::"{tool[:-1]}\\u{{{ord(tool[-1]):x}}}"'
    op = "in" if form == "in-tool" else "=="
    return f'resource {op} Tool::"{tool}"'


# Guarded, so that a policy validates under any action scope: some actions have no
# `args`, and the arguments are optional.
_HAS_N = "context has args && context.args has n"
_HAS_PATH = "context has args && context.args has path"


@st.composite
def _condition(draw: st.DrawFn) -> str:
    form = draw(_condition_forms)
    if form == 0:
        return "true"
    if form == 1:
        return f"{_HAS_N} && context.args.n > {draw(_small_ints)}"
    if form == 2:
        return f'{_HAS_PATH} && context.args.path like "/tmp/*"'
    if form == 3:
        return f"principal.risk_score > {draw(_risk_scores)}"
    if form == 4:
        return 'principal.trust_state == "trusted"'
    if form == 5:
        return f"resource.sensitivity_level >= {draw(_levels)}"
    if form == 6:
        return "context.approved"
    if form == 7:
        return f'resource in Server::"{draw(_servers)}"'
    # Overflows, an evaluation error, when |n| >= 10.
    return f"{_HAS_N} && context.args.n * 1000000000000000000 > 0"


@st.composite
def _policy(draw: st.DrawFn, index: int) -> str:
    effect = draw(_effects)
    lines = []
    if draw(_booleans):
        lines.append(f'@id("p{index}")')
    if effect == "permit" and draw(_one_in_3) == 2:
        lines.append(f'@approval("p{index} needs a human")')
    if draw(_one_in_4) == 3:
        lines.append(f'@reason("{effect} {index}")')
    scopes = [draw(_PRINCIPAL_SCOPES), draw(_ACTION_SCOPES), draw(_RESOURCE_SCOPES)]
    lines.append(f"{effect}({', '.join(scopes)})")
    for _ in range(draw(_one_in_3)):
        keyword = draw(_keywords)
        conditions = draw(_CONDITIONS)
        lines.append(f"{keyword} {{ {' && '.join(conditions)} }}")
    return "\n".join(lines) + ";"


@st.composite
def policy_sources(draw: st.DrawFn) -> str:
    """The text of one valid policy file of 1 to 12 generated policies."""
    count = draw(_policy_counts)
    return "\n\n".join(draw(_POLICIES[i]) for i in range(count))


_PRINCIPAL_SCOPES = _principal_scope()
_ACTION_SCOPES = _action_scope()
_RESOURCE_SCOPES = _resource_scope()
_CONDITIONS = st.lists(_condition(), min_size=1, max_size=2)
_POLICIES = [_policy(i) for i in range(12)]


# --- requests ------------------------------------------------------------------------------


def _call_contexts() -> list[dict[str, Any]]:
    # Built once: drawing one of these is much cheaper than drawing each part.
    contexts = []
    for approved, extra, path, n in product(
        (False, True), (False, True), (None, "/tmp/out", "/etc/passwd"), (None, -3, 0, 4, 9, 10, 12)
    ):
        args: dict[str, Any] = {}
        if n is not None:
            args["n"] = n
        if path is not None:
            args["path"] = path
        if extra:
            args["extra"] = "dropped for tools, invalid for `call`"
        contexts.append(call_context(now=_NOW, args=args, approved=approved))
    return contexts


_CALL_CONTEXTS = _call_contexts()


def decision_requests(rnd: random.Random) -> DecisionRequest:
    """A tool call by a known or unknown agent, on a known or unknown tool."""
    if rnd.randrange(5) < 4:
        tool = rnd.choice(_TOOLS).tool_id
        action = f"tool:{tool}"
    else:  # any action on any tool, unknown ones included
        tool = rnd.choice(_REQUESTED_TOOLS)
        action = rnd.choice(_REQUESTED_ACTIONS)
    return DecisionRequest(
        principal=EntityRef("Agent", rnd.choice(_AGENTS)),
        action=action,
        resource=EntityRef("Tool", tool),
        context=rnd.choice(_CALL_CONTEXTS),
    )


# --- the differential check ----------------------------------------------------------------


@dataclass
class _Tally:
    compared: int = 0
    proper_slices: int = 0
    codes: Counter[ReasonCode] = field(default_factory=Counter)


def _answer(result: cedarpy.AuthzResult) -> tuple[cedarpy.Decision, list[str], list[str]]:
    diagnostics = result.diagnostics
    return result.decision, sorted(diagnostics.reasons), sorted(diagnostics.errors)


def _check(
    engine: PolicyEngine, compiled: CompiledPolicies, request: DecisionRequest, tally: _Tally
) -> None:
    resource = str(request.resource)
    cedar_request = engine._cedar_request(request)
    sliced = cedarpy.is_authorized(
        cedar_request, compiled.slice_for(request.action, resource),
        engine.entities.handle, schema=engine.schema.handle,
    )
    full = cedarpy.is_authorized(
        cedar_request, compiled.full, engine.entities.handle, schema=engine.schema.handle
    )
    where = f"on {request.action} by {request.principal} on {resource}"
    assert _answer(sliced) == _answer(full), f"sliced and full answers differ {where}"
    slice_ids = compiled.slice_ids(request.action, resource)
    assert set(full.diagnostics.reasons) <= set(slice_ids), f"slice_ids misses policies {where}"
    decision = engine.decide(request)
    assert decision == _interpret(full, request, compiled), f"decisions differ {where}"
    tally.compared += 1
    tally.proper_slices += len(slice_ids) < len(compiled)
    tally.codes[decision.code] += 1


def test_sliced_decisions_equal_unsliced_ones_on_generated_policies_and_requests() -> None:
    engine = _engine()
    tally = _Tally()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(policy_sources(), st.integers(0, 2**32 - 1))
    def compare(source: str, seed: int) -> None:
        compiled = engine.compile({"gen.cedar": source})
        engine.activate(compiled)
        rnd = random.Random(seed)
        for _ in range(BATCH):
            _check(engine, compiled, decision_requests(rnd), tally)

    compare()
    assert tally.compared >= MIN_COMPARED
    # The generators reach every kind of answer, and most requests see a real slice.
    assert set(tally.codes) == {
        ReasonCode.PERMITTED, ReasonCode.FORBIDDEN, ReasonCode.NO_PERMIT,
        ReasonCode.APPROVAL_REQUIRED, ReasonCode.INVALID_REQUEST, ReasonCode.ENGINE_ERROR,
    }, tally.codes
    assert tally.proper_slices >= tally.compared // 2


# --- examples where slicing matters --------------------------------------------------------


def _call(tool: str, *, agent: str = "a1", action: str | None = None) -> DecisionRequest:
    return DecisionRequest(
        principal=EntityRef("Agent", _agent(agent)),
        action=action or f"tool:{tool}",
        resource=EntityRef("Tool", tool),
        context=call_context(now=_NOW, args={"n": 1}),
    )


def test_a_forbid_on_one_tool_is_only_in_that_tools_slice_and_wins_there() -> None:
    engine = _engine()
    compiled = engine.compile({"gen.cedar": """
        @id("call-all") permit(principal, action in Action::"call", resource);
        @id("no-t1") forbid(
          principal,
          action in [Action::"tool:s1/t1", Action::"tool:s1/t2"],
          resource == Tool::"s1/t1"
        );
    """})
    engine.activate(compiled)

    assert compiled.slice_ids("tool:s1/t1", 'Tool::"s1/t1"') == ["call-all", "no-t1"]
    assert compiled.slice_ids("tool:s1/t2", 'Tool::"s1/t2"') == ["call-all"]
    denied = engine.decide(_call("s1/t1"))
    assert (denied.outcome, denied.code, denied.policy_ids) == (
        Outcome.DENY, ReasonCode.FORBIDDEN, ("no-t1",)
    )
    assert engine.decide(_call("s1/t2")).policy_ids == ("call-all",)
    # Slices are keyed by action and resource apart: t2's action on t1 still meets the forbid.
    assert engine.decide(_call("s1/t1", action="tool:s1/t2")).code is ReasonCode.FORBIDDEN
    assert engine.decide(_call("s1/t1", action="tool:s2/t3")).is_allowed


def test_a_server_scoped_policy_is_in_every_slice_of_its_action() -> None:
    engine = _engine()
    compiled = engine.compile({"gen.cedar": """
        @id("call-all") permit(principal, action in Action::"call", resource);
        @id("no-s2") forbid(principal, action in Action::"call", resource in Server::"s2");
    """})
    engine.activate(compiled)

    for tool in _TOOLS:
        assert "no-s2" in compiled.slice_ids(tool.action_id, f'Tool::"{tool.tool_id}"')
    assert engine.decide(_call("s2/t3")).policy_ids == ("no-s2",)
    assert engine.decide(_call("s2/t4")).code is ReasonCode.FORBIDDEN
    assert engine.decide(_call("s1/t1")).is_allowed


def test_a_tool_no_policy_names_gets_only_the_open_resource_policies_of_its_action() -> None:
    engine = _engine()
    compiled = engine.compile({"gen.cedar": """
        @id("t5-only") permit(principal, action == Action::"tool:s3/t5", resource);
        @id("no-t1") forbid(principal, action, resource == Tool::"s1/t1");
        @id("risky") forbid(principal, action, resource) when { principal.risk_score > 50 };
    """})
    engine.activate(compiled)

    assert compiled.slice_ids("tool:s3/t6", 'Tool::"s3/t6"') == ["risky"]
    no_permit = engine.decide(_call("s3/t6"))
    assert no_permit.code is ReasonCode.NO_PERMIT
    assert engine.decide(_call("s3/t6", agent="a2")).policy_ids == ("risky",)


def test_an_engine_error_decision_does_not_depend_on_the_slice() -> None:
    # Cedar lists errors in policy-set order (a slice puts any-action policies first) and
    # the determining policy ids as a hash set: a decision must carry neither order.
    engine = _engine()
    compiled = engine.compile({"gen.cedar": """
        @id("a") permit(principal, action == Action::"tool:s1/t1", resource)
          when { principal.risk_score > 0 };
        @id("b") permit(principal, action, resource) when { principal.risk_score > 0 };
        @id("p0") permit(principal, action, resource);
        @id("p1") permit(principal, action, resource);
        @id("p2") permit(principal, action, resource);
        @id("p3") permit(principal, action, resource);
    """})
    engine.activate(compiled)
    request = _call("s1/t1", agent="ghost")  # no such entity: reading its risk score fails
    full = cedarpy.is_authorized(
        engine._cedar_request(request), compiled.full,
        engine.entities.handle, schema=engine.schema.handle,
    )

    decisions = {engine.decide(request) for _ in range(5)}
    assert decisions == {_interpret(full, request, compiled)}
    (decision,) = decisions
    assert decision.code is ReasonCode.ENGINE_ERROR
    assert decision.policy_ids == ("p0", "p1", "p2", "p3")

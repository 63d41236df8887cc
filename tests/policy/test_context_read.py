"""A request given to Cedar without the context attributes no policy of its slice reads is
decided exactly as with the whole context: a differential test.

For a request proven well-typed (:mod:`proctor.policy.conformance`) the engine gives Cedar
only the context attributes the slice's policies read (``context.a``, ``context has a``),
plus ``approved`` and the values conformance does not prove Cedar can build (the
arguments, the source address); ``context_read_whole`` makes it give the whole context
(the reference). Both are compared, whole ``Decision`` against whole ``Decision``, on

1. the decision bench's workloads (its seed, its 10- and 1,000-policy sets, all its
   requests) and issuances of every tool by every agent of the bench under issuance
   policies that read the time, the delegation and the use limit;
2. the enforcer bench's own call (its policies, its tool, its context);
3. the requests Hypothesis generates for the conformance test (derandomized, with the
   kinds that matter given as explicit examples);

and Cedar must have been given a smaller context for many of them, or the test proves
nothing.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import example, given, settings

from proctor.policy import DecisionRequest, EntityRef, PolicyEngine, ToolCatalog
from proctor.policy.context import call_context
from proctor.policy.entities import principal_entities
from tests.policy.test_decision_memo import _PII_CALL, bench_workloads
from tests.policy.test_request_conformance import (
    _AGENT,
    _NOW,
    _POLICIES,
    _PRINCIPALS,
    _TOOLS,
    _requests,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import api_workload as api_bench
import enforcer_workload as enforcer_bench

_GIVEN: list[dict[str, Any]] = []  # the contexts Cedar was given, as parsed back
_real_is_authorized = cedarpy.is_authorized


def _spied(request: dict[str, Any], *args: Any, **kwargs: Any) -> cedarpy.AuthzResult:
    context = request.get("context")
    _GIVEN.append(json.loads(context) if isinstance(context, str) else dict(context or {}))
    return _real_is_authorized(request, *args, **kwargs)


def _both(engine: PolicyEngine, request: DecisionRequest, seen: Counter[str]) -> None:
    """Decided with the context read only, then whole; the same ``Decision``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cedarpy, "is_authorized", _spied)
        _GIVEN.clear()
        engine.context_read_whole = False
        read_only = engine.decide(request)
        given_read = list(_GIVEN)
        _GIVEN.clear()
        engine.context_read_whole = True
        try:
            whole = engine.decide(request)
        finally:
            engine.context_read_whole = False
        given_whole = list(_GIVEN)
    assert read_only == whole, request
    seen[whole.code.value] += 1
    if len(given_read) == len(given_whole) and any(
            len(r) < len(w) for r, w in zip(given_read, given_whole, strict=True)):
        seen["fewer"] += 1


def test_the_decision_benchs_workloads_and_issuances_decide_alike_read_only() -> None:
    engine, workloads = bench_workloads()
    seen: Counter[str] = Counter()
    for policies, requests in workloads:
        engine.activate(policies)
        for request in requests:
            _both(engine, request, seen)
    assert {"policy_permit", "policy_forbid", "no_matching_permit",
            "approval_required"} <= set(seen), seen
    assert seen["fewer"] > 1000, seen  # Cedar was given less, and decided alike


def test_the_enforcer_benchs_call_decides_alike_read_only(tmp_path: Path) -> None:
    setup = enforcer_bench.home_on(tmp_path / "home", enforcer_bench.sqlite_url(tmp_path / "home"))
    try:
        verdict = enforcer_bench.decide(setup, api_bench.proofs(setup, 1)[0])
        assert verdict.request is not None
        engine = setup.runtime.engine
        seen: Counter[str] = Counter()
        request = verdict.request
        _both(engine, request, seen)
        # the same call with the values of every policy's reading changed
        for changes in ({"approved": True}, {"sensitivity_seen": 3},
                        {"purpose": ""}, {"args": {"repo_path": "/srv/repos/../etc"}},
                        {"args": {"repo_path": "/home/x"}},
                        {"delegation": {"depth": 3, "chain": ["a", "b", "c"]}}):
            _both(engine, DecisionRequest(request.principal, request.action, request.resource,
                                          {**request.context, **changes}), seen)
        assert seen["policy_permit"] >= 2 and seen["policy_forbid"] >= 2, seen
        assert seen["fewer"] == sum(v for k, v in seen.items() if k != "fewer"), seen
    finally:
        setup.runtime.close()


_ENGINE = PolicyEngine(ToolCatalog(_TOOLS), principal_entities(_PRINCIPALS))
_ENGINE.activate(_ENGINE.compile({"p.cedar": _POLICIES}))
_SEEN: Counter[str] = Counter()


def _call(**changes: Any) -> DecisionRequest:
    context = call_context(now=_NOW, task="t", purpose="x", on_behalf_of="alice",
                           args={"n": 1}, grant_constrained=["n"])
    return DecisionRequest(EntityRef("Agent", _AGENT), "tool:s1/t1", EntityRef("Tool", "s1/t1"),
                           {**context, **changes})


# Hypothesis's sequence moves with any change to the code it draws through: the kinds the
# last test asks for are each given once here as well
@settings(max_examples=600, derandomize=True, deadline=None)
@given(_requests())
@example(_PII_CALL)
@example(_call())
@example(_call(source_ip={"__extn": {"fn": "ip", "arg": "garbage"}}))
@example(_call(source_ip={"__extn": {"fn": "ip", "arg": "192.168.0.1"}}))
@example(_call(sensitivity_seen=3))
@example(_call(args={"n": 101}))
@example(_call(task="\ud800"))
def test_generated_requests_decide_alike_read_only(request: DecisionRequest) -> None:
    _both(_ENGINE, request, _SEEN)


def test_the_generated_requests_reached_every_kind_of_answer_read_only() -> None:
    if not _SEEN:
        test_generated_requests_decide_alike_read_only()
    assert {"policy_permit", "policy_forbid", "no_matching_permit", "approval_required",
            "invalid_request"} <= set(_SEEN), _SEEN
    assert _SEEN["fewer"] >= 100, _SEEN


def test_an_unread_source_address_cedar_cannot_build_is_still_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # no policy of this set reads the source address: the arguments and the address are
    # given to Cedar all the same, so a request it cannot build stays refused
    engine = PolicyEngine(ToolCatalog(_TOOLS), principal_entities(_PRINCIPALS))
    engine.activate(engine.compile({"p.cedar": """
permit (principal, action == Action::"tool:s1/t1", resource) when { context.args.n < 5 };
"""}))
    garbage = _call(source_ip={"__extn": {"fn": "ip", "arg": "garbage"}})
    seen: Counter[str] = Counter()
    _both(engine, garbage, seen)
    _both(engine, _call(), seen)
    assert seen == Counter({"invalid_request": 1, "policy_permit": 1, "fewer": 1}), seen
    monkeypatch.setattr(cedarpy, "is_authorized", _spied)
    _GIVEN.clear()
    assert engine.decide(garbage).code.value == "invalid_request"
    assert sorted(_GIVEN[0]) == ["approved", "args", "source_ip"]


def test_an_evaluation_error_is_cedars_on_the_whole_context(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # an overflow fails the policy: the deny carries Cedar's errors as the whole context
    # gives them, for the context is given again whole when Cedar reports any
    engine = PolicyEngine(ToolCatalog(_TOOLS), principal_entities(_PRINCIPALS))
    engine.activate(engine.compile({"p.cedar": """
permit (principal, action == Action::"tool:s1/t1", resource)
when { context.delegation.depth + 9223372036854775807 > 0 };
"""}))
    seen: Counter[str] = Counter()
    _both(engine, _call(delegation={"depth": 1, "chain": [_AGENT]}), seen)
    assert seen == Counter({"engine_error": 1}), seen
    monkeypatch.setattr(cedarpy, "is_authorized", _spied)
    _GIVEN.clear()
    failed = engine.decide(_call(delegation={"depth": 1, "chain": [_AGENT]}))
    assert failed.code.value == "engine_error" and failed.errors
    assert [sorted(c) for c in _GIVEN] == [
        ["approved", "args", "delegation"], sorted(_call().context)]

"""The writers' fold without JSON, held to the fold through JSON: over generated event
streams (decisions with numbers and domains in any order, denies, calls decided again,
leaks, more tasks than a baseline keeps, long and short gaps, values of odd types), an
event's parts taken from the event written (``as_folded``, its time as a timestamp)
and a baseline's text kept in parts (``BaselineText``, told what each fold changed)
leave the very baseline, score and named factors that parsing each event's body,
folding it and writing the whole baseline with ``json.dumps`` leave — compared value by
value with their types and the order of every object's keys."""

from __future__ import annotations

import copy
import json
import marshal
import random
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any

import pytest

from proctor.audit import Actor, ActorType, AuditEvent, DecisionRecord, new_event_id
from proctor.audit.features import argument_features
from proctor.oversight.risk import RiskConfig
from proctor.oversight.risk.baseline import (
    COUNTERS,
    fold_event,
    named,
    new_baseline,
    note_trend,
    score_and_names,
    score_of,
)
from proctor.oversight.risk.config import DEFAULT_WEIGHTS
from proctor.oversight.risk.folding import agent_of
from proctor.oversight.risk.written import BaselineText, as_folded, dumps

AGENTS = ("spiffe://acme.example/agent/coder", "spiffe://acme.example/agent/builder")
TOOLS = ("kb/search", "crm/lookup", "crm/refund", "hr/salaries", "web/fetch", "git/push")
SENSITIVITY = {"crm/lookup": 2, "hr/salaries": 3, "crm/refund": 1, "web/fetch": 1}
DOMAINS = ("kb.acme.example", "evil.example", "docs.acme.example", "b.example")
CONFIGS = [
    RiskConfig(),
    RiskConfig(prior=0, warmup_calls=5, min_samples=3, odd_hour_share=0.2,
               rate_window_seconds=1),
    RiskConfig(weights={**DEFAULT_WEIGHTS, "new_tool": 0, "odd_hour": 45},
               half_life_seconds={"new_tool": 60, "call_rate": 1, "leaked_grant": 0},
               prior=100, warmup_calls=0, ratio_half_life_seconds=0),
]
OFFSET = timezone(timedelta(hours=5, minutes=30))


class Code(IntEnum):
    AMOUNT = 1200


class Text(str):
    __slots__ = ()


def _sensitivity(tool: str) -> int:
    return SENSITIVITY.get(tool, 0)


def _event(rng: random.Random, at: datetime) -> AuditEvent:
    agent = rng.choice(AGENTS)
    if rng.random() < 0.04:
        return AuditEvent(id=new_event_id(at), time=at,
                          actor=Actor(ActorType.SYSTEM, "proctor-gateway"),
                          action=rng.choice(("gateway.leak", "gateway.redact")),
                          target=f'Agent::"{agent}"', outcome="revoked",
                          detail={"agent": agent, "found_in": "arguments of crm/refund",
                                  "findings": rng.randint(1, 3)})
    tool = rng.choice(TOOLS)
    outcome = rng.choices(("allow", "deny", "approval_required"), (75, 15, 10))[0]
    shown = {"allow": "allowed", "deny": "denied", "approval_required": "pending_approval"}
    args: dict[str, Any] = {}
    for name in rng.sample(("zeta", "amount", "count", "b"), rng.randint(0, 3)):
        args[name] = rng.choice((10, 12, 15, 900, rng.randint(-5, 10_000), 2.5, True))
    if rng.random() < 0.3:
        args["url"] = f"https://{rng.choice(DOMAINS)}/a"
    if rng.random() < 0.1:
        args["to"] = f"ann@{rng.choice(DOMAINS)}"
    task = f"task-{rng.randint(0, 80)}"
    time = at.astimezone(OFFSET) if rng.random() < 0.1 else at
    actor = Actor(ActorType.AGENT, agent, "alice@acme.example")
    record = DecisionRecord(outcome, "policy_permit", ("p",), 1)
    odd = rng.random()
    if odd < 0.05:  # a call refused by its write, decided again
        return AuditEvent(id=new_event_id(at), time=time, actor=actor, action=f"tool:{tool}",
                          target=f'Tool::"{tool}"', outcome="denied", task=task,
                          decision=DecisionRecord("deny", "agent_changed"),
                          detail={"code": "agent_changed"})
    if odd < 0.10:  # values whose JSON reads back as another type, made with the dataclass
        detail = {"args": {"numbers": {"amount": Code.AMOUNT, "a": 3},
                           "domains": (rng.choice(DOMAINS),)}}
        return AuditEvent(id=new_event_id(at), time=time, actor=actor, action=f"tool:{tool}",
                          target=f'Tool::"{tool}"', outcome=shown[outcome], task=Text(task),
                          decision=record, detail=detail)
    if odd < 0.13:  # no decision record: its outcome read from the event's
        return AuditEvent(id=new_event_id(at), time=time, actor=actor, action=f"tool:{tool}",
                          target=f'Tool::"{tool}"', outcome=shown[outcome], task=task,
                          detail={"args": argument_features(args)} if args else {})
    return AuditEvent.of_decision(
        new_event_id(at), time, actor, f"tool:{tool}", f'Tool::"{tool}"', shown[outcome],
        task, (), record, "0" * 64, "acc_x", None, args=args)


def _same(left: Any, right: Any) -> bool:
    """Equal values of the same types, every object's keys in the same order.

    First in C: ``marshal`` (version 0: no references, no interning) writes each value
    with its exact type (a bool, an int, a float, a str, a list, a tuple apart), each
    object's keys in their order, and refuses a subclass; equal bytes are the same
    values, as the walk below would find. (It writes a bytearray as bytes: the right
    side here is always read from JSON, which has neither.) Different bytes, or a
    subclass, and the walk decides (a -0.0 is written apart from 0.0 that it equals)."""
    try:
        if marshal.dumps(left, 0) == marshal.dumps(right, 0):
            return True
    except ValueError:
        pass
    return _walked_same(left, right)


def _walked_same(left: Any, right: Any) -> bool:
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return (list(left) == list(right)
                and all(_walked_same(left[key], right[key]) for key in left))
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_walked_same, left, right))
    if isinstance(left, float) and left != left:
        return bool(right != right)
    return bool(left == right)


def _sorted(document: Any) -> Any:
    """The top-level keys in one order (the kept text writes them in another)."""
    return dict(sorted(document.items()))


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "quick", "odd"])
@pytest.mark.parametrize("seed", range(3))
def test_the_fold_without_json_leaves_what_the_fold_through_json_leaves(
        config: RiskConfig, seed: int) -> None:
    rng = random.Random(seed)
    at = datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)
    fast: dict[str, dict[str, Any]] = {}
    texts: dict[str, BaselineText] = {}
    slow: dict[str, dict[str, Any]] = {}
    seen = dict.fromkeys(("folded", "parsed", "unchanged", "kept"), 0)
    scores: set[int] = set()
    for _ in range(1500):
        at += timedelta(seconds=rng.choice((0.000001, 0.3, 1, 2, 30, 600, 3 * 3600)))
        batch = [_event(rng, at) for _ in range(rng.choice((1, 1, 1, 3)))]
        touched = set()
        for event in batch:
            # through JSON: the body parsed, its time read from it
            parsed = json.loads(event.canonical_body())
            agent = agent_of(parsed)
            if agent is None:
                continue
            touched.add(agent)
            fold_event(slow.setdefault(agent, new_baseline()), parsed, agent, config,
                       _sensitivity)
            # without: the event's own values, its time as a timestamp
            view = as_folded(event)
            seen["folded" if view is not None else "parsed"] += 1
            if view is None:
                view, when = parsed, None
            else:
                assert _same(view["detail"].get("args"), parsed["detail"].get("args"))
                when = event.time.timestamp()
            assert agent_of(view) == agent
            baseline = fast.setdefault(agent, new_baseline())
            text = texts.setdefault(agent, BaselineText(baseline))
            if fold_event(baseline, view, agent, config, _sensitivity, at=when):
                text.changed()
            else:
                seen["unchanged"] += 1
        now = at.timestamp() + rng.choice((0, 0.5, 7200))
        for agent in sorted(touched):
            score, _, factors = score_of(slow[agent], now, config)
            note_trend(slow[agent], now, score)
            assert score_and_names(fast[agent], now, config) == (score, named(factors))
            if note_trend(fast[agent], now, score):
                texts[agent].trend_changed()
            else:
                seen["kept"] += 1
            written = json.loads(texts[agent].text())
            assert _same(_sorted(written), _sorted(json.loads(dumps(slow[agent]))))
            assert _same(fast[agent], slow[agent])
            scores.add(score)
    # both ways were taken, and many scores and texts kept were compared
    assert seen["folded"] > 500 and seen["parsed"] > 50
    assert seen["unchanged"] > 300 and seen["kept"] > 200
    assert len(scores) > 5
    assert max(len(b["tasks"]) for b in fast.values()) == 50  # tasks were dropped too


def test_a_baseline_that_is_not_this_writers_is_written_as_json_dumps_writes_it() -> None:
    baseline: dict[Any, Any] = {**new_baseline(), "trend": [[1796660431.5, 1.0]], 7: "odd"}
    text = BaselineText(baseline)
    assert text.text() == dumps(baseline)
    kept = {**new_baseline(), "trend": [[1796660431.5, True], [0.0, 1]], "extra": [1, 2.5]}
    written = BaselineText(kept)
    for _ in range(2):  # kept, then from what it kept
        assert _same(_sorted(json.loads(written.text())), _sorted(json.loads(dumps(kept))))


def test_the_kept_text_is_the_objects_own_and_changes_only_when_told() -> None:
    baseline = new_baseline()
    text = BaselineText(baseline)
    first = text.text()
    baseline["tools"].append("kb/search")  # behind its back: the text it kept stands
    assert text.text() == first
    text.changed()
    assert json.loads(text.text())["tools"] == ["kb/search"]
    baseline["trend"].append([1796660431.5, 3])
    assert json.loads(text.text())["trend"] == []
    text.trend_changed()
    assert json.loads(text.text())["trend"] == [[1796660431.5, 3]]
    other = copy.deepcopy(baseline)
    assert json.loads(BaselineText(other).text()) == json.loads(text.text())


def test_the_hours_text_follows_each_float_replaced_and_any_list_or_type() -> None:
    baseline = new_baseline()
    text = BaselineText(baseline)
    hours = baseline["hours"]
    for index, value in ((3, 1.0), (3, 2.0), (7, -0.0), (0, float("nan")), (23, 1e300)):
        hours[index] = value
        assert _hours_of(text) == dumps(baseline["hours"])  # a counter: written every time
    hours[5] = 4  # an int: written as an int
    assert _hours_of(text) == dumps(baseline["hours"])
    hours[5] = 4.0
    assert _hours_of(text) == dumps(baseline["hours"])
    baseline["hours"] = [1.5, True, "x"]  # another list, not of floats
    assert _hours_of(text) == dumps(baseline["hours"])
    baseline["hours"] = hours
    hours.append(2.5)  # another length
    assert _hours_of(text) == dumps(baseline["hours"])


def _hours_of(text: BaselineText) -> str:
    """The hours' text as written (compared as text: -0.0, NaN and 1e300 as dumps writes them)."""
    written = text.text()
    assert _same(_sorted(json.loads(written)), _sorted(json.loads(dumps(text.baseline))))
    start = written.index('"hours": ') + len('"hours": ')
    return written[start:written.index("]", start) + 1]


def _counters_as_dumps_writes_them(baseline: dict[str, Any]) -> str:
    """The text a baseline's counters had before they were written in one piece: each
    with ``dumps``, in the baseline's order (then the rest, then the trend)."""
    counters = [f"{dumps(key)}: {dumps(value)}" for key, value in baseline.items()
                if key in COUNTERS]
    rest = [f"{dumps(key)}: {dumps(value)}" for key, value in baseline.items()
            if key not in COUNTERS and key != "trend"]
    trend = [f'"trend": {dumps(baseline["trend"])}'] if "trend" in baseline else []
    return "{" + ", ".join([*counters, *rest, *trend]) + "}"


EDGE_FLOATS = (0.0, -0.0, 5e-324, 1e-300, 2.5e-7, 1.0, 150.0, 149.9589784524985,
               1796691116.179009, 1e16, 1.7976931348623157e308, -3.25)
NOT_FINITE = (float("nan"), float("inf"), float("-inf"))


def _edge_baseline(rng: random.Random) -> dict[str, Any]:
    """A baseline of the fold's shape, its counters drawn from edge values and, now and
    then, a value of another type or a NaN or infinity (written as ``dumps`` writes it)."""
    def number() -> Any:
        odd = rng.random()
        if odd < 0.03:
            return rng.choice(NOT_FINITE)
        if odd < 0.06:
            return rng.choice((True, 3, Code.AMOUNT, "1.0", None))
        return rng.choice(EDGE_FLOATS)

    def count() -> Any:
        return rng.choice((0, 1, 150, 2**70, -4)) if rng.random() > 0.05 else rng.choice(
            (True, 2.0, Code.AMOUNT))

    baseline = new_baseline()
    baseline["calls"] = count()
    baseline["rate"] = {"start": rng.choice((None, 1796691060, 1796691060.5)), "count": count(),
                        "mean": number(), "var": number(), "windows": count()}
    baseline["hours"] = [rng.choice(EDGE_FLOATS) for _ in range(24)]
    baseline["ratios"] = {"total": number(), "denies": number(), "approvals": number(),
                          "at": rng.choice((None, number()))}
    if rng.random() < 0.5:
        name = rng.choice(("amount", "ünit", 'a"b'))
        baseline["numbers"] = {f"crm/refund|{name}":
                               [rng.randint(-5, 10_000) for _ in range(rng.randint(0, 5))]}
    baseline["tools"] = [rng.choice(("kb/search", "crm/réfund", "web/\u2028fetch"))]
    baseline["domains"] = [rng.choice(("kb.acme.example", "b\u00fccher.example", 'a"b\\c'))]
    baseline["trend"] = [[rng.choice(EDGE_FLOATS), rng.randint(0, 100)]]
    if rng.random() < 0.7:
        baseline["max_sensitivity"] = count()
    if rng.random() < 0.1:  # the counters' keys in another order, or one missing
        del baseline[rng.choice(("ratios", "numbers", "hours"))]
    if rng.random() < 0.1:
        nested = rng.choice(("rate", "ratios"))
        if nested in baseline:
            baseline[nested] = dict(reversed(list(baseline[nested].items())))
    return baseline


@pytest.mark.parametrize("seed", range(4))
def test_the_counters_in_one_piece_are_written_as_dumps_writes_each(seed: int) -> None:
    rng = random.Random(seed)
    one_piece = 0
    for _ in range(2000):
        baseline = _edge_baseline(rng)
        text = BaselineText(baseline)
        one_piece += text._counters_text(baseline) is not None
        assert text.text() == _counters_as_dumps_writes_them(baseline)
        assert text.text() == _counters_as_dumps_writes_them(baseline)  # from what it kept
    assert 500 < one_piece < 2000  # both ways were taken


def test_a_baseline_folded_is_written_in_one_piece_as_dumps_writes_each() -> None:
    rng = random.Random(7)
    at = datetime(2026, 11, 30, 23, 59, 58, 999999, tzinfo=UTC)
    baselines: dict[str, dict[str, Any]] = {}
    texts: dict[str, BaselineText] = {}
    for _ in range(600):
        at += timedelta(seconds=rng.choice((0.000001, 0.3, 61, 3 * 3600)))
        event = _event(rng, at)
        view = json.loads(event.canonical_body())
        agent = agent_of(view)
        if agent is None:
            continue
        baseline = baselines.setdefault(agent, new_baseline())
        text = texts.setdefault(agent, BaselineText(baseline))
        text.changed()
        text.trend_changed()
        fold_event(baseline, view, agent, CONFIGS[1], _sensitivity)
        assert text._counters_text(baseline) is not None
        assert text.text() == _counters_as_dumps_writes_them(baseline)

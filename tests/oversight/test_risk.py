"""The risk score from synthetic audit streams: real events through the real audit
log, folded by the risk engine from its cursor. Each factor moves the score in the
documented direction; signals fade; the score survives a restart; a policy on
``principal.risk_score`` flips a decision."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, DecisionRecord, new_event_id
from proctor.audit.features import argument_features
from proctor.clock import FrozenClock
from proctor.identity import AgentRegistry, OwnKeyProof, TrustConfig, sync_principals
from proctor.oversight.risk import RiskConfig, RiskEngine
from proctor.policy import (
    DecisionRequest,
    EntityRef,
    Outcome,
    PolicyEngine,
    Sensitivity,
    ToolCatalog,
    ToolSpec,
    call_context,
)
from proctor.store import Store, open_store
from tests.identity.factories import CODER, manifest, public_jwk

OWNER = "bob@acme.example"
SENSITIVITY = {"kb/search": 0, "crm/lookup": 2, "hr/salaries": 3, "crm/refund": 1,
               "web/fetch": 1}
OUTCOMES = {"allow": ("allowed", "policy_permit"), "deny": ("denied", "policy_forbid"),
            "approval_required": ("pending_approval", "approval_required")}


@dataclass
class Stream:
    store: Store
    registry: AgentRegistry
    audit: AuditLog
    clock: FrozenClock
    config: RiskConfig

    def engine(self) -> RiskEngine:
        return RiskEngine(self.store, self.registry, self.clock, self.config,
                          sensitivity_of=lambda tool: SENSITIVITY.get(tool, 0))

    def call(self, tool: str, outcome: str = "allow", *, args: dict[str, Any] | None = None,
             task: str = "task-1", seconds: float = 30) -> Stream:
        """One decided call, ``seconds`` after the previous one."""
        self.clock.advance(seconds=seconds)
        now = self.clock.now()
        detail: dict[str, Any] = {}
        features = argument_features(args or {})
        if features:
            detail["args"] = features
        shown, code = OUTCOMES[outcome]
        self.audit.record(AuditEvent(
            id=new_event_id(now), time=now, actor=Actor(ActorType.AGENT, CODER, OWNER),
            action=f"tool:{tool}", target=f'Tool::"{tool}"', outcome=shown, task=task,
            decision=DecisionRecord(outcome, code, ("p",), 1), detail=detail))
        return self

    def gateway(self, action: str, **detail: Any) -> Stream:
        self.clock.advance(seconds=5)
        now = self.clock.now()
        self.audit.record(AuditEvent(
            id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, "proctor-gateway"),
            action=action, target=f'Agent::"{CODER}"', outcome="revoked",
            detail={"agent": CODER, **detail}))
        return self

    def usual(self, count: int = 30) -> None:
        """The agent's usual work: a few tools, small refunds, one domain, 10:00-10:15."""
        for i in range(count):
            tool = ("kb/search", "crm/lookup", "crm/refund")[i % 3]
            args = {"amount_cents": 1000 + 100 * (i % 5)} if tool == "crm/refund" else \
                {"url": "https://kb.acme.example/a"}
            self.call(tool, args=args, task=f"task-{i // 6}")


@pytest.fixture
def stream(database_url: str, clock: FrozenClock) -> Iterator[Stream]:
    yield from _stream(database_url, clock)


def _stream(database_url: str, clock: FrozenClock) -> Iterator[Stream]:
    store = open_store(database_url)
    registry = AgentRegistry(store, clock, TrustConfig("acme.example"))
    registry.register(CODER, owner=OWNER, groups=["coders"], manifest=manifest(),
                      proof=OwnKeyProof(public_jwk(ECKey.generate_key("P-256"))))
    audit = AuditLog(store, clock=clock)
    clock.advance(seconds=10 * 3600 - clock.now().hour * 3600 - clock.now().minute * 60
                  - clock.now().second)  # 10:00 UTC that day
    try:
        yield Stream(store, registry, audit, clock, RiskConfig())
    finally:
        audit.close()
        store.close()


def _levels(engine: RiskEngine) -> dict[str, float]:
    return {f.name: f.level for f in engine.view(CODER).factors}


def test_a_new_agent_starts_from_the_documented_prior(stream: Stream) -> None:
    engine = stream.engine()
    view = engine.view(CODER)
    assert view.score == 10 and view.prior == 10
    assert all(f.level == 0 for f in view.factors)
    stream.usual(10)
    engine.catch_up()
    assert engine.view(CODER).prior == 5  # the prior fades over the 20 warm-up calls


TRIGGERS: dict[str, Callable[[Stream], object]] = {
    "call_rate": lambda s: [s.call("kb/search", seconds=1) for _ in range(40)],
    "new_tool": lambda s: s.call("git/push"),
    "deny_ratio": lambda s: [s.call("crm/lookup", "deny") for _ in range(30)],
    "approval_ratio": lambda s: [s.call("crm/refund", "approval_required") for _ in range(30)],
    "sensitivity_escalation": lambda s: (s.call("kb/search", task="t-x"),
                                         s.call("hr/salaries", task="t-x")),
    "new_destination": lambda s: s.call("web/fetch", args={"url": "https://evil.example/x"}),
    "numeric_outlier": lambda s: s.call("crm/refund", args={"amount_cents": 90000}),
    "odd_hour": lambda s: s.call("kb/search", seconds=15 * 3600),
    "leaked_secret": lambda s: s.gateway("gateway.redact", findings=2),
    "leaked_grant": lambda s: s.gateway("gateway.leak", found_in="arguments of crm/refund"),
}


@pytest.mark.parametrize("factor", sorted(TRIGGERS))
def test_each_factor_raises_the_score_and_is_named(stream: Stream, factor: str) -> None:
    engine = stream.engine()
    stream.usual()
    engine.catch_up()
    before = engine.view(CODER)
    assert before.score == 0, before.as_json()  # warm, and nothing odd
    TRIGGERS[factor](stream)
    changed = engine.catch_up()
    after = engine.view(CODER)
    levels = {f.name: f.level for f in after.factors}
    assert levels[factor] > 0, after.as_json()
    assert after.score > before.score
    assert changed.get(CODER) == after.score
    agent = stream.registry.get(CODER)
    assert agent.risk_score == after.score  # what Cedar sees as principal.risk_score
    assert factor in agent.risk_factors
    points = {f.name: f.points for f in after.factors}
    assert after.score == min(100, math.floor(after.prior + sum(points.values()) + 0.5))


def test_signals_fade_with_their_half_life(stream: Stream) -> None:
    engine = stream.engine()
    stream.usual()
    stream.gateway("gateway.leak", found_in="arguments of crm/refund")
    engine.catch_up()
    high = stream.registry.get(CODER).risk_score
    assert high == 30
    stream.clock.advance(seconds=86400)  # one half-life of a leaked grant
    assert engine.rescore() == {CODER: 15}
    assert stream.registry.get(CODER).risk_score == 15


def test_a_factor_that_fades_below_naming_while_the_score_holds_is_no_longer_published(
        stream: Stream) -> None:
    """A rescore publishes the names with the score: a factor under the naming level is
    gone from ``principal.risk_factors`` even when the rounded score did not move."""
    engine = stream.engine()
    stream.usual()
    stream.gateway("gateway.redact", findings=2)  # leaked_secret: 5 points at full level
    engine.catch_up()
    level = _levels(engine)["leaked_secret"]
    half_life = stream.config.half_life_seconds["leaked_secret"]

    def fade_to(target: float) -> None:
        at = stream.clock.now()
        stream.clock.advance(seconds=half_life * math.log2(_levels(engine)["leaked_secret"]
                                                           / target))
        assert stream.clock.now() > at

    assert level > 0.3
    fade_to(0.27)  # 1.35 points: a score of 1, the factor named
    engine.rescore()
    agent = stream.registry.get(CODER)
    assert (agent.risk_score, agent.risk_factors) == (1, ("leaked_secret",))
    fade_to(0.23)  # 1.15 points: still 1, the factor under the naming level
    assert engine.rescore() == {CODER: 1}
    agent = stream.registry.get(CODER)
    assert (agent.risk_score, agent.risk_factors) == (1, ())
    assert engine.rescore() == {}  # published as it is: nothing written again


def test_events_are_folded_once_from_the_cursor_and_the_score_survives_a_restart(
        stream: Stream, database_url: str) -> None:
    engine = stream.engine()
    stream.usual()
    stream.gateway("gateway.leak", found_in="arguments of crm/refund")
    engine.catch_up()
    assert engine.catch_up() == {}  # nothing new: nothing folded again
    before = engine.view(CODER)
    assert before.calls == 30
    stream.audit.close()
    stream.store.close()

    store = open_store(database_url)  # a new process
    registry = AgentRegistry(store, stream.clock, TrustConfig("acme.example"))
    restarted = RiskEngine(store, registry, stream.clock, RiskConfig())
    try:
        assert restarted.catch_up() == {}
        assert restarted.view(CODER).as_json() == before.as_json()
        assert registry.get(CODER).risk_score == before.score
        audit = AuditLog(store, clock=stream.clock)
        resumed = Stream(store, registry, audit, stream.clock, RiskConfig())
        resumed.call("kb/search")
        audit.close()
        restarted.catch_up()
        assert restarted.view(CODER).calls == 31  # only the new event
    finally:
        store.close()


def test_a_policy_on_the_risk_score_flips_a_decision(stream: Stream) -> None:
    catalog = ToolCatalog([ToolSpec("crm", "lookup", sensitivity=Sensitivity.CONFIDENTIAL)])
    engine = PolicyEngine(catalog)
    engine.activate(engine.compile({"p.cedar": """
@id("coders-lookup")
permit (principal in Group::"coders", action == Action::"tool:crm/lookup", resource);

@id("risky-agent-needs-approval")
@approval("a risky agent's calls need a human")
permit (principal in Group::"coders", action == Action::"tool:crm/lookup", resource)
when { principal.risk_score >= 60 };

@id("high-risk-agent")
forbid (principal, action in Action::"call", resource) when { principal.risk_score >= 80 };

@id("leaked-grant-agent")
forbid (principal, action in Action::"call", resource)
when { principal.risk_factors.contains("leaked_grant") && principal.risk_score >= 50 };
"""}))
    request = DecisionRequest(EntityRef("Agent", CODER), "tool:crm/lookup",
                              EntityRef("Tool", "crm/lookup"),
                              call_context(now=stream.clock.now(), args={}))
    risk = stream.engine()
    stream.usual()
    risk.catch_up()
    sync_principals(engine, stream.registry)
    assert engine.decide(request).outcome is Outcome.ALLOW
    for _ in range(30):
        stream.call("crm/lookup", "deny")
    stream.gateway("gateway.leak", found_in="arguments of crm/refund")
    risk.catch_up()
    assert stream.registry.get(CODER).risk_score == 50  # deny ratio 20 + leaked grant 30
    sync_principals(engine, stream.registry)
    decision = engine.decide(request)
    assert decision.outcome is Outcome.DENY, stream.registry.get(CODER)
    assert set(decision.policy_ids) & {"high-risk-agent", "leaked-grant-agent"}


def test_calls_the_agent_was_refused_never_teach_its_baseline(stream: Stream) -> None:
    # an agent that expects to be watched tries, and is refused, what it means to do
    # later: a new tool, a big amount, an odd hour, a sensitive read, a new domain
    engine = stream.engine()
    stream.usual()
    for _ in range(20):
        stream.call("git/push", "deny")
        stream.call("crm/refund", "deny", args={"amount_cents": 90000})
        stream.call("web/fetch", "deny", args={"url": "https://evil.example/x"})
    stream.call("kb/search", "deny", task="t-y")
    stream.call("hr/salaries", "deny", task="t-y")
    stream.clock.advance(seconds=15 * 3600)
    odd = stream.clock.now().hour
    for _ in range(20):
        stream.call("kb/search", "deny")
    engine.catch_up()
    assert engine.view(CODER).calls == 30  # only what it was allowed to do counts
    stream.clock.advance(seconds=30 * 86400)  # every signal of the attempts faded
    stream.clock.advance(seconds=(10 - stream.clock.now().hour) % 24 * 3600)
    engine.rescore()

    # what it was refused, done once allowed, is as new as it ever was
    stream.call("git/push")
    stream.call("crm/refund", args={"amount_cents": 90000})
    stream.call("web/fetch", args={"url": "https://evil.example/x"})
    stream.call("kb/search", task="t-z")
    stream.call("hr/salaries", task="t-z")
    engine.catch_up()
    levels = _levels(engine)
    for factor in ("new_tool", "numeric_outlier", "new_destination", "sensitivity_escalation"):
        assert levels[factor] > 0.5, (factor, json.dumps(engine.view(CODER).as_json()))
    stream.clock.advance(seconds=(odd - stream.clock.now().hour) % 24 * 3600)
    stream.call("kb/search")
    engine.catch_up()
    assert _levels(engine)["odd_hour"] == 1.0


def test_an_agents_risk_view_is_read_without_sqlites_write_lock(
        tmp_path: Path, clock: FrozenClock) -> None:
    """The console's and CLI's risk view is a read: it took a write transaction, so on
    SQLite it queued behind (and then held up) every decision's write."""
    import sqlite3

    database = tmp_path / "risk.db"
    for stream in _stream(f"sqlite:///{database}", clock):
        engine = stream.engine()
        stream.usual(6)
        engine.catch_up()
        writer = sqlite3.connect(database, timeout=0)
        writer.execute("BEGIN IMMEDIATE")  # another process's write under way
        try:
            assert engine.view(CODER).calls == 6
        finally:
            writer.rollback()
            writer.close()

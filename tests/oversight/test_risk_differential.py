"""The risk score decisions read, held to its definition: after every event, the
registry's ``risk_score`` and ``risk_factors`` are what folding each event in chain
order gives (the pure fold of :mod:`proctor.oversight.risk.baseline`, scored when the
event is written; a rescore writes a score that changed), with two processes' audit
logs on one database, a writer dropped and started again, catch-ups and rescores in
between; views show the same score and factors; after a catch-up the store holds the
same baselines. A change to how or when the writers fold or store must keep it."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select, update

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, DecisionRecord, new_event_id
from proctor.audit.features import argument_features
from proctor.clock import FrozenClock
from proctor.identity import AgentRegistry, OwnKeyProof, TrustConfig
from proctor.oversight.risk import RiskConfig, RiskEngine
from proctor.oversight.risk import engine as engine_module
from proctor.oversight.risk.baseline import decided_again, fold_event, new_baseline, score_of
from proctor.oversight.risk.folding import agent_of, named_factors
from proctor.store import Store, open_store
from proctor.store.tables import agents, audit_head, risk_baselines
from tests.identity.factories import BUILDER, CODER, manifest, public_jwk

from .test_risk import OUTCOMES, OWNER, SENSITIVITY

AGENTS = (CODER, BUILDER)
TOOLS = ("kb/search", "crm/lookup", "crm/refund", "hr/salaries", "web/fetch", "git/push")
DOMAINS = ("kb.acme.example", "evil.example", "docs.acme.example")
GAPS = (1, 1, 2, 5, 30, 30, 600, 4000)


def _sensitivity(tool: str) -> int:
    return SENSITIVITY.get(tool, 0)


@dataclass
class Reference:
    """Every event folded in chain order, scored at the moment it is written: what the
    registry must hold (the registry's rule: only a change is written)."""

    config: RiskConfig
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)  # the score of the last fold

    def fold(self, event: Mapping[str, Any], now: float) -> None:
        agent = agent_of(event)
        if agent is None or decided_again(event):
            return
        baseline = self.baselines.setdefault(agent, new_baseline())
        fold_event(baseline, event, agent, self.config, _sensitivity)
        score, _, factors = score_of(baseline, now, self.config)
        self.stored[agent] = score
        if agent in self.rows:
            self.rows[agent] = (score, tuple(named_factors(factors)))

    def rescore(self, now: float) -> None:
        for agent, baseline in self.baselines.items():
            score, _, factors = score_of(baseline, now, self.config)
            if score != self.stored[agent]:
                self.stored[agent] = score
                if agent in self.rows:
                    self.rows[agent] = (score, tuple(named_factors(factors)))


class Process:
    """One process's audit log, folding its batches, on its own connections."""

    def __init__(self, url: str, clock: FrozenClock, config: RiskConfig) -> None:
        self.store = open_store(url)
        self.registry = AgentRegistry(self.store, clock, TrustConfig("acme.example"))
        self.engine = RiskEngine(self.store, self.registry, clock, config,
                                 sensitivity_of=_sensitivity)
        self.clock = clock
        self.audit = self._log()

    def _log(self) -> AuditLog:
        audit = AuditLog(self.store, clock=self.clock)
        audit.observe(self.engine.folder())
        return audit

    def crash(self) -> None:
        """The writer goes with whatever its folder holds in memory; a new one starts."""
        self.audit.close()
        self.audit = self._log()

    def close(self) -> None:
        self.audit.close()
        self.store.close()


def _event(clock: FrozenClock, rng: random.Random) -> AuditEvent:
    now = clock.now()
    agent = rng.choice(AGENTS)
    if rng.random() < 0.04:
        action = rng.choice(("gateway.leak", "gateway.redact"))
        detail: dict[str, Any] = {"agent": agent, "found_in": "arguments of crm/refund",
                                  "findings": rng.randint(1, 3)}
        return AuditEvent(id=new_event_id(now), time=now,
                          actor=Actor(ActorType.SYSTEM, "proctor-gateway"), action=action,
                          target=f'Agent::"{agent}"', outcome="revoked", detail=detail)
    tool = rng.choice(TOOLS)
    outcome = rng.choices(("allow", "deny", "approval_required"), (80, 15, 5))[0]
    args: dict[str, Any] = {}
    if tool == "crm/refund":
        args["amount_cents"] = rng.choice((1000, 1200, 1500, 90_000))
    if tool == "web/fetch":
        args["url"] = f"https://{rng.choice(DOMAINS)}/a"
    features = argument_features(args)
    shown, code = OUTCOMES[outcome]
    if outcome == "allow" and rng.random() < 0.03:  # refused by its write, decided again
        shown, code = "denied", "agent_changed"
    return AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.AGENT, agent, OWNER),
        action=f"tool:{tool}", target=f'Tool::"{tool}"', outcome=shown,
        task=f"task-{rng.randint(0, 4)}",
        decision=DecisionRecord(outcome, code, ("p",), 1),
        detail={"args": features} if features else {})


@pytest.fixture
def processes(database_url: str, clock: FrozenClock) -> Iterator[tuple[Process, Process]]:
    first = Process(database_url, clock, RiskConfig())
    for agent in AGENTS:
        first.registry.register(agent, owner=OWNER, groups=["coders"], manifest=manifest(),
                                proof=OwnKeyProof(public_jwk(ECKey.generate_key("P-256"))))
    second = Process(database_url, clock, RiskConfig())
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _rows(store: Store, registry: AgentRegistry) -> dict[str, tuple[int, tuple[str, ...]]]:
    return {a: (registry.get(a).risk_score, registry.get(a).risk_factors) for a in AGENTS}


def _head(store: Store) -> int:
    with store.transaction() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar() or 0)


def _folded_up_to(store: Store) -> int:
    with store.transaction() as conn:
        return int(conn.execute(select(audit_head.c.folded)).scalar() or 0)


# Two runs of 400 steps (three until December: 2 x 1,200 steps over both backends were 15 s
# of the suite): the seeds are the two of 1-8 whose runs hold the most of the rare steps;
# each run must still reach every kind at least four times (checked below). Seeds 2 and 4
# drop a writer 16 and 12 times, catch up 6 and 13 times, rescore to another score 9 and 5
# times, fold a leak 4 and 7 times and the second process's events 54 and 57 times.
@pytest.mark.parametrize("seed", [2, 4])
def test_scores_and_factors_after_every_event_are_the_fold_of_the_stream_in_order(
        processes: tuple[Process, Process], clock: FrozenClock, seed: int) -> None:
    first, second = processes
    rng = random.Random(seed)
    reference = Reference(RiskConfig(), rows=_rows(first.store, first.registry))
    seen: Counter[str] = Counter()
    for step in range(400):
        clock.advance(seconds=rng.choice(GAPS))
        roll = rng.random()
        op = "event"
        if roll < 0.03:
            op = "writer dropped"
            first.crash()
        elif roll < 0.06:
            op = "catch-up"
            rng.choice((first, second)).engine.catch_up()
        elif roll < 0.09:
            op = "rescore"
            rng.choice((first, second)).engine.rescore()
            scores = dict(reference.stored)
            reference.rescore(clock.now().timestamp())
            if reference.stored != scores:
                op = "rescore to another score"
        else:  # runs of the first process, the second's events between
            writer = first if rng.random() < 0.85 else second
            event = _event(clock, rng)
            writer.audit.record(event)
            reference.fold(json.loads(event.canonical_body_and_time()[0]),
                           clock.now().timestamp())
            op = event.action
            seen["second's event"] += writer is second
        seen[op] += 1
        assert _rows(first.store, first.registry) == reference.rows, (step, op)
        if step % 25 == 0:
            for agent, baseline in reference.baselines.items():
                view = first.engine.view(agent)
                expected, _, factors = score_of(baseline, clock.now().timestamp(),
                                                reference.config)
                assert (view.score, view.calls) == (expected, baseline["calls"]), step
                assert [f.as_json() for f in view.factors] == [f.as_json() for f in factors]
    rare = ("writer dropped", "catch-up", "rescore to another score", "gateway.leak",
            "second's event")
    assert all(seen[op] >= 4 for op in rare), seen
    # once caught up, the store holds the reference's baselines (trend aside)
    second.engine.catch_up()
    assert _folded_up_to(first.store) == _head(first.store)
    with first.store.transaction() as conn:
        stored = {row.agent_id: dict(row.baseline)
                  for row in conn.execute(select(risk_baselines))}
    for agent, baseline in reference.baselines.items():
        assert {k: v for k, v in stored[agent].items() if k != "trend"} == json.loads(
            json.dumps({k: v for k, v in baseline.items() if k != "trend"}))


def test_another_process_rescoring_keeps_a_leak_a_writer_just_folded(
        processes: tuple[Process, Process], clock: FrozenClock) -> None:
    first, second = processes
    for _ in range(25):  # warmed up, stored
        clock.advance(seconds=30)
        first.audit.record(_call(clock, "kb/search"))
    clock.advance(seconds=30)
    first.audit.record(_leak(clock))  # folded and published by the first process
    assert first.registry.get(CODER).risk_factors == ("leaked_grant",)
    leaked = first.registry.get(CODER).risk_score
    clock.advance(seconds=600)  # what was stored fades too: the rescore would write it
    second.engine.rescore()
    agent = first.registry.get(CODER)
    assert agent.risk_factors == ("leaked_grant",)
    assert agent.risk_score >= leaked - 1  # the leak fades over a day, not away


def _call(clock: FrozenClock, tool: str, agent: str = CODER) -> AuditEvent:
    now = clock.now()
    return AuditEvent(id=new_event_id(now), time=now, actor=Actor(ActorType.AGENT, agent, OWNER),
                      action=f"tool:{tool}", target=f'Tool::"{tool}"', outcome="allowed",
                      task="task-1", decision=DecisionRecord("allow", "policy_permit", ("p",), 1),
                      detail={})


def _leak(clock: FrozenClock) -> AuditEvent:
    now = clock.now()
    return AuditEvent(id=new_event_id(now), time=now,
                      actor=Actor(ActorType.SYSTEM, "proctor-gateway"), action="gateway.leak",
                      target=f'Agent::"{CODER}"', outcome="revoked",
                      detail={"agent": CODER, "found_in": "arguments of crm/refund"})


def _engine(process: Process, clock: FrozenClock, stage: Callable[[str], None]) -> RiskEngine:
    """Another engine of ``process`` (a server's catch-up and rescore), stopping at
    ``stage`` between its steps."""
    return RiskEngine(process.store, process.registry, clock, RiskConfig(),
                      sensitivity_of=_sensitivity, stage=stage)


def _leak_in_between(clock: FrozenClock, writer: Process, at: str
                     ) -> tuple[Callable[[str], None], list[tuple[int, tuple[str, ...]]]]:
    """A stage hook: at stage ``at`` (once), ``writer``'s audit log appends and folds
    a leak of CODER's grant; what its publishing left in CODER's row is noted."""
    published: list[tuple[int, tuple[str, ...]]] = []

    def stage(name: str) -> None:
        if name == at and not published:
            writer.audit.record(_leak(clock))
            agent = writer.registry.get(CODER)
            published.append((agent.risk_score, agent.risk_factors))
    return stage, published


def test_a_catch_up_never_publishes_its_score_over_a_newer_fold_of_a_writer(
        processes: tuple[Process, Process], clock: FrozenClock) -> None:
    first, second = processes
    unfolded = AuditLog(second.store, clock=clock)  # an operator command's: folds nothing
    try:
        for _ in range(10):
            clock.advance(seconds=30)
            unfolded.record(_call(clock, "kb/search"))
    finally:
        unfolded.close()
    assert _folded_up_to(first.store) == 0
    # the catch-up folds the 10 calls and stores them; before it returns, the first
    # process's writer appends a leak (the 11th event), folds it onto what the catch-up
    # stored and publishes the leak's score
    stage, published = _leak_in_between(clock, first, "stored")
    engine, told = _engine(second, clock, stage), list[str]()
    engine.folder(published=told.append)  # this process's views are told, after commit
    assert engine.catch_up() == {CODER: 5}  # ten calls: half the prior is left
    assert published and "leaked_grant" in published[0][1]
    agent = first.registry.get(CODER)
    assert (agent.risk_score, agent.risk_factors) == published[0]
    assert _folded_up_to(first.store) == _head(first.store) == 11
    assert told == [CODER]


@pytest.mark.parametrize("at", ["scored", "stored"])
def test_a_rescore_never_publishes_its_score_over_a_newer_fold_of_a_writer(
        processes: tuple[Process, Process], clock: FrozenClock, at: str) -> None:
    first, second = processes
    for _ in range(25):  # warmed up
        clock.advance(seconds=30)
        first.audit.record(_call(clock, "kb/search"))
    clock.advance(seconds=30)
    first.audit.record(_call(clock, "git/push"))  # a new tool: it fades within hours
    before = first.registry.get(CODER)
    assert before.risk_factors == ("new_tool",)
    clock.advance(seconds=7200)  # the rescore would lower the score
    # between the rescore's reading and its writing ("scored"), or once it committed
    # ("stored"), the first process's writer folds a leak and publishes its score
    stage, published = _leak_in_between(clock, first, at)
    changed = _engine(second, clock, stage).rescore()
    assert published and published[0][1][0] == "leaked_grant"
    # what the rescore published: the faded score before the leak, or nothing (the
    # baseline read again under the held head is the leak's, scored as the writer did)
    assert changed == ({CODER: 3} if at == "stored" else {})
    agent = first.registry.get(CODER)
    assert (agent.risk_score, agent.risk_factors) == published[0]


def test_a_rescore_in_several_transactions_publishes_every_faded_score_but_a_retired_agents(
        processes: tuple[Process, Process], clock: FrozenClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = processes
    for _ in range(25):  # both warmed up, then a new tool each
        clock.advance(seconds=30)
        for agent in AGENTS:
            first.audit.record(_call(clock, "kb/search", agent))
    clock.advance(seconds=30)
    for agent in AGENTS:
        first.audit.record(_call(clock, "git/push", agent))
    assert _rows(first.store, first.registry) == dict.fromkeys(AGENTS, (10, ("new_tool",)))
    first.registry.retire(BUILDER, by=OWNER, reason="done")
    clock.advance(seconds=7200)
    monkeypatch.setattr(engine_module, "_RESCORED", 1)  # one agent per transaction
    told = list[str]()
    second.engine.folder(published=told.append)
    assert second.engine.rescore() == {CODER: 3}
    assert told == [CODER]
    assert _rows(first.store, first.registry) == {CODER: (3, ("new_tool",)),
                                                  BUILDER: (10, ("new_tool",))}
    with first.store.transaction() as conn:  # both baselines' scores moved on
        scores = {row.agent_id: row.score for row in conn.execute(
            select(risk_baselines.c.agent_id, risk_baselines.c.score))}
    assert scores == dict.fromkeys(AGENTS, 3)


def test_a_rescore_publishes_again_a_score_an_older_publication_overwrote(
        processes: tuple[Process, Process], clock: FrozenClock) -> None:
    first, second = processes
    for tool in ["kb/search"] * 25 + ["git/push"]:
        clock.advance(seconds=30)
        first.audit.record(_call(clock, tool))
    assert first.registry.get(CODER).risk_score == 10
    with first.store.transaction() as conn:  # what a catch-up publishing late left
        conn.execute(update(agents).where(agents.c.id == CODER)
                     .values(risk_score=0, risk_factors=[]))
    assert second.engine.rescore() == {CODER: 10}  # nothing faded: only the row is stale
    assert _rows(first.store, first.registry)[CODER] == (10, ("new_tool",))
    assert second.engine.rescore() == {}

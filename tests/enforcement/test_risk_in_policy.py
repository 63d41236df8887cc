"""The risk score reaches Cedar on the next decision: a leaked grant, folded by the
audit writer as its event is written (no catch-up, no server), holds the agent's next
call for a human (the example policies), with the weights of the home's
``risk.toml``; the other agent's entity stays as it was."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import update

from proctor.audit import (
    Actor,
    ActorType,
    AuditEvent,
    ChainHead,
    EventRow,
    WriteCursor,
    new_event_id,
)
from proctor.clock import FrozenClock
from proctor.config import Settings
from proctor.identity import OwnKeyProof
from proctor.policy import Outcome
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.store.tables import agents as agent_rows
from tests.identity.factories import manifest, public_jwk

from .conftest import CODER, OWNER, SUPPORT, Agents, refund

REFUND = [{"tool": "crm/issue_refund"}]


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, frozen: FrozenClock) -> Iterator[Runtime]:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    (home / "risk.toml").write_text("[weights]\nleaked_grant = 55\n")
    runtime = open_runtime(settings, clock=frozen)
    yield runtime
    runtime.close()


def _principal(runtime: Runtime, agent_id: str) -> dict[str, object]:
    return next(e for e in runtime.engine.entities.entities
                if e["uid"] == {"type": "Agent", "id": agent_id})


def test_a_new_agent_is_decided_on_at_the_prior_before_its_first_call_is_folded(
        runtime: Runtime, agents: Agents) -> None:
    # docs/risk.md: a new agent starts at the prior (10 by default); what Cedar sees and
    # what `proctor agent risk` explains agree before the agent has made any call
    assert runtime.risk.config.prior == 10
    assert runtime.risk.view(CODER).score == 10
    assert runtime.registry.get(CODER).risk_score == 10
    assert _principal(runtime, CODER)["attrs"]["risk_score"] == 10  # type: ignore[index]


def test_the_starting_score_is_the_prior_of_the_homes_risk_toml(
        database_url: str, tmp_path: Path, frozen: FrozenClock) -> None:
    home = tmp_path / "other"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    (home / "risk.toml").write_text("prior = 130\n")  # a score is at most 100
    runtime = open_runtime(settings, clock=frozen)
    try:
        key = ECKey.generate_key("P-256", private=True)
        runtime.registry.register(SUPPORT, owner=OWNER, proof=OwnKeyProof(public_jwk(key)),
                                  manifest=manifest())
        assert runtime.registry.get(SUPPORT).risk_score == 100 == runtime.risk.view(SUPPORT).score
    finally:
        runtime.close()


def test_a_leaked_grant_holds_the_agents_next_call_for_a_human(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed
    coder_before = _principal(runtime, CODER)
    now = runtime.clock.now()
    runtime.audit.record(AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, "proctor-gateway"),
        action="gateway.leak", target=f'Agent::"{SUPPORT}"', outcome="revoked",
        detail={"agent": SUPPORT, "found_in": "arguments of crm/issue_refund"}))
    # folded in the event's own transaction: prior 9.5 + leaked grant 55
    assert runtime.registry.get(SUPPORT).risk_score == 65
    assert runtime.risk.catch_up() == {}  # nothing was left for the catch-up

    verdict = agents.call(grant, "crm/issue_refund", refund(100))
    assert verdict.outcome is Outcome.APPROVAL_REQUIRED
    assert verdict.policy_ids == ("risky-agent-needs-approval",)
    support = _principal(runtime, SUPPORT)["attrs"]
    assert isinstance(support, dict)  # the entity Cedar saw: the leak's score
    assert support["risk_score"] >= 60 and support["risk_factors"] == ["leaked_grant"]
    # the held call was folded as it was audited: judged in the ratios (one held of
    # two, under the approval ratio's threshold), never learned (the prior stays 9.5)
    assert runtime.risk.view(SUPPORT).as_json()["calls"] == 1
    assert runtime.registry.get(SUPPORT).risk_score == 65
    assert runtime.risk.catch_up() == {}
    assert _principal(runtime, CODER) == coder_before  # the other agent's entity is as it was


def test_each_allowed_calls_fold_leaves_the_agent_row_at_the_score_it_folded(
        runtime: Runtime, agents: Agents) -> None:
    # the write reads the agent's row (its score confirmed) before the fold: the fold
    # writes the row only when its score or factors differ from that read, and must
    # still write it whenever they do (the prior fading over the first calls)
    grant = agents.grant(SUPPORT, REFUND)
    seen = [runtime.registry.get(SUPPORT).risk_score]
    for _ in range(24):
        assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed
        score = runtime.registry.get(SUPPORT).risk_score
        assert score == runtime.risk.view(SUPPORT).score
        seen.append(score)
    assert seen[0] == 10 and seen[-1] < 10  # it changed, and was published each time
    assert len(set(seen)) > 2
    assert runtime.risk.catch_up() == {}


def test_this_processes_new_score_keeps_the_agent_in_its_view(runtime: Runtime,
                                                               agents: Agents) -> None:
    # the risk fold's new score is this process's own write: its agent view takes the
    # score committed in place, and the change feed's news of it reads the agent once
    # and keeps it, so the next decision finds the agent in memory (the view dropped it
    # before: every other decision read the store, and on the event loop went to a thread)
    grant = agents.grant(SUPPORT, REFUND)
    assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed
    view = runtime.agent_view
    heard = threading.Event()
    view.on_change(lambda agent_id, _: heard.set() if agent_id == SUPPORT else None)
    rescored = 0
    for _ in range(12):
        before = runtime.registry.get(SUPPORT)
        heard.clear()
        misses = view.misses
        assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed
        assert view.misses == misses  # the decision found the agent in memory
        committed = runtime.registry.get(SUPPORT)
        if (committed.risk_score, committed.risk_factors) != (before.risk_score,
                                                              before.risk_factors):
            rescored += 1
            # the feed's news of the write (SQLite: read at the view's next look)
            assert _until(lambda: view.is_current() and heard.is_set())
        held = view.find(SUPPORT)
        assert view.misses == misses  # still in memory, as committed
        assert held is not None
        assert (held.risk_score, held.risk_factors) == (committed.risk_score,
                                                        committed.risk_factors)
    assert rescored >= 2  # the prior fading: a new score written more than once


class _OtherCommitsFirst:
    """The audit writer's observer (the runtime's own kept): once a batch that rescored
    the agent committed, and before this process's view is told, another process
    commits a new score for the agent and a decision thread here hears it."""

    def __init__(self, runtime: Runtime) -> None:
        self.kept = runtime.audit._observer
        self.runtime = runtime
        self.done = False

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        assert self.kept is not None
        self.kept.appending(tx, head, rows)

    def appended(self, head: ChainHead) -> None:
        assert self.kept is not None
        if not self.done and self.kept._changed:  # type: ignore[attr-defined]
            self.done = True
            view = self.runtime.agent_view
            heard = threading.Event()
            # the news of the other's commit (score 3), not of this batch's (on
            # PostgreSQL that one may be heard first, and the view hold its score)
            view.on_change(lambda agent_id, agent: heard.set() if agent_id == SUPPORT
                           and agent is not None and agent.risk_score == 3 else None)
            thread = threading.Thread(target=self._other, args=(heard,))
            thread.start()
            thread.join()
        self.kept.appended(head)

    def _other(self, heard: threading.Event) -> None:
        with self.runtime.store.transaction() as conn:
            conn.execute(update(agent_rows).where(agent_rows.c.id == SUPPORT)
                         .values(risk_score=3, risk_factors=[]))
        assert _until(lambda: self.runtime.agent_view.is_current() and heard.is_set())


def test_a_score_another_process_committed_after_this_ones_is_never_hidden(
    runtime: Runtime, agents: Agents,
) -> None:
    # this process's new score taken in place must not cover another process's newer
    # one that the view read (its news heard) between the commit and the view being told
    grant = agents.grant(SUPPORT, REFUND)
    assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed
    other = _OtherCommitsFirst(runtime)
    runtime.audit.observe(other)
    try:
        for _ in range(12):
            agents.call(grant, "crm/issue_refund", refund(100))
            if other.done:
                break
    finally:
        runtime.audit.observe(other.kept)  # type: ignore[arg-type]
    assert other.done
    held = runtime.agent_view.find(SUPPORT)
    assert held is not None
    assert (held.risk_score, held.risk_factors) == (3, ())  # as committed last


def _until(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within a bound (woken by the condition, never paused
    longer than a poll)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True

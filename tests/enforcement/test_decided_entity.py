"""A decision is evaluated on the agent as it read and checked it (the version its write
confirms), never on the engine's shared entry of that agent, which other threads put
at any moment: the change feed's thread an agent it read before a newer commit, another
decision the older version it read. Each race is built deterministically, with events
in the real paths (the engine's put and decide, the view's find, the enforcer's
callback ``decide_on_current``), on a real store and real Cedar."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from proctor.errors import GrantError
from proctor.grants.issuance import DecidedOn
from proctor.identity import Agent
from proctor.policy import Decision, DecisionRequest
from proctor.policy.source import read_policy_dir
from proctor.runtime import Runtime

from .conftest import RISKY_GRANTS, SUPPORT, Agents
from .test_stale_views import heard_everything

WAIT = 60
LOOKUP = [{"tool": "crm/lookup_customer"}]


def activate_risky_grants(runtime: Runtime, *more: str) -> None:
    sources = {**read_policy_dir(runtime.settings.policy_dir), "risky.cedar": RISKY_GRANTS,
               **{f"more{i}.cedar": text for i, text in enumerate(more)}}
    runtime.policies.activate(runtime.policies.add_candidate(sources, origin="risky grants"))


def _outcome(grant: Callable[[], object]) -> str:
    try:
        grant()
    except GrantError as exc:
        return exc.code
    return "issued"


@pytest.mark.parametrize("database_url", [
    pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_a_decision_between_the_feeds_late_put_and_its_listeners_is_taken_on_what_it_read(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """The feed read the agent at 5 just before 70 committed; its put lands after a
    decision put 70, and the next decision (reading 70) comes before the feed's thread
    has told anyone else: it is decided at 70, not on the engine's entry at 5.

    PostgreSQL only: there the feed delivers on its own thread (on SQLite a delivery
    runs inside a decision's look, under the feed's lock)."""
    activate_risky_grants(runtime)
    agents.grant(SUPPORT, LOOKUP)
    heard_everything(runtime)
    paused, release, landed, done = (threading.Event() for _ in range(4))
    put = runtime.engine.put_agent

    def put_late_then_hold(entity: dict[str, Any]) -> None:
        if entity["attrs"]["risk_score"] != 5 or paused.is_set():
            put(entity)
            return
        paused.set()
        assert release.wait(WAIT)
        put(entity)
        landed.set()  # in the engine; the listeners after this put not called yet
        assert done.wait(WAIT)

    runtime.engine.put_agent = put_late_then_hold  # type: ignore[method-assign]
    try:
        other.registry.set_risk_score(SUPPORT, 5)
        assert paused.wait(WAIT)  # the feed read the agent at 5; its put has not landed
        other.registry.set_risk_score(SUPPORT, 70)  # committed after the feed's read
        first = _outcome(lambda: agents.grant(SUPPORT, LOOKUP))
        release.set()
        assert landed.wait(WAIT)
        second = _outcome(lambda: agents.grant(SUPPORT, LOOKUP))
    finally:
        release.set()
        done.set()
    assert (first, second) == ("issuance_denied", "issuance_denied")  # both at 70


def test_two_decisions_reading_two_versions_of_the_agent_are_each_taken_on_their_own(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """One issuance read the agent at 5 (before 70 committed) and puts it in the engine
    after another, which read 70, put 70: the one that read 70 is decided at 70 (its
    write would confirm 70 and issue the grant), not on the entry at 5 the other put."""
    activate_risky_grants(runtime)
    agents.grant(SUPPORT, LOOKUP)
    other.registry.set_risk_score(SUPPORT, 5)
    heard_everything(runtime)
    reading = threading.local()
    read_at_5, go, slow_decided, fast_decided = (threading.Event() for _ in range(4))
    reading.current = False
    first: list[str] = []

    def current(agent_id: str, *, strict: bool) -> DecidedOn | None:
        reading.current = True
        try:
            return runtime.enforcer.ensure_current(agent_id, strict=strict)
        finally:
            reading.current = False

    view, engine = runtime.agent_view, runtime.engine
    find, decide = view.find, engine.decide

    def find_then_wait(agent_id: str) -> Agent | None:
        agent = find(agent_id)
        if threading.current_thread() is slow and getattr(reading, "current", False) \
                and not read_at_5.is_set():
            assert agent is not None and agent.risk_score == 5
            read_at_5.set()  # read at 5; not put anywhere yet
            assert go.wait(WAIT)
        return agent

    def decide_in_order(request: DecisionRequest, **kwargs: Any) -> Decision:
        if threading.current_thread() is not slow:
            if go.is_set():
                return decide(request, **kwargs)
            go.set()  # read 70 (and put it, where puts come first): the slow one puts 5
            assert slow_decided.wait(WAIT)  # and is decided; then this one, at once
            try:
                return decide(request, **kwargs)
            finally:
                fast_decided.set()
        decision = decide(request, **kwargs)
        if not slow_decided.is_set():
            slow_decided.set()
            assert fast_decided.wait(WAIT)  # nothing more of it (its write) before
        return decision

    def slow_grant() -> None:
        first.append(_outcome(lambda: agents.grant(SUPPORT, LOOKUP)))

    slow = threading.Thread(target=slow_grant)
    runtime.grants.decide_on_current(current, sync_policies=runtime.policies.load_active,
                                     forget_agent=view.forget)
    view.find = find_then_wait  # type: ignore[method-assign]
    engine.decide = decide_in_order  # type: ignore[method-assign]
    slow.start()
    try:
        assert read_at_5.wait(WAIT)
        other.registry.set_risk_score(SUPPORT, 70)
        heard_everything(runtime)
        fast = _outcome(lambda: agents.grant(SUPPORT, LOOKUP))
    finally:
        go.set()
        slow_decided.set()
        fast_decided.set()
        slow.join(WAIT)
    assert not slow.is_alive()
    assert fast == "issuance_denied"  # decided at 70, as read and as committed
    assert first == ["issuance_denied"]  # at 5 first: its write refused it, decided at 70

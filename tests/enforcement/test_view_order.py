"""The engine's entry of an agent is never older than what a decision read: the change
feed's put of an agent it read just before a newer commit may land after a decision
put the newer one (both on their own threads); the next decision must not be
evaluated on the older entry while the news of the newer commit is on its way.

PostgreSQL only: there the feed delivers on its own thread, without the lock a
decision's look at the feed takes; on SQLite a delivery runs inside a decision's look,
under the feed's lock, and every other decision's look waits for it (the interleaving
cannot be built without holding that lock against the decision itself)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from proctor.errors import GrantError
from proctor.identity import Agent
from proctor.policy.source import read_policy_dir
from proctor.runtime import Runtime

from .conftest import RISKY_GRANTS, SUPPORT, Agents
from .test_stale_views import heard_everything

WAIT = 60
LOOKUP = [{"tool": "crm/lookup_customer"}]


@pytest.mark.parametrize("database_url", [
    pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_an_older_entry_the_feed_put_late_is_never_decided_on(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    sources = {**read_policy_dir(runtime.settings.policy_dir), "risky.cedar": RISKY_GRANTS}
    runtime.policies.activate(runtime.policies.add_candidate(sources, origin="risky grants"))
    agents.grant(SUPPORT, LOOKUP)
    heard_everything(runtime)
    paused, release, delivered, done = (threading.Event() for _ in range(4))
    put = runtime.engine.put_agent

    def put_late(entity: dict[str, Any]) -> None:
        if entity["attrs"]["risk_score"] == 5 and not paused.is_set():
            paused.set()
            assert release.wait(WAIT)
        put(entity)

    def hold_the_feed(agent_id: str, agent: Agent | None) -> None:
        # after every listener of the late delivery: the feed delivers nothing else
        # (the news of 70) until the test is done
        if agent is not None and agent.risk_score == 5:
            delivered.set()
            assert done.wait(WAIT)

    runtime.engine.put_agent = put_late  # type: ignore[method-assign]
    runtime.agent_view.on_change(hold_the_feed)
    other.registry.set_risk_score(SUPPORT, 5)
    assert paused.wait(WAIT)  # the feed read the agent at 5; its put has not landed
    other.registry.set_risk_score(SUPPORT, 70)  # committed after the feed's read
    with pytest.raises(GrantError) as first:
        agents.grant(SUPPORT, LOOKUP)
    assert first.value.code == "issuance_denied"  # decided on 70, read from the store
    release.set()
    assert delivered.wait(WAIT)  # the feed's older entry (5) landed after it
    code: str
    try:
        agents.grant(SUPPORT, LOOKUP)
    except GrantError as second:
        code = second.code
    else:
        code = "issued"
    finally:
        done.set()
    assert code == "issuance_denied"  # at 70, as committed: never on the entry at 5

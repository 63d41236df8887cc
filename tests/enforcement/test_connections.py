"""Decisions on threads that come and go hold no more database connections than the
configured pool size, and a decision that finds none free is a deny, not a hang."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from proctor.clock import FrozenClock
from proctor.config import POOL_TIMEOUT_SECONDS, Settings
from proctor.enforcement import CallVerdict
from proctor.grants import RevocationSubscription
from proctor.policy import Outcome
from proctor.runtime import Runtime, init_home, open_runtime
from tests.store.connections import open_connections, run_burst, tagged

from .conftest import SUPPORT, Agents, refund

POOL_SIZE = 5
# the wait for a free connection is a setting (5 s by default): short where a test waits
# it out, the deny is the same
SHORT_WAIT_SECONDS = 0.3
REFUND = [{"tool": "crm/issue_refund"}]


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, frozen: FrozenClock,
            request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """``indirect`` parameter: the pool's wait, in seconds (the default otherwise)."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=tagged(database_url),
                        policy_dir=home / "policies", trust_domain="acme.example",
                        database_pool_size=POOL_SIZE,
                        database_pool_timeout_seconds=getattr(
                            request, "param", POOL_TIMEOUT_SECONDS))
    init_home(settings)
    # no prior: a call leaves the agent's risk score as it is (0), so no view reads the
    # agent again in the background while the test holds the pool's connections
    (home / "risk.toml").write_text("prior = 0\n")
    runtime = open_runtime(settings, clock=frozen)
    yield runtime
    runtime.close()


def test_decisions_on_threads_that_come_and_go_hold_no_more_connections_than_the_pool_size(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    codes: queue.SimpleQueue[str] = queue.SimpleQueue()
    seen = []
    with ExitStack() as stack:
        if runtime.store.backend == "postgresql":  # the revocation listener counts too
            listener = RevocationSubscription(runtime.store, lambda _ids, _reason: None)
            stack.callback(listener.close)
        for _ in range(4):
            errors = run_burst(
                lambda: codes.put(agents.call(grant, "crm/issue_refund", refund(100)).code), 25)
            assert errors == []
            seen.append(open_connections(runtime.settings.database_url))
    assert [codes.get_nowait() for _ in range(codes.qsize())] == ["allow"] * 100
    assert min(seen) >= 1 and max(seen) <= POOL_SIZE, seen


@pytest.mark.parametrize("runtime", [SHORT_WAIT_SECONDS], indirect=True, ids=["short-wait"])
def test_a_call_that_finds_every_connection_in_use_is_denied_as_store_unavailable(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed
    # the call must read the store: with its task in this process's view (as the first
    # call left it, or the feed's news of it not heard yet) it needs no pool connection
    # at all, the audit writer's own connection confirming the task in the write, and is
    # rightly allowed
    runtime.task_view.forget(grant.claims.task_id)
    pool = runtime.store.engine.pool
    assert isinstance(pool, QueuePool)
    answered: queue.Queue[CallVerdict] = queue.Queue()
    with ExitStack() as held:
        for _ in range(POOL_SIZE):
            if pool.checkedout() == POOL_SIZE:
                break
            held.enter_context(runtime.store.reading())
        assert pool.checkedout() == POOL_SIZE
        threading.Thread(daemon=True, target=lambda: answered.put(
            agents.call(grant, "crm/issue_refund", refund(100)))).start()
        verdict = answered.get(timeout=60)  # after the pool's wait
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "store_unavailable")
    assert f"came free within {SHORT_WAIT_SECONDS:g} s" in " ".join(verdict.reasons)

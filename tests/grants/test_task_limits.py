"""Tasks end by themselves: at their maximum lifetime, or after an idle timeout, revoking
their tree like `task end` and saying why."""

from __future__ import annotations

import pytest

from proctor.errors import GrantError
from proctor.grants import GrantAuthority, GrantScope, IssuedGrant, TaskLimits, make_proof

from .conftest import CODER, Setup

LOG = GrantScope.from_json({"tools": [{"tool": "git/git_log"}]})
TARGET = "mcp://git/git_log"


def _use(setup: Setup, grant: IssuedGrant) -> str:
    proof = make_proof(setup.agents.keys[CODER], grant.token, method="tools/call",
                       target=TARGET, now=setup.clock.now())
    try:
        setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                              tool_id="git/git_log", args={"repo_path": "/srv/app"})
    except GrantError as exc:
        return exc.code
    return "ok"


def _start(setup: Setup, **limits: int) -> str:
    return setup.authority.start_task(CODER, purpose="fix the build",
                                      on_behalf_of="alice@acme.example", **limits).id


def test_a_task_has_a_lifetime_and_an_idle_timeout_by_default(setup: Setup) -> None:
    task = setup.authority.task(_start(setup))
    assert task.expires_at is not None and task.idle_until is not None
    assert (task.expires_at - task.started_at).total_seconds() == 8 * 3600
    assert task.idle_seconds == 30 * 60


def test_a_task_may_ask_for_less_never_for_more(setup: Setup) -> None:
    task = setup.authority.task(_start(setup, ttl_seconds=600, idle_seconds=60))
    assert task.idle_seconds == 60
    for limits in ({"ttl_seconds": 9 * 3600}, {"idle_seconds": 3600}, {"ttl_seconds": 0}):
        with pytest.raises(GrantError) as caught:
            _start(setup, **limits)
        assert caught.value.code == "task_ttl_invalid"


def test_each_call_keeps_a_task_alive_and_silence_ends_it(setup: Setup) -> None:
    task_id = _start(setup, idle_seconds=120)
    grant = setup.authority.issue(task_id, LOG, ttl_seconds=900)
    for _ in range(4):  # 4 x 100 s: each call comes before the idle timeout
        setup.clock.advance(seconds=100)
        assert _use(setup, grant) == "ok"
    setup.clock.advance(seconds=121)
    assert _use(setup, grant) == "task_idle"
    # that refusal ended the task: its whole tree is revoked, with the reason
    task = setup.authority.task(task_id)
    assert task.ended_at is not None and "without a call" in (task.end_reason or "")
    assert all(node.is_revoked for node in setup.authority.tree(task_id))
    assert _use(setup, grant) == "grant_revoked"


def test_no_grant_outlives_its_tasks_lifetime(setup: Setup) -> None:
    task_id = _start(setup, ttl_seconds=120)
    grant = setup.authority.issue(task_id, LOG, ttl_seconds=900)
    task = setup.authority.task(task_id)
    assert task.expires_at is not None
    assert grant.claims.expires_at == int(task.expires_at.timestamp())
    setup.clock.advance(seconds=115)
    assert _use(setup, grant) == "ok"
    setup.clock.advance(seconds=10)  # inside the grant's leeway, past the task's end
    assert _use(setup, grant) == "task_expired"
    assert setup.authority.task(task_id).ended_at is not None


def test_the_sweeper_ends_tasks_that_lapsed_without_a_call(setup: Setup) -> None:
    idle = _start(setup, idle_seconds=60)
    old = _start(setup, ttl_seconds=90, idle_seconds=90)
    busy = _start(setup, idle_seconds=600)
    grant = setup.authority.issue(idle, LOG)
    setup.clock.advance(seconds=100)
    swept = setup.authority.sweep()
    assert swept.tasks == 2
    assert setup.authority.task(idle).ended_at is not None
    assert setup.authority.task(old).end_reason == "task ended by itself: maximum lifetime reached"
    assert setup.authority.task(busy).ended_at is None
    with pytest.raises(GrantError) as caught:
        setup.authority.inspect(grant.token)
    assert caught.value.code == "grant_revoked"
    assert setup.authority.sweep().tasks == 0


def test_the_deployment_sets_the_limits(setup: Setup) -> None:
    with pytest.raises(GrantError) as caught:
        TaskLimits(max_seconds=30)
    assert caught.value.code == "task_limits_invalid"
    strict = GrantAuthority(setup.store, setup.clock, setup.codec, setup.engine, setup.agents,
                            task_limits=TaskLimits(max_seconds=3600, idle_seconds=300))
    task = strict.start_task(CODER, purpose="x", on_behalf_of="alice@acme.example")
    assert task.idle_seconds == 300

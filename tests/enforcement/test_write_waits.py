"""Strict revocation on PostgreSQL, read by read: a call's write reads its agent
(``FOR SHARE``), its task (``FOR UPDATE``) and its grant's lease nodes (``FOR SHARE``),
in that order (the order of the locks a suspension, a task's end and a revocation
take); each read waits for a change of its row that is committing meanwhile, and the
call is refused on the change once it has committed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from proctor.audit import WriteCursor
from proctor.enforcement import CallVerdict
from proctor.grants.use import GrantUse
from proctor.runtime import Runtime
from tests.grants.test_confirmed_once import _Counting

from .conftest import CODER, TARGET, Agents
from .lock_waits import until_waiting_on_a_lock

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

GIT = [{"tool": "git/*"}]
ARGS = {"repo_path": "/srv/repos/app"}


def _decide_in_thread(agents: Agents, grant: Any) -> tuple[threading.Thread, list[CallVerdict]]:
    verdicts: list[CallVerdict] = []
    caller = threading.Thread(target=lambda: verdicts.append(
        agents.call(grant, "git/git_log", ARGS)))
    caller.start()
    return caller, verdicts


# a change another process commits while the call's write reads: each holds the row one
# of the three reads locks (the agent's FOR SHARE, the task's FOR UPDATE, the lines' FOR
# SHARE), as a suspension, a task's end or a revocation holds it until it commits
CHANGES = {
    "agent_not_active": "UPDATE agents SET trust_state = 'suspended' WHERE id = :agent",
    "task_ended": "UPDATE tasks SET ended_at = now() WHERE id = :task",
    "grant_revoked": "UPDATE leases SET revoked_at = now(), revoked_reason = 'test' "
                     "WHERE id = :grant",
}


@pytest.mark.parametrize("code", list(CHANGES))
def test_a_change_committing_while_the_write_reads_is_waited_for_and_refuses_the_call(
    runtime: Runtime, agents: Agents, code: str,
) -> None:
    grant = agents.grant(CODER, GIT, purpose="fix the build")
    assert agents.call(grant, "git/git_log", ARGS).is_allowed
    names = {"agent": CODER, "task": grant.claims.task_id, "grant": grant.grant_id}
    with runtime.store.engine.connect() as changing:
        changing.execute(text(CHANGES[code]), names)  # the row locked until it commits
        caller, verdicts = _decide_in_thread(agents, grant)
        # the write's read waits on the row (the decision itself read this process's
        # view, which has not heard of a change not committed)
        until_waiting_on_a_lock(changing, caller, verdicts)
        changing.commit()
    caller.join(30)
    assert len(verdicts) == 1
    assert not verdicts[0].is_allowed
    assert verdicts[0].code == code


def test_a_uses_write_locks_agent_task_and_lines_in_that_order(
    runtime: Runtime, agents: Agents,
) -> None:
    """The agent's row, then the task's, then the lease nodes': a suspension locks the
    agent then its grants' nodes, a task's end the task then its nodes."""
    grant = agents.grant(CODER, GIT, purpose="fix the build")
    use = runtime.grants.prepare(grant.token, agents.proof(grant), method="tools/call",
                                 target=TARGET, tool_id="git/git_log", args=ARGS)
    with runtime.store.transaction() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        counting = _Counting(driver.cursor())
        assert GrantUse.apply_all(WriteCursor(counting, is_sqlite=False), [use]) == [None]
    reads = [next(i for i, q in enumerate(counting.statements) if f"FROM {table} " in q)
             for table in ("agents", "tasks", "leases")]
    assert reads == sorted(reads)

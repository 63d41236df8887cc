"""In one write transaction (a group-committed batch), a line or an agent confirmed by
one effect is not read again by the next: only what is not confirmed yet is read, and a
revoked or missing node is never taken as confirmed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import update

from proctor.audit import WriteCursor
from proctor.grants import IssuedGrant
from proctor.grants.requests import Request
from proctor.grants.use import any_revoked
from proctor.grants.writes import NewGrant
from proctor.store.tables import leases

from .conftest import Setup
from .test_authority import _issue


class _Counting:
    """A driver cursor that counts the statements it runs."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.statements: list[str] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append(sql)
        return self._cursor.execute(sql, params)

    def fetchall(self) -> Any:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


@contextmanager
def _counted(setup: Setup) -> Iterator[tuple[WriteCursor, _Counting]]:
    """A write transaction whose statements are counted."""
    with setup.store.transaction() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        counting = _Counting(driver.cursor())
        yield WriteCursor(counting, is_sqlite=setup.store.backend == "sqlite"), counting


def test_a_line_confirmed_live_is_read_once_per_transaction(setup: Setup) -> None:
    grant = _issue(setup)
    other = _issue(setup)
    with setup.store.transaction() as conn:  # the other grant's task, revoked
        conn.execute(update(leases).where(leases.c.id == other.claims.task_id)
                     .values(revoked_at=setup.clock.now(), revoked_reason="ended"))
    with setup.store.transaction() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        counting = _Counting(driver.cursor())
        tx = WriteCursor(counting, is_sqlite=setup.store.backend == "sqlite")

        assert not any_revoked(tx, grant.claims.lineage)
        assert len(counting.statements) == 1
        assert not any_revoked(tx, grant.claims.lineage)  # confirmed: nothing read
        assert len(counting.statements) == 1

        assert any_revoked(tx, other.claims.lineage)  # its revoked task is never confirmed
        assert any_revoked(tx, other.claims.lineage)
        assert any_revoked(tx, [grant.grant_id, "grant_unknown"])
        assert len(counting.statements) == 4
        assert not any_revoked(tx, [grant.grant_id, other.grant_id])  # both live nodes
        assert len(counting.statements) == 4


def test_a_batch_of_new_grants_is_checked_one_by_one_and_stored_by_two_inserts(
        setup: Setup) -> None:
    """A refused grant in the middle of a batch stores nothing; the others' lease nodes
    and grant rows go in by one multi-row statement each (on PostgreSQL, one statement
    for both)."""
    live, ended = _issue(setup), _issue(setup)
    setup.authority.end_task(ended.claims.task_id)

    def new(grant: IssuedGrant) -> NewGrant:
        return _new(setup, grant)

    batch = [new(live), new(ended), new(live)]
    with setup.store.transaction() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        counting = _Counting(driver.cursor())
        tx = WriteCursor(counting, is_sqlite=setup.store.backend == "sqlite")
        assert NewGrant.apply_all(tx, batch) == [None, None, None]
    inserts = [s for s in counting.statements if s.startswith(("INSERT", "WITH"))]
    assert len(inserts) == (2 if setup.store.backend == "sqlite" else 1)
    assert [n.refusal.code if n.refusal else None for n in batch] == [
        None, "grant_revoked", None]
    stored = {r[0] for r in setup.store.fetch(
        "SELECT grants.id FROM grants JOIN leases ON leases.id = grants.id "
        "WHERE grants.id IN ({p}, {p}, {p})", [n.claims.grant_id for n in batch])}
    assert stored == {batch[0].claims.grant_id, batch[2].claims.grant_id}


def _new(setup: Setup, grant: IssuedGrant) -> NewGrant:
    """A new grant like ``grant`` (another id), as an issuance hands it to the writer."""
    task = setup.authority.task(grant.claims.task_id)
    claims = replace(grant.claims, grant_id=f"grant_{secrets.token_hex(12)}")
    agent = setup.agents.binding(claims.agent_id)
    assert agent is not None
    request = Request(task, claims.agent_id, claims.scope, claims.expires_at, None,
                      task.id, manifest_digest=agent.manifest_digest,
                      agent_key=agent.key_thumbprint)
    return NewGrant(claims, f"acc_{secrets.token_hex(12)}", secrets.token_hex(32), request,
                    setup.clock.now(), None, setup.agents.binding_in,
                    max_risk=setup.authority.delegator_max_risk)


def test_a_batch_reads_the_nodes_of_all_its_lines_by_one_statement(setup: Setup) -> None:
    """Three grants under three tasks: the three lines are read by one statement (one
    per line before), and all of them are stored."""
    batch = [_new(setup, _issue(setup)) for _ in range(3)]
    assert len({n.claims.task_id for n in batch}) == 3
    with _counted(setup) as (tx, counting):
        NewGrant.apply_all(tx, batch)
    assert [n.refusal for n in batch] == [None, None, None]
    reads = [s for s in counting.statements if "FROM leases" in s]
    assert len(reads) == 1, reads
    stored = setup.store.fetch("SELECT COUNT(*) FROM grants WHERE id IN ({p}, {p}, {p})",
                               [n.claims.grant_id for n in batch])
    assert stored[0][0] == 3


def test_the_delegators_risk_limit_is_never_a_default() -> None:
    """Every place that checks a delegation line's agents against the risk limit takes
    the limit as a required argument: one a caller forgot would have meant the built-in
    80, not the deployment's setting (a stricter limit silently lifted)."""
    import dataclasses
    import inspect

    from proctor.grants.agents import line_refusal
    from proctor.grants.deciding import _Deciding
    from proctor.grants.use import GrantUse
    from proctor.grants.writes import NewOffer

    for made in (GrantUse, NewGrant, NewOffer):
        field = {f.name: f for f in dataclasses.fields(made)}["max_risk"]
        assert field.default is dataclasses.MISSING, made
        assert field.default_factory is dataclasses.MISSING, made
    for function in (line_refusal, _Deciding.__init__):
        parameter = inspect.signature(function).parameters["max_risk"]
        assert parameter.default is inspect.Parameter.empty, function


def test_a_batch_of_uses_reads_its_tasks_and_lines_by_one_statement_on_sqlite(
        setup: Setup) -> None:
    """Steps 1-3 of a batch of uses under three tasks, one of them ended: on SQLite the
    agents, the tasks and the lease nodes by one statement (the writer holds the write
    lock), on PostgreSQL the tasks then the nodes (each locked, in the order of the
    locks); the ended task's use refused, the others counted."""
    from proctor.grants.use import GrantUse

    from .test_use_batch import _use

    issued = [_issue(setup) for _ in range(3)]
    setup.authority.end_task(issued[1].claims.task_id)
    uses = [_use(setup, grant) for grant in issued]
    with _counted(setup) as (tx, counting):
        GrantUse.apply_all(tx, uses)
    assert [u.refusal.code if u.refusal else None for u in uses] == [
        None, "grant_revoked", None]
    reads = [s for s in counting.statements if s.startswith("SELECT")]
    if setup.store.backend == "sqlite":
        assert len(reads) == 1, reads
        assert all(f"FROM {table}" in reads[0] for table in ("agents", "tasks", "leases"))
    else:
        assert [("FROM tasks" in s, "FROM leases" in s) for s in reads] == [
            (True, False), (False, True)], reads

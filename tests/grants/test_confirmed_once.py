"""In one write transaction (a group-committed batch), a line or an agent confirmed by
one effect is not read again by the next: only what is not confirmed yet is read, and a
revoked or missing node is never taken as confirmed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from proctor.audit import WriteCursor
from proctor.grants.use import any_revoked
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

"""the change feed: one change for the descendants a revocation marks, not one per row

Revoking a subtree marks its roots in the revoking transaction (each root a ``lease``
change, as before); the descendants are marked afterwards, in transactions of their own
(:meth:`proctor.grants.leases.LeaseTree.mark_descendants`). On PostgreSQL the trigger
of migration 0016 added a ``changes`` row and a ``NOTIFY`` for every one of them. Now a
transaction that sets ``proctor.marking`` to ``descendants`` (``set_config(…, true)``:
that transaction alone) is skipped by the trigger and notes one ``subtree`` change for
all the rows it marked; the views drop every revocation state they hold when they hear
it. Any other update of ``revoked_at``, whoever makes it, is noted as before. On SQLite
the triggers stay as they are: one file, no session settings.

On PostgreSQL ``leases`` is also given a fill factor of 50: every node is updated once
in its life (revoked, or swept when it expires), and with room left on its page that
update is a heap-only tuple, without a new entry in each of the table's five indexes.
Pages written from now on leave that room; existing ones are left as they are.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_REVOKED = "OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL"
_NOT_MARKING = "current_setting('proctor.marking', true) IS DISTINCT FROM 'descendants'"


def _trigger(condition: str) -> None:
    op.execute("DROP TRIGGER IF EXISTS changes_leases ON leases")
    op.execute("CREATE TRIGGER changes_leases AFTER UPDATE OF revoked_at ON leases "
               f"FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION proctor_changes_leases()")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _trigger(f"{_REVOKED} AND {_NOT_MARKING}")
        op.execute("ALTER TABLE leases SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE leases RESET (fillfactor)")
        _trigger(_REVOKED)

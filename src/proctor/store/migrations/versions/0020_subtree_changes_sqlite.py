"""the change feed on SQLite: one change for the descendants a revocation marks, too

Migration 0018 did this on PostgreSQL with a session setting, which SQLite has not.
Here a transaction marking descendants holds a row in ``lease_marking`` while it marks
them (inserted first, deleted before it commits, so no other connection ever sees it:
one writer at a time), and the trigger of migration 0016 skips the rows it updates
while that row is there; the transaction notes one ``subtree`` change instead
(:meth:`proctor.grants.leases.LeaseTree.mark_descendants`). Any other update of
``revoked_at``, whoever makes it, is noted as before.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_REVOKED = "OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL"
_NOT_MARKING = "NOT EXISTS (SELECT 1 FROM lease_marking)"


def _trigger(condition: str) -> None:  # built from the constants above only
    body = "INSERT INTO changes (kind, key) VALUES ('lease', NEW.id)"
    op.execute("DROP TRIGGER IF EXISTS changes_leases_update")
    op.execute(f"CREATE TRIGGER changes_leases_update AFTER UPDATE OF revoked_at ON leases "
               f"FOR EACH ROW WHEN {condition} BEGIN {body}; END")


def upgrade() -> None:
    op.create_table("lease_marking", sa.Column("id", sa.Integer, primary_key=True))
    if op.get_bind().dialect.name == "sqlite":
        _trigger(f"{_REVOKED} AND {_NOT_MARKING}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _trigger(_REVOKED)
    op.drop_table("lease_marking")

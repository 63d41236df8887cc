"""the audit log's task and actor keys move from two indexes on ``audit_events`` into
``audit_keys``, filled a few thousand events at a time up to ``audit_head.keyed``, so that
a batch of events no longer writes a b-tree leaf per live task and actor; the keys of the
events already written are filled here, and the head's mark set to the head

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_keys",
        sa.Column("kind", sa.String(1), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )
    op.add_column("audit_head", sa.Column("keyed", sa.BigInteger, nullable=True))
    op.execute("INSERT INTO audit_keys (kind, key, seq) "
               "SELECT 't', task, seq FROM audit_events UNION ALL "
               "SELECT 'a', actor_id, seq FROM audit_events ORDER BY 1, 2, 3")
    # every event up to the head is in the table now, and every one of them keyed
    op.execute("UPDATE audit_head SET keyed = seq WHERE id = 1")
    op.drop_index("ix_audit_events_actor_id", table_name="audit_events")
    op.drop_index("ix_audit_events_task", table_name="audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_actor_id", "audit_events", ["actor_id", "seq"])
    op.create_index("ix_audit_events_task", "audit_events", ["task", "seq"])
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("keyed")
    op.drop_table("audit_keys")

"""the risk fold's mark moves into the audit head's row: ``audit_head.folded`` (the
position of the last audit event folded into the risk baselines; NULL: none yet)
replaces the one-row ``risk_cursor`` table, so that a writer moving the head moves the
mark in the same statement rather than in a row and a page of its own

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("folded", sa.BigInteger, nullable=True))
    op.execute("UPDATE audit_head SET folded = (SELECT seq FROM risk_cursor WHERE id = 1)")
    op.drop_table("risk_cursor")


def downgrade() -> None:
    op.create_table(
        "risk_cursor",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO risk_cursor (id, seq) SELECT 1, folded FROM audit_head "
               "WHERE id = 1 AND folded IS NOT NULL")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("folded")

"""policy revisions

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_revisions",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"),
                  primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_policy_revisions_status", "policy_revisions", ["status"])
    op.create_index("ix_policy_revisions_digest", "policy_revisions", ["digest"])


def downgrade() -> None:
    op.drop_table("policy_revisions")

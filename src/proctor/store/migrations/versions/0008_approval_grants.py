"""pre-approval grants: "approve similar within this task"

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_grants",
        sa.Column("grant_id", sa.String(64), primary_key=True),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.Text, nullable=False),
        sa.Column("tool_id", sa.Text, nullable=False),
        sa.Column("arg_names", sa.JSON, nullable=False),
        sa.Column("approved_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_approval_grants_task", "approval_grants", ["task_id", "agent_id"])


def downgrade() -> None:
    op.drop_table("approval_grants")

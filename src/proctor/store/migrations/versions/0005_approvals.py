"""approval requests; the highest data sensitivity a task has seen

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("sensitivity_seen", sa.Integer, nullable=False,
                                   server_default="0"))
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("binding", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("agent_id", sa.Text, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("tool_id", sa.Text, nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("accessor", sa.String(64), nullable=False),
        sa.Column("on_behalf_of", sa.Text, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.Text, nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_approvals_binding", "approvals", ["binding"])
    op.create_index("ix_approvals_status", "approvals", ["status", "created_at"])
    op.create_index("ix_approvals_task", "approvals", ["task_id"])


def downgrade() -> None:
    op.drop_table("approvals")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("sensitivity_seen")

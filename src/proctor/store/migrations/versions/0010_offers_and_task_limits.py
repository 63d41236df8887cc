"""grant offers, the key each grant is bound to, task lifetimes and idle timeouts

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grant_offers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.Text, nullable=False),
        sa.Column("scope", sa.JSON, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("ancestors", sa.JSON, nullable=False),
        sa.Column("actor_chain", sa.JSON, nullable=False),
        sa.Column("approved", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeem_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grant_id", sa.String(64), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_grant_offers_agent", "grant_offers", ["agent_id"])
    op.create_index("ix_grant_offers_task", "grant_offers", ["task_id"])
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("key_thumbprint", sa.String(64), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("idle_seconds", sa.Integer, nullable=True))
        batch.add_column(sa.Column("idle_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("end_reason", sa.Text, nullable=True))
    op.create_index("ix_tasks_open_expiry", "tasks", ["ended_at", "expires_at"])
    op.create_index("ix_tasks_open_idle", "tasks", ["ended_at", "idle_until"])


def downgrade() -> None:
    op.drop_index("ix_tasks_open_idle", "tasks")
    op.drop_index("ix_tasks_open_expiry", "tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("end_reason")
        batch.drop_column("idle_until")
        batch.drop_column("idle_seconds")
        batch.drop_column("expires_at")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("key_thumbprint")
    op.drop_table("grant_offers")

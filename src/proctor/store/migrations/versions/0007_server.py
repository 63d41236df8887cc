"""the control plane: API tokens, the shadowed policy revision and its differences

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("human_id", sa.Text, nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "policy_shadow",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.Integer, nullable=True),
        sa.Column("changed_by", sa.Text, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "shadow_differences",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"),
                  primary_key=True, autoincrement=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("active_revision", sa.Integer, nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("active_outcome", sa.String(24), nullable=False),
        sa.Column("active_policies", sa.JSON, nullable=False),
        sa.Column("candidate_outcome", sa.String(24), nullable=False),
        sa.Column("candidate_policies", sa.JSON, nullable=False),
    )
    op.create_index("ix_shadow_differences_revision", "shadow_differences", ["revision", "id"])


def downgrade() -> None:
    for table in ("shadow_differences", "policy_shadow", "api_tokens"):
        op.drop_table(table)

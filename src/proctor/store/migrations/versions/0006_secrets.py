"""the encrypted secret store for downstream credentials

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("sealed_value", sa.Text, nullable=False),
        sa.Column("generation", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
    )
    op.create_table(
        "secret_leases",
        sa.Column("lease_id", sa.String(64), primary_key=True),
        sa.Column("secret_name", sa.String(128), nullable=False),
        sa.Column("generation", sa.String(32), nullable=False),
    )
    op.create_index("ix_secret_leases_name", "secret_leases", ["secret_name"])


def downgrade() -> None:
    op.drop_table("secret_leases")
    op.drop_table("secrets")

"""tools discovered at run time, known to every process

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_catalog",
        sa.Column("tool_id", sa.String(200), primary_key=True),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tool_catalog_server", "tool_catalog", ["server"])


def downgrade() -> None:
    op.drop_table("tool_catalog")

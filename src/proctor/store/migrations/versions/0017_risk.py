"""behaviour baselines and risk scores, kept current from the audit stream

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_baselines",
        sa.Column("agent_id", sa.String(512), primary_key=True),
        sa.Column("baseline", sa.JSON, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("factors", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "risk_cursor",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("risk_factors", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("risk_factors")
    op.drop_table("risk_cursor")
    op.drop_table("risk_baselines")

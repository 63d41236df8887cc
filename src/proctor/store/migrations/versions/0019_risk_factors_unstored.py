"""risk baselines keep no factors column: written on every fold and never read (a
baseline's factors are computed from it at the time they are asked for)

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("risk_baselines") as batch:
        batch.drop_column("factors")


def downgrade() -> None:
    with op.batch_alter_table("risk_baselines") as batch:
        batch.add_column(sa.Column("factors", sa.JSON, nullable=False, server_default="[]"))

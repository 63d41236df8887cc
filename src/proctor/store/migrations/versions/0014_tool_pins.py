"""tool pins: the reviewed definition of each upstream tool, and what changed since

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = ("pin_state", "definition", "seen_definition", "pin_change", "renamed_from",
           "changed_at", "reviewed_at", "reviewed_by")


def upgrade() -> None:
    with op.batch_alter_table("tool_catalog") as table:
        table.add_column(sa.Column("pin_state", sa.String(16), nullable=True))
        table.add_column(sa.Column("definition", sa.JSON, nullable=True))
        table.add_column(sa.Column("seen_definition", sa.JSON, nullable=True))
        table.add_column(sa.Column("pin_change", sa.String(16), nullable=True))
        table.add_column(sa.Column("renamed_from", sa.String(200), nullable=True))
        table.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("reviewed_by", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tool_catalog") as table:
        for name in reversed(COLUMNS):
            table.drop_column(name)

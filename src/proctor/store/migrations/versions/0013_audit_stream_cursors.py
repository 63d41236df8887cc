"""audit stream cursors

One row per named audit stream (a SIEM collector, the approval webhook): the
position of the last event the collector acknowledged. Delivery resumes after it,
so a process that stops or crashes re-sends at most what was not yet acknowledged.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_stream_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("after_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_stream_cursors")

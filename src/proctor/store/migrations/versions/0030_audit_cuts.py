"""the audit log's archive cuts: one signed statement per ``proctor audit archive`` that the
events up to ``through`` were archived (``proctor.audit.cuts``), written in the transaction
that deletes them, so that a chain starting after position 1 can show it was cut by an
archive and not by a ``DELETE``

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_cuts",
        sa.Column("through", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_cuts")

"""human ids in canonical form

Owners, the humans tasks and approval requests act for, and the humans API tokens
and console sessions belong to are compared to decide who may do what (separation
of duties, control-plane policies); from this version they are kept in the
canonical form of ``proctor.human_ids``. Rows written before are rewritten in that
form. Records of who did something (``reviewed_by``, ``decided_by``, ...) keep the
spelling they were written with, as the audit log does.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from proctor.human_ids import canonical_human_id

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COMPARED = (("agents", "owner"), ("tasks", "on_behalf_of"), ("approvals", "on_behalf_of"),
            ("api_tokens", "human_id"), ("console_sessions", "human_id"))


def upgrade() -> None:
    conn = op.get_bind()
    for table_name, column_name in COMPARED:
        table = sa.table(table_name, sa.column(column_name, sa.Text))
        column = table.c[column_name]
        for (value,) in conn.execute(sa.select(column).distinct()).all():
            canonical = canonical_human_id(value)
            if canonical != value:
                conn.execute(sa.update(table).where(column == value)
                             .values({column_name: canonical}))


def downgrade() -> None:
    """Nothing to undo: the canonical form is a valid id for the older version too."""

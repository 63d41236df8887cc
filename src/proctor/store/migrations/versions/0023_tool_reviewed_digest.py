"""tool pins: the digest of each tool's reviewed definition, which a call's write
compares with the definition the call is made against (a verdict is a property of a
definition, not a state a listing sets); filled for the pins already stored

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def _digest(definition: dict[str, object]) -> str:
    # proctor.oversight.pinning.definition_digest as of this revision
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("tool_catalog") as table:
        table.add_column(sa.Column("reviewed_digest", sa.String(64), nullable=True))
    catalog = sa.table("tool_catalog", sa.column("tool_id", sa.String),
                       sa.column("definition", sa.JSON),
                       sa.column("reviewed_digest", sa.String))
    bind = op.get_bind()
    rows = bind.execute(sa.select(catalog.c.tool_id, catalog.c.definition).where(
        catalog.c.definition.is_not(None))).all()
    for tool_id, definition in rows:
        if definition is None:  # a JSON null
            continue
        bind.execute(catalog.update().where(catalog.c.tool_id == tool_id).values(
            reviewed_digest=_digest(definition)))


def downgrade() -> None:
    with op.batch_alter_table("tool_catalog") as table:
        table.drop_column("reviewed_digest")

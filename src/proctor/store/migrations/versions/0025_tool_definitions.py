"""tool pins: every definition of a tool seen and not reviewed has a row of its own,
``tool_definitions`` (tool id, digest), pending a human's verdict or rejected by one, so
that each can be reviewed or rejected by its digest and a rejection outlives the
listings that show it again; the definition waiting in ``tool_catalog.seen_definition``
is moved there as pending

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_definitions",
        sa.Column("tool_id", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("renamed_from", sa.String(200), nullable=True),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("tool_id", "digest"),
    )
    op.create_index("ix_tool_definitions_server", "tool_definitions", ["server"])
    catalog = sa.table("tool_catalog", sa.column("tool_id", sa.String),
                       sa.column("server", sa.String), sa.column("pin_state", sa.String),
                       sa.column("seen_definition", sa.JSON),
                       sa.column("pin_change", sa.String),
                       sa.column("renamed_from", sa.String),
                       sa.column("changed_at", sa.DateTime(timezone=True)),
                       sa.column("first_seen_at", sa.DateTime(timezone=True)))
    definitions = sa.table(
        "tool_definitions", *(sa.column(n, sa.String) for n in (
            "tool_id", "digest", "server", "verdict", "change", "renamed_from")),
        sa.column("definition", sa.JSON), sa.column("seen_at", sa.DateTime(timezone=True)),
        sa.column("listed_at", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    rows = bind.execute(sa.select(catalog).where(
        catalog.c.pin_state == "unreviewed", catalog.c.seen_definition.is_not(None))).all()
    for row in rows:
        if row.seen_definition is None:  # a JSON null
            continue
        at = row.changed_at or row.first_seen_at
        bind.execute(definitions.insert().values(
            tool_id=row.tool_id, server=row.server,
            # proctor.oversight.pinning.definition_digest as of this revision
            digest=hashlib.sha256(json.dumps(
                row.seen_definition, sort_keys=True, separators=(",", ":"),
                ensure_ascii=False).encode("utf-8")).hexdigest(),
            definition=row.seen_definition, verdict="pending",
            change=row.pin_change or "changed", renamed_from=row.renamed_from,
            seen_at=at, listed_at=at))


def downgrade() -> None:
    op.drop_index("ix_tool_definitions_server", table_name="tool_definitions")
    op.drop_table("tool_definitions")

"""identity: registered agents

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("trust_domain", sa.String(255), nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("proof_method", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.JSON, nullable=True),
        sa.Column("key_thumbprint", sa.String(64), nullable=True, unique=True),
        sa.Column("oidc_issuer", sa.Text, nullable=True),
        sa.Column("oidc_subject", sa.Text, nullable=True),
        sa.Column("trust_state", sa.String(16), nullable=False),
        sa.Column("risk_score", sa.Integer, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("manifest_digest", sa.String(80), nullable=False),
        sa.Column("presented_manifest", sa.JSON, nullable=True),
        sa.Column("presented_digest", sa.String(80), nullable=True),
        sa.Column("reviewed_by", sa.Text, nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_changed_by", sa.Text, nullable=True),
        sa.Column("state_reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agents_trust_state", "agents", ["trust_state"])
    op.create_index("ux_agents_oidc_subject", "agents", ["oidc_issuer", "oidc_subject"],
                    unique=True)


def downgrade() -> None:
    op.drop_table("agents")

"""a proof's nonce is written to one b-tree: ``proof_nonces`` loses its index on
``expires_at`` (the sweeper, every few minutes, scans the table instead of every
decision writing that index's leaf) and, on SQLite, is rebuilt without rowids (the
nonce, its only key, is the table's b-tree, not a rowid table beside a key index)

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_proof_nonces_expires", table_name="proof_nonces")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE TABLE proof_nonces_0024 (nonce VARCHAR(128) NOT NULL, "
                   "expires_at DATETIME NOT NULL, PRIMARY KEY (nonce)) WITHOUT ROWID")
        op.execute("INSERT INTO proof_nonces_0024 (nonce, expires_at) "
                   "SELECT nonce, expires_at FROM proof_nonces")
        op.execute("DROP TABLE proof_nonces")
        op.execute("ALTER TABLE proof_nonces_0024 RENAME TO proof_nonces")


def downgrade() -> None:
    op.create_index("ix_proof_nonces_expires", "proof_nonces", ["expires_at"])

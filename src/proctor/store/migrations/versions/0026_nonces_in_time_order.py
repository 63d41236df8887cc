"""a used proof is kept under its time then its nonce (``1796644800:<nonce>``,
``proctor.grants.accounting.nonce_key``): the nonces' b-tree in the order proofs arrive,
so that a batch's nonces share the leaf at its right edge instead of a random leaf each

The nonces kept already get the key their proof has now: its time is ``expires_at``
less 121 seconds, which is how every nonce is kept (a proof is accepted until ``iat`` +
61 s, and kept 60 s longer: ``nonce_kept_until``), so a proof used before the upgrade
stays used after it. PostgreSQL widens the column to hold the eleven characters more.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# A proof's time is its nonce's `expires_at` less 121 seconds (PROOF_WINDOW_SECONDS + 1 +
# NONCE_CLOCK_MARGIN_SECONDS when this was written), ten digits at least
_SQLITE = ("INSERT INTO proof_nonces (nonce, expires_at) SELECT printf('%010d', "
           "CAST(strftime('%s', expires_at) AS INTEGER) - 121) || ':' || nonce, expires_at "
           "FROM nonces_0026")
_POSTGRESQL = ("INSERT INTO proof_nonces (nonce, expires_at) SELECT lpad(v.iat::text, "
               "greatest(10, length(v.iat::text)), '0') || ':' || nonce, expires_at "
               "FROM nonces_0026, LATERAL (SELECT extract(epoch FROM expires_at)::bigint - 121 "
               "AS iat) v")
_COPY = "CREATE TEMPORARY TABLE nonces_0026 AS SELECT nonce, expires_at FROM proof_nonces"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE proof_nonces ALTER COLUMN nonce TYPE VARCHAR(140)")
    op.execute(_COPY)
    op.execute("DELETE FROM proof_nonces")
    op.execute(_SQLITE if dialect == "sqlite" else _POSTGRESQL)
    op.execute("DROP TABLE nonces_0026")


def downgrade() -> None:
    # the nonce alone again (past the ten digits and the colon); one kept under two
    # times stays used once
    op.execute(_COPY)
    op.execute("DELETE FROM proof_nonces")
    op.execute("INSERT INTO proof_nonces (nonce, expires_at) SELECT substr(nonce, 12), "
               "max(expires_at) FROM nonces_0026 GROUP BY 1")
    op.execute("DROP TABLE nonces_0026")

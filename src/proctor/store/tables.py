"""The tables, as SQLAlchemy Core metadata; migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["metadata", "policy_revisions"]

metadata = MetaData()

# One row per distinct policy set ever loaded. `status` is candidate, active or
# retired; exactly one row is active once any set was activated. `sources` maps
# each file's relative path to its text, so a revision can be re-validated,
# diffed and shown with source lines without the original directory.
policy_revisions = Table(
    "policy_revisions",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True,
           autoincrement=True),
    Column("digest", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("origin", Text, nullable=False),
    Column("sources", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    Index("ix_policy_revisions_status", "status"),
    Index("ix_policy_revisions_digest", "digest"),
)

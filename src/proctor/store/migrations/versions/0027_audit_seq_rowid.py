"""SQLite: an audit event's position is the table's rowid (``seq INTEGER PRIMARY KEY``):
the table is one b-tree keyed by ``seq``, where a ``BIGINT`` primary key made it a rowid
table beside a second b-tree for ``seq``, a leaf of which every batch wrote

The table is rebuilt: its rows copied in order, its indexes made again. That reads and
writes the whole log once (some 10 s for 200,000 events on a busy disk), at the upgrade
only. PostgreSQL's table is as it was (a heap and its primary key, as before).

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_COLUMNS = ("seq, event_id, time, actor_type, actor_id, task, action, decision, body, "
            "prev_hash, hash")


def _rebuild(seq_type: str) -> None:
    op.execute("ALTER TABLE audit_events RENAME TO audit_events_0027")
    op.execute(
        f"CREATE TABLE audit_events (seq {seq_type} NOT NULL, event_id VARCHAR(36) NOT NULL, "
        "time DATETIME NOT NULL, actor_type VARCHAR(8) NOT NULL, actor_id TEXT NOT NULL, "
        "task TEXT NOT NULL, action TEXT NOT NULL, decision VARCHAR(24), body TEXT NOT NULL, "
        "prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL, PRIMARY KEY (seq), "
        "UNIQUE (event_id))")
    op.execute(f"INSERT INTO audit_events ({_COLUMNS}) SELECT {_COLUMNS} "  # noqa: S608
               "FROM audit_events_0027 ORDER BY seq")
    op.execute("DROP TABLE audit_events_0027")  # and its indexes, made again below
    op.create_index("ix_audit_events_actor_type", "audit_events", ["actor_type", "seq"])
    op.create_index("ix_audit_events_time", "audit_events", ["time"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("INTEGER")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("BIGINT")

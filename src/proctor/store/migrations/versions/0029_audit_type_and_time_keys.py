"""the audit log's actor type and time keys move from two indexes on ``audit_events`` into
``audit_keys`` (kinds ``y``: the event's ``actor_type``, ``w``: its ``time`` as text), filled
with the task and actor keys a few thousand events at a time up to ``audit_head.keyed``, so
that a batch of events writes only the right edges of the events' b-trees; the keys of the
events already keyed are filled here (those after the mark are filled by the writer)

Revision ID: 0029
Revises: 0027
"""

from __future__ import annotations

from alembic import op

revision = "0029"
down_revision = "0027"
branch_labels = None
depends_on = None

# as proctor.audit.driver.TIME_KEY writes it (kept here: a migration does not change)
_TIME_KEY = {True: "CAST(time AS TEXT)",
             False: "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"}


def upgrade() -> None:
    time_key = _TIME_KEY[op.get_bind().dialect.name == "sqlite"]
    op.execute("INSERT INTO audit_keys (kind, key, seq) "  # noqa: S608
               "SELECT 'y', actor_type, seq FROM audit_events "
               "WHERE seq <= (SELECT coalesce(max(keyed), 0) FROM audit_head) UNION ALL "
               f"SELECT 'w', {time_key}, seq FROM audit_events "
               "WHERE seq <= (SELECT coalesce(max(keyed), 0) FROM audit_head) "
               "ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING")
    op.drop_index("ix_audit_events_actor_type", table_name="audit_events")
    op.drop_index("ix_audit_events_time", table_name="audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_actor_type", "audit_events", ["actor_type", "seq"])
    op.create_index("ix_audit_events_time", "audit_events", ["time"])
    op.execute("DELETE FROM audit_keys WHERE kind IN ('y', 'w')")

"""the change feed: one row per change to an agent, a task, a lease or a tool

Every process keeps an in-process view of agents, tasks, revocations and tools
(:mod:`proctor.store.changes`). It learns what another process changed from the
``changes`` table, which triggers fill in the same transaction as the change
itself, whichever code (or version of proctor) makes it; on PostgreSQL the same
triggers also ``NOTIFY`` the channel ``proctor_changes``. Only what a view holds
is noted: any change to an agent; a task's end, lifetime or data sensitivity
seen (not its idle deadline, which moves on every call); a lease's revocation;
a tool recorded.

A later migration that rebuilds one of these tables on SQLite (``batch_alter_table``
copies it into a new one) drops its triggers with it and must create them again;
tests/store/test_changes.py fails until it does.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# (table, kind, key column, events, WHEN condition or None)
_TASK_CHANGED = ("OLD.ended_at IS DISTINCT FROM NEW.ended_at"
                 " OR OLD.sensitivity_seen IS DISTINCT FROM NEW.sensitivity_seen"
                 " OR OLD.expires_at IS DISTINCT FROM NEW.expires_at")
_WATCHED = (
    ("agents", "agent", "id", ("INSERT", "UPDATE", "DELETE"), None),
    ("tasks", "task", "id", ("UPDATE OF ended_at, sensitivity_seen, expires_at",),
     _TASK_CHANGED),
    ("leases", "lease", "id", ("UPDATE OF revoked_at",),
     "OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL"),
    ("tool_catalog", "tool", "tool_id", ("INSERT",), None),
)


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql()
    else:
        _sqlite()


# The statements below are built from the constants above only.


def _sqlite() -> None:
    for table, kind, column, events, when in _WATCHED:
        for event in events:
            row = "OLD" if event == "DELETE" else "NEW"
            name = f"changes_{table}_{event.split()[0].lower()}"
            condition = f" WHEN {when.replace('IS DISTINCT FROM', 'IS NOT')}" if when else ""
            body = f"INSERT INTO changes (kind, key) VALUES ('{kind}', {row}.{column})"  # noqa: S608
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW"
                       f"{condition} BEGIN {body}; END")


def _postgresql() -> None:
    for table, kind, column, events, when in _WATCHED:
        function = f"proctor_changes_{table}"
        row = "OLD" if "DELETE" in events else "NEW"
        key = (f"CASE WHEN TG_OP = 'DELETE' THEN OLD.{column} ELSE NEW.{column} END"
               if row == "OLD" else f"NEW.{column}")
        op.execute(f"""
CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  noted bigint;
  changed text := {key};
BEGIN
  INSERT INTO changes (kind, key) VALUES ('{kind}', changed) RETURNING seq INTO noted;
  PERFORM pg_notify('proctor_changes', noted || ' {kind} ' || changed);
  RETURN NULL;
END $$""")  # noqa: S608
        condition = f" WHEN ({when})" if when else ""
        op.execute(f"CREATE TRIGGER changes_{table} AFTER {' OR '.join(events)} ON {table} "
                   f"FOR EACH ROW{condition} EXECUTE FUNCTION {function}()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, *_ in _WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS changes_{table} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS proctor_changes_{table}()")
    else:
        for table, _, _, events, _ in _WATCHED:
            for event in events:
                op.execute(f"DROP TRIGGER IF EXISTS changes_{table}_{event.split()[0].lower()}")
    op.drop_table("changes")

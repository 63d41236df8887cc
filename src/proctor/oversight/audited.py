"""A human's change and its audit event, committed in one transaction.

A change a human makes (an agent registered, reviewed, suspended, retired...) is the
effects of its own audit event, applied in the audit writer's transaction
(:meth:`~proctor.audit.AuditLog.record_with`): the log holds the event if and only if
the change took effect. Written after the change had committed, the event was lost to a
process that died between the two, and the change stood with nothing in the log saying
who made it.

A change's effects (:class:`Change`) check what they find in that transaction; a check
that fails writes nothing and leaves its refusal in :attr:`Change.refusal`, which
:func:`commit_with_event` raises once the transaction is over.

If the audit log cannot write the transaction, nothing of it was made. A change that
gives access (a registration, a review that trusts a manifest) is then refused: fail
closed, :class:`~proctor.errors.AuditUnavailableError` says it was not made. A change
that takes access away gives ``alone``, which makes it in a transaction of its own (an
audit outage never keeps an agent from being stopped), and the error says it took effect
unaudited.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import JSON, DateTime, Table

from proctor.audit import AuditEvent, WriteCursor
from proctor.audit.recording import commit_with_event
from proctor.errors import ProctorError

__all__ = ["Change", "commit_with_event", "insert_row", "read_rows", "update_rows"]

# commit_with_event lives in proctor.audit.recording, so that the secret store (beside
# this package, not above it) commits its changes the same way


class Change(Protocol):
    """A human's change as the effects of its event (:class:`~proctor.audit.writer.Effects`)."""

    refusal: ProctorError | None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        """Make the change in ``tx``; as :meth:`Effects.apply <proctor.audit.writer.
        Effects.apply>`. A check that fails sets :attr:`refusal` and writes nothing."""


# A change's statements on the writer's cursor, from its table's definition: the columns'
# names are the table's, never input; JSON goes in as its text, times through the cursor.

def _kinds(table: Table) -> tuple[frozenset[str], frozenset[str]]:
    return (frozenset(c.name for c in table.c if isinstance(c.type, JSON)),
            frozenset(c.name for c in table.c if isinstance(c.type, DateTime)))


def read_rows(tx: WriteCursor, table: Table, where: str, params: Sequence[Any], *,
              lock: bool = False) -> list[Any]:
    """``table``'s rows ``where`` (``{p}`` for each of ``params``) as ``tx`` reads them,
    each with its columns as attributes (JSON parsed, times aware UTC); ``lock``: read
    FOR UPDATE (PostgreSQL; SQLite's writer holds the database's lock)."""
    names = [c.name for c in table.c]
    json_columns, times = _kinds(table)
    columns = ", ".join(f'"{name}"' for name in names)
    found = tx.rows(f"SELECT {columns} FROM {table.name} WHERE {where}"  # noqa: S608
                    + (" FOR UPDATE" if lock and not tx.is_sqlite else ""), params)
    rows = []
    for row in found:
        values: dict[str, Any] = {}
        for name, value in zip(names, row, strict=True):
            if name in json_columns and isinstance(value, str):
                value = json.loads(value)
            elif name in times:
                value = tx.read_time(value)
            values[name] = value
        rows.append(SimpleNamespace(**values))
    return rows


def _stored(tx: WriteCursor, table: Table, values: Mapping[str, Any]) -> list[Any]:
    json_columns, times = _kinds(table)
    return [None if value is None else json.dumps(value) if name in json_columns
            else tx.time(value) if name in times else value for name, value in values.items()]


def update_rows(tx: WriteCursor, table: Table, values: Mapping[str, Any], where: str,
                params: Sequence[Any]) -> int:
    """Set ``values`` in ``table``'s rows ``where``; how many rows changed."""
    columns = ", ".join(f'"{name}" = {{p}}' for name in values)
    return tx.execute(f"UPDATE {table.name} SET {columns} WHERE {where}",  # noqa: S608
                      [*_stored(tx, table, values), *params])


def insert_row(tx: WriteCursor, table: Table, values: Mapping[str, Any], *,
               unless_taken: bool = False) -> bool:
    """Insert ``values`` into ``table``; ``unless_taken``: not if a unique key of it is
    taken already (ON CONFLICT DO NOTHING). Whether it was inserted."""
    names = ", ".join(f'"{name}"' for name in values)
    marks = ", ".join("{p}" for _ in values)
    return bool(tx.execute(
        f"INSERT INTO {table.name} ({names}) VALUES ({marks})"  # noqa: S608
        + (" ON CONFLICT DO NOTHING" if unless_taken else ""), _stored(tx, table, values)))

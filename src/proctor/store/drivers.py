"""The database drivers' errors, without importing a driver the process does not use.

psycopg costs about 0.2 s of CPU to import, and a process on SQLite (most ``proctor``
commands, ``proctor mcp wrap`` on the embedded default) never needs it: SQLAlchemy
imports it when an engine for PostgreSQL is created. An error of psycopg cannot be
raised before psycopg is imported, so where it is not imported there is none to
catch, and :func:`psycopg_errors` is empty.

>>> import sqlite3
>>> isinstance(sqlite3.OperationalError(), (sqlite3.Error, *psycopg_errors("Error")))
True
"""

from __future__ import annotations

import sqlite3
import sys

__all__ = ["driver_errors", "psycopg_errors"]


def psycopg_errors(*names: str) -> tuple[type[Exception], ...]:
    """The classes ``psycopg.errors.<name>`` for ``names``; none while psycopg is not loaded."""
    module = sys.modules.get("psycopg.errors")
    if module is None:
        return ()
    found = (getattr(module, name, None) for name in names)
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, Exception))


def driver_errors() -> tuple[type[Exception], ...]:
    """The base errors of both drivers (sqlite3's, and psycopg's once it is loaded)."""
    return (sqlite3.Error, *psycopg_errors("Error"))

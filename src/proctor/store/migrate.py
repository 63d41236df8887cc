"""Alembic migrations, run programmatically on open.

A process that opens a database already at :data:`HEAD_REVISION` does not load
Alembic at all (the MCP wrapper starts with every MCP client session): one query
of ``alembic_version`` tells. A test checks the constant against the scripts.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from proctor.errors import MigrationError

__all__ = ["HEAD_REVISION", "is_current", "upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")
HEAD_REVISION = "0030"


def is_current(engine: Engine) -> bool:
    """Whether ``engine``'s database is at :data:`HEAD_REVISION` (False if it has no
    version table yet, or cannot say)."""
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False
    return [row[0] for row in found] == [HEAD_REVISION]


def _revisions(engine: Engine) -> list[str]:
    """The revisions ``alembic_version`` names (none if it cannot be read)."""
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return []
    return [str(row[0])[:32] for row in found]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of ``engine``'s database to ``revision``. Raises
    :class:`~proctor.errors.MigrationError` if it fails, or if the database is at a
    revision these scripts do not have."""
    from alembic import command  # only when there is something to migrate
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    from alembic.util import CommandError

    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except CommandError as exc:  # a revision these scripts do not have: a newer proctor's
        found = _revisions(engine)
        raise MigrationError(
            f"database migration failed: the database is at revision "
            f"{', '.join(found) or 'unknown'}, which this proctor (up to {HEAD_REVISION}) "
            "does not know; a newer proctor migrated it") from exc
    except SQLAlchemyError as exc:
        raise MigrationError(f"database migration failed: {type(exc).__name__}") from exc

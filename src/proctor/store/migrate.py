"""Alembic migrations, run programmatically on open."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from proctor.errors import MigrationError

__all__ = ["upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of ``engine``'s database to ``revision``."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise MigrationError(f"database migration failed: {type(exc).__name__}") from exc

"""Migration 0006 creates the secret tables and takes them away again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from proctor.store import open_store
from proctor.store.engine import create_store_engine
from proctor.store.migrate import upgrade

SCRIPTS = Path(__file__).resolve().parents[2] / "src" / "proctor" / "store" / "migrations"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield request.getfixturevalue("empty_postgres_url")


def test_0006_upgrades_and_downgrades(empty_url: str) -> None:
    engine = create_store_engine(empty_url)
    try:
        upgrade(engine, "0006")
        tables = set(inspect(engine).get_table_names())
        assert {"secrets", "secret_leases"} <= tables
        config = Config()
        config.set_main_option("script_location", str(SCRIPTS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0005")
        inspector = inspect(engine)
        assert not {"secrets", "secret_leases"} & set(inspector.get_table_names())
        assert "approvals" in inspector.get_table_names()
    finally:
        engine.dispose()
    open_store(empty_url).close()  # and up to head again

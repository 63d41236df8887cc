from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, text

from proctor.errors import ConfigError, StoreError
from proctor.store import as_utc, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return str(request.getfixturevalue("empty_postgres_url"))


def test_opening_creates_and_migrates_an_empty_database(empty_database_url: str) -> None:
    store = open_store(empty_database_url)
    try:
        tables = inspect(store.engine).get_table_names()
        assert "policy_revisions" in tables
        assert "alembic_version" in tables
    finally:
        store.close()


def test_opening_twice_is_idempotent(database_url: str) -> None:
    open_store(database_url).close()
    store = open_store(database_url)
    with store.transaction() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    store.close()
    assert len(versions) == 1


def test_sqlite_file_is_created_under_a_new_folder_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "home" / "proctor.db"
    store = open_store(f"sqlite:///{db}")
    with store.transaction() as conn:
        mode = conn.execute(text("PRAGMA journal_mode")).scalar()
    store.close()
    assert db.is_file()
    assert mode == "wal"


def test_a_failed_transaction_is_rolled_back_and_reported_as_store_error(
    database_url: str,
) -> None:
    store = open_store(database_url)
    try:
        with pytest.raises(StoreError) as caught, store.transaction() as conn:
            conn.execute(text(
                "INSERT INTO policy_revisions (digest, status, origin, sources, created_at) "
                "VALUES ('d', 'candidate', 'test', '{}', CURRENT_TIMESTAMP)"
            ))
            conn.execute(text("SELECT * FROM no_such_table"))
        assert caught.value.code == "store_unavailable"
        with store.transaction() as conn:
            assert conn.execute(text("SELECT count(*) FROM policy_revisions")).scalar() == 0
    finally:
        store.close()


def _connections_to(url: str) -> int:
    """How many connections the database at ``url`` has open: PostgreSQL's own count; a
    SQLite file in WAL mode has its ``-wal`` file while one is open (the last to close
    checkpoints and removes it)."""
    if url.startswith("sqlite"):
        return int(Path(url.removeprefix("sqlite:///") + "-wal").exists())
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                             [name]).fetchone()
    assert found is not None
    return int(found[0])


def test_a_database_that_cannot_be_migrated_is_left_with_no_connection_open(
        empty_database_url: str) -> None:
    """A database at a revision this proctor does not know (written by a newer one): the
    opening fails, and closes what it opened. Before, the engine was left to the garbage
    collector with its pooled connection open (Alembic's ``op`` proxy held it meanwhile):
    a ResourceWarning in whichever later test the collection ran."""
    open_store(empty_database_url).close()
    store = open_store(empty_database_url, migrate=False)
    try:
        with store.transaction() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        store.close()
    assert _connections_to(empty_database_url) == 0
    with pytest.raises(Exception, match="9999"):
        open_store(empty_database_url)
    assert _connections_to(empty_database_url) == 0


def test_an_unreachable_postgresql_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_an_unsupported_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        open_store("mysql://root@localhost/db")


def test_naive_datetimes_from_sqlite_are_read_as_utc() -> None:
    from datetime import UTC, datetime

    assert as_utc(datetime(2026, 1, 1, 12, 0)).tzinfo is UTC


def test_the_fast_read_path_returns_rows_and_reports_errors_as_store_errors(
    database_url: str,
) -> None:
    store = open_store(database_url)
    try:
        with store.transaction() as conn:
            conn.execute(text(
                "INSERT INTO policy_revisions (digest, status, origin, sources, created_at) "
                "VALUES ('d1', 'candidate', 'test', '{}', CURRENT_TIMESTAMP)"
            ))
        rows = store.fetch("SELECT digest, status FROM policy_revisions WHERE digest IN ({p}, {p})",
                           ["d1", "nope"])
        assert rows == [("d1", "candidate")]
        with pytest.raises(StoreError):
            store.fetch("SELECT * FROM no_such_table WHERE x = {p}", [1])
    finally:
        store.close()

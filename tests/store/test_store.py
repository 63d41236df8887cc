from __future__ import annotations

from pathlib import Path

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

"""Shared fixtures: a clock pinned in time, and a fresh database per test on each backend.

PostgreSQL tests use the server on 127.0.0.1:5432 (``PROCTOR_TEST_PG_URL`` to
override). Each test gets its own database, dropped afterwards. Outside CI a
missing server skips those tests; with ``CI=true`` it fails them, because CI
must exercise the PostgreSQL store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from proctor.clock import FrozenClock

PG_ADMIN_URL = os.environ.get("PROCTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped after the test."""
    problem = _pg_available()
    if problem is not None:
        if IN_CI:
            pytest.fail(problem + " (CI must run the PostgreSQL tests)")
        pytest.skip(problem)
    name = f"proctor_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on a SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'proctor.db'}"
    else:
        yield request.getfixturevalue("postgres_url")

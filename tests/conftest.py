"""Shared fixtures: a clock pinned in time, and a fresh database per test on each backend.

PostgreSQL tests use the server on 127.0.0.1:5432 (``PROCTOR_TEST_PG_URL`` to
override). The tests share one database, migrated once per session and
emptied after each test; tests of migrations themselves get an empty database. Outside CI a
missing server skips those tests; with ``CI=true`` it fails them, because CI
must exercise the PostgreSQL store.

``scripts/test`` runs the tests in parallel (pytest-xdist). Each worker is a session of
its own, so it has its own PostgreSQL database (named after the worker), its own SQLite
template and its own ``tmp_path`` directories; a test that keeps to these fixtures, and
listens only on ports the OS chose, is independent of the others without doing more.

A test on ``database_url`` runs on both backends. One whose subject does not differ
between them (nothing the store does differently: no ``LISTEN``/``NOTIFY``, no
concurrency, no SQL of its own) runs on SQLite alone with ``@sqlite_only``.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import typer.main
import typer.testing
from psycopg import sql

from proctor.clock import FrozenClock
from proctor.store import open_store
from tests.longest_first import Recorder, deal, read_durations, workers

# `CliRunner.invoke` builds the click command tree from the typer app on every call (the
# type hints of every command: about 40 ms); the app does not change during a run, so the
# tests build it once per app. Each invocation still parses its arguments afresh.
typer.testing._get_command = functools.cache(typer.main.get_command)  # type: ignore[attr-defined]

# Bytecode caches written, whatever the environment says (PYTHONDONTWRITEBYTECODE):
# scripts/test compiles the repository and the environment up front, but not pytest's
# assertion-rewritten test modules (each worker rewrote all of them on every run), nor
# anything when pytest runs alone; every process the tests start would then compile what
# it imports from source, half the CPU of a short one. Set before the workers start, so
# that they and every child process inherit it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

PG_ADMIN_URL = os.environ.get("PROCTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
_PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's admin URL; outside CI a test needing it is skipped when it
    is not reachable, in CI (``CI=true``) it fails."""
    problem = _pg_available()
    if problem is not None:
        if IN_CI:
            pytest.fail(problem + " (CI must run the PostgreSQL tests)")
        pytest.skip(problem)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def postgres_session_db(postgres_server: str) -> Iterator[str]:
    """One database per test session, migrated once."""
    name = _create()
    try:
        open_store(f"{_PG_BASE}/{name}").close()  # runs every migration
        yield name
    finally:
        _drop(name)


@pytest.fixture
def postgres_url(postgres_session_db: str) -> Iterator[str]:
    """The session's migrated PostgreSQL database, emptied after the test."""
    url = f"{_PG_BASE}/{postgres_session_db}"
    yield url
    _empty(url)


def _empty(url: str) -> None:
    """Every table but Alembic's emptied, and the sequences restarted.

    ``DELETE`` with foreign keys unchecked (the whole schema is emptied at once) takes a
    tenth of what ``TRUNCATE`` of every table does; without the privilege that needs, it
    falls back to ``TRUNCATE``."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'").fetchall()]
        sequences = [r[0] for r in conn.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'").fetchall()]
        if not tables:
            return
        emptying: list[sql.Composable] = [sql.SQL("SET LOCAL session_replication_role = replica")]
        emptying += [sql.SQL("DELETE FROM {}").format(sql.Identifier(t)) for t in tables]
        emptying += [sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(s))
                     for s in sequences]
        try:
            with conn.transaction():
                conn.execute(sql.SQL("; ").join(emptying))
        except psycopg.errors.InsufficientPrivilege:
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)))


@pytest.fixture
def empty_postgres_url(postgres_session_db: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (no migrations run); dropped after the test."""
    name = _create()
    try:
        yield f"{_PG_BASE}/{name}"
    finally:
        _drop(name)


def _create() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1...: which worker made it
    name = f"proctor_test_{worker}_{uuid.uuid4().hex[:12]}" if worker else (
        f"proctor_test_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "proctor.db"
    open_store(f"sqlite:///{path}").close()
    return path


#: What a home's settings read besides ``PROCTOR_HOME`` and ``PROCTOR_TRUST_DOMAIN``: unset
#: for a home made by ``proctor init`` (its SQLite database inside it).
_HOME_VARIABLES = ("PROCTOR_DATABASE_URL", "PROCTOR_CONFIG", "PROCTOR_IDENTITY_CONFIG",
                   "PROCTOR_MASTER_KEY", "PROCTOR_POLICY_DIR", "PROCTOR_OPERATOR",
                   "PROCTOR_WEBHOOK_CONFIG")


@pytest.fixture(scope="session")
def initialised_home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home made by ``proctor init`` (trust domain acme.example, its SQLite database
    inside it), once per session: migrations, master key, example policies activated,
    the admin token. ``initialised_home`` gives each test a copy."""
    from proctor.cli.main import app

    home = tmp_path_factory.mktemp("home-template") / "home"
    env: dict[str, str | None] = {"PROCTOR_HOME": str(home),
                                  "PROCTOR_TRUST_DOMAIN": "acme.example"}
    env.update(dict.fromkeys(_HOME_VARIABLES))
    result = typer.testing.CliRunner().invoke(app, ["init"], env=env)
    assert result.exit_code == 0, result.output
    return home


@pytest.fixture
def initialised_home(initialised_home_template: Path, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a home ``proctor init`` made, as ``$PROCTOR_HOME`` (trust domain
    acme.example), for a test of what commands do in an initialised home: ``init``
    itself costs ~0.15 s of CPU (a test whose subject is ``init`` runs it)."""
    home = tmp_path / "home"
    shutil.copytree(initialised_home_template, home)
    monkeypatch.setenv("PROCTOR_HOME", str(home))
    monkeypatch.setenv("PROCTOR_TRUST_DOMAIN", "acme.example")
    for variable in _HOME_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return home


#: The test's ``database_url`` is SQLite only: for a test whose subject does not differ
#: between the backends (that part is tested on both elsewhere).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on a SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        database = tmp_path / "proctor.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        yield f"sqlite:///{database}"
    else:
        yield request.getfixturevalue("postgres_url")


def pytest_configure(config: pytest.Config) -> None:
    record = os.environ.get("PROCTOR_RECORD_DURATIONS")
    if record and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Recorder(Path(record)), "proctor-durations")


@pytest.hookimpl(trylast=True)  # after deselection: the shares are of what runs
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    deal(items, read_durations(), workers())

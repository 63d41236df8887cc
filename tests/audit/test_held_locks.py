"""A lock another connection holds never stalls the audit writer: the batch waits for it
at most its lock bound, then fails closed (every decision in it denied
``audit_unavailable``, nothing of it committed), and the writer goes on with the next.

On PostgreSQL the lock is a row's, held ``FOR UPDATE`` by a second connection as a
human's open transaction or a stuck session would hold it: the agent's row and the
grant's lease node (which a call's write reads ``FOR SHARE``) and the audit head (which
every batch locks). On SQLite it is the database's one write lock, held by a second
connection's ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from proctor.audit import AuditLog
from proctor.clock import FrozenClock, SystemClock
from proctor.config import Settings
from proctor.enforcement import CallVerdict
from proctor.errors import StoreError
from proctor.grants import IssuedGrant
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.store import open_store
from proctor.store.tables import audit_events
from tests.audit.helpers import agent_event, verified_by_the_cli
from tests.enforcement.conftest import CODER, OWNER, Agents
from tests.identity.factories import manifest, public_jwk

WAIT = 60.0  # a bound on every wait here, never reached when the bound under test holds
LOCK_TIMEOUT = 0.5  # the store's lock timeout in these tests: each failed write waits it

GIT = [{"tool": "git/git_log"}]
ARGS = {"repo_path": "/srv/repos/app"}

# the row a second PostgreSQL connection holds, as a human's open transaction would
HELD_ROWS = {
    "agent": "SELECT 1 FROM agents WHERE id = %(agent)s FOR UPDATE",
    "grant": "SELECT 1 FROM leases WHERE id = %(grant)s FOR UPDATE",
    "audit_head": "SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE",
}
CASES = [pytest.param("sqlite", "write_lock", id="sqlite-write_lock")] + [
    pytest.param("postgresql", row, id=f"postgresql-{row}", marks=pytest.mark.postgres)
    for row in HELD_ROWS]


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example", database_lock_timeout_seconds=LOCK_TIMEOUT)
    init_home(settings)
    runtime = open_runtime(settings, clock=FrozenClock(SystemClock().now()))
    yield runtime
    runtime.close()


@pytest.fixture
def agents(runtime: Runtime) -> Agents:
    key = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(CODER, owner=OWNER, groups=["coding-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
    runtime.enforcer.refresh_principals()
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return Agents(runtime, {CODER: private})


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def _held(runtime: Runtime, what: str, names: dict[str, str]) -> Iterator[None]:
    """``what`` held by a second connection until the block ends (then rolled back)."""
    url = runtime.settings.database_url
    if runtime.store.backend == "sqlite":
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    with psycopg.connect(_psycopg_url(url)) as conn:
        try:
            assert conn.execute(HELD_ROWS[what], names).fetchall() == [(1,)]
            yield
        finally:
            conn.rollback()


def _in_thread(decide: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    answers: list[object] = []

    def run() -> None:
        try:
            answers.append(decide())
        except Exception as exc:  # the test looks at it: raising is an answer too
            answers.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def _events(runtime: Runtime) -> int:
    with runtime.store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())


def _answered_while(held: AbstractContextManager[None], decide: Callable[[], object]
                    ) -> object:
    """What ``decide`` answers while ``held`` is held; fails (rather than hangs) if it
    does not answer within :data:`WAIT` (the lock let go of at the end, either way)."""
    with held:
        thread, answers = _in_thread(decide)
        thread.join(WAIT)
        alive = thread.is_alive()
    thread.join(WAIT)
    assert not alive, f"no answer within {WAIT:g} s while a lock was held"
    assert len(answers) == 1
    return answers[0]


@pytest.mark.parametrize(("database_url", "what"), CASES, indirect=["database_url"])
def test_a_held_lock_denies_the_decision_within_the_bound_and_the_next_one_is_allowed(
    runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch, what: str,
) -> None:
    grant: IssuedGrant = agents.grant(CODER, GIT, purpose="fix the build", max_uses=1)
    names = {"agent": CODER, "grant": grant.grant_id}
    before = _events(runtime)

    verdict = _answered_while(_held(runtime, what, names),
                              lambda: agents.call(grant, "git/git_log", ARGS))

    assert isinstance(verdict, CallVerdict)
    assert not verdict.is_allowed
    assert verdict.code == "audit_unavailable"
    assert _events(runtime) == before  # nothing of the batch committed: not its event...
    # ... nor its grant's use (one use only): the lock let go of, the writer goes on
    after = agents.call(grant, "git/git_log", ARGS)
    assert after.is_allowed, after
    assert _events(runtime) == before + 1
    settings = runtime.settings
    assert verified_by_the_cli(monkeypatch, settings.home, settings.database_url)["valid"] is True


@pytest.mark.parametrize(("database_url", "what"), CASES[:1] + CASES[2:3],
                         indirect=["database_url"])
def test_a_revocation_waits_for_a_held_lock_at_most_the_lock_timeout_and_changes_nothing(
    runtime: Runtime, agents: Agents, what: str,
) -> None:
    grant = agents.grant(CODER, GIT, purpose="fix the build")
    names = {"agent": CODER, "grant": grant.grant_id}

    answer = _answered_while(_held(runtime, what, names),
                             lambda: runtime.grants.revoke(grant.grant_id, reason="leaked"))

    assert isinstance(answer, StoreError), answer
    assert agents.call(grant, "git/git_log", ARGS).is_allowed  # not revoked
    runtime.grants.revoke(grant.grant_id, reason="leaked")  # the lock let go of
    assert agents.call(grant, "git/git_log", ARGS).code == "grant_revoked"


def _bounds(driver: object, is_sqlite: bool) -> tuple[str, ...]:
    if is_sqlite:
        return (str(driver.execute("PRAGMA busy_timeout").fetchone()[0]),)  # type: ignore[attr-defined]
    cursor = driver.cursor()  # type: ignore[attr-defined]
    cursor.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout'),"
                   " current_setting('idle_in_transaction_session_timeout')")
    found = tuple(cursor.fetchone())
    cursor.close()
    driver.rollback()  # type: ignore[attr-defined]
    return found


def test_the_writer_waits_half_its_timeout_for_a_lock_and_gives_its_connection_back_as_it_came(
    database_url: str, clock: FrozenClock,
) -> None:
    """A log whose callers wait 0.4 s waits 0.2 s for another's lock (the store's is
    0.5 s); on PostgreSQL its statements and idle transaction are bounded by the store's
    0.5 s (its timeout being shorter). Closed, its connection goes back to the pool with
    the store's bounds."""
    store = open_store(database_url, lock_timeout_seconds=LOCK_TIMEOUT)
    is_sqlite = store.backend == "sqlite"
    try:
        log = AuditLog(store, clock=clock, timeout=0.4)
        try:
            log.record(agent_event(clock, 1), timeout=WAIT)
            proxy = log._conn._proxy
            assert proxy is not None
            driver = proxy.driver_connection
            assert _bounds(driver, is_sqlite) == (("200",) if is_sqlite
                                                  else ("200ms", "500ms", "500ms"))
        finally:
            log.close()
        assert _bounds(driver, is_sqlite) == (("500",) if is_sqlite else ("500ms", "0", "0"))
    finally:
        store.close()

"""Every decision is audited before it is returned, and fails closed when it cannot be."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import proctor
from proctor.audit import (
    AuditLog,
    decide_and_record,
    search_events,
    verifiers_for,
    verify_store,
)
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError
from proctor.keys import LocalSigner
from proctor.policy import (
    DecisionRequest,
    Outcome,
    PolicyEngine,
    ReasonCode,
    load_bundle,
    request_from_spec,
)
from proctor.store import Store, open_store
from tests.conftest import PG_ADMIN_URL

EXAMPLES = Path(proctor.__file__).resolve().parent / "examples" / "policies"
CODER = "spiffe://acme.example/agent/coder"


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return load_bundle(EXAMPLES).engine()


def read_log(clock: FrozenClock, **extra: object) -> DecisionRequest:
    spec = {"agent": CODER, "tool": "git/git_log", "args": {"repo_path": "/srv/repos/app"},
            "task": "task-42", "on_behalf_of": "alice@acme.example", "source_ip": "10.0.0.7",
            "delegation_chain": ["spiffe://acme.example/agent/planner"], **extra}
    return request_from_spec(spec, now=clock.now())


def test_an_allowed_decision_is_returned_once_its_event_is_stored(
    engine: PolicyEngine, audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    decision = decide_and_record(engine, audit, read_log(clock), grant="acc-7f3a",
                                 event_id="0192f3a4-5b6c-7d8e-9f00-112233445566")
    assert decision.outcome is Outcome.ALLOW
    [stored] = search_events(store)
    event = stored.event
    assert event["id"] == "0192f3a4-5b6c-7d8e-9f00-112233445566"
    assert event["actor"] == {"type": "agent", "id": CODER, "on_behalf_of": "alice@acme.example"}
    assert event["delegation_chain"] == ["spiffe://acme.example/agent/planner"]
    assert (event["task"], event["action"], event["target"]) == (
        "task-42", "tool:git/git_log", 'Tool::"git/git_log"')
    assert event["decision"]["outcome"] == "allow"
    assert event["decision"]["policy_ids"] == list(decision.policy_ids)
    assert event["decision"]["revision"] == decision.revision
    assert (event["outcome"], event["grant"], event["source"]) == ("allowed", "acc-7f3a",
                                                                   "10.0.0.7")
    assert len(event["request_digest"]) == 64


def test_a_denied_decision_is_audited_too(
    engine: PolicyEngine, audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    request = read_log(clock, args={"repo_path": "/etc"})
    assert decide_and_record(engine, audit, request).outcome is Outcome.DENY
    assert search_events(store)[0].event["outcome"] == "denied"


def test_secrets_in_the_request_never_reach_the_log(
    engine: PolicyEngine, audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    secret = "ghp_" + "x" * 36
    request = read_log(clock, purpose=f"use token {secret} for the push")
    decide_and_record(engine, audit, request)
    [stored] = search_events(store)
    assert secret not in str(stored.event)
    assert stored.event["detail"]["purpose"] == "use token [masked:github_token] for the push"


def test_a_stopped_writer_turns_every_decision_into_a_deny(
    engine: PolicyEngine, audit: AuditLog, clock: FrozenClock
) -> None:
    audit.close()
    decision = decide_and_record(engine, audit, read_log(clock))
    assert (decision.outcome, decision.code) == (Outcome.DENY, ReasonCode.AUDIT_UNAVAILABLE)
    assert "closed" in decision.errors[0]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'proctor.db'}")
    yield store
    store.close()


def test_a_locked_sqlite_database_denies_and_the_chain_recovers_afterwards(
    engine: PolicyEngine, sqlite_store: Store, tmp_path: Path, clock: FrozenClock,
    signer: LocalSigner,
) -> None:
    audit = AuditLog(sqlite_store, signer=signer, clock=clock, busy_timeout_ms=100)
    try:
        assert decide_and_record(engine, audit, read_log(clock)).is_allowed
        blocker = sqlite3.connect(tmp_path / "proctor.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            decision = decide_and_record(engine, audit, read_log(clock))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (decision.outcome, decision.code) == (Outcome.DENY,
                                                     ReasonCode.AUDIT_UNAVAILABLE)
        assert "locked" in decision.errors[0]
        assert decide_and_record(engine, audit, read_log(clock)).is_allowed
    finally:
        audit.close()
    report = verify_store(sqlite_store, verifiers_for([signer]))
    assert report.is_valid and report.events == 2


def test_an_async_caller_whose_write_does_not_complete_in_time_is_told_so(
    sqlite_store: Store, tmp_path: Path, clock: FrozenClock, signer: LocalSigner,
) -> None:
    from tests.audit.helpers import agent_event

    # the writer waits (up to a minute) for a write lock another process holds, in a
    # batch of one event: the late one stays queued behind it
    audit = AuditLog(sqlite_store, signer=signer, clock=clock, busy_timeout_ms=60_000,
                     max_batch=1)
    try:
        audit.record(agent_event(clock, 0))
        blocker = sqlite3.connect(tmp_path / "proctor.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        ahead = audit.submit(agent_event(clock, 1))

        async def late() -> None:
            async with asyncio.timeout(30):  # a caller never answered fails here, not hangs
                await audit.record_async(agent_event(clock, 2), timeout=0.2)

        try:
            with pytest.raises(AuditUnavailableError, match=r"did not complete within 0\.2 s"):
                asyncio.run(late())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # the lock gone, the log goes on: the late event was withdrawn, never written
        assert ahead.wait(60).seq == 2
        assert audit.record(agent_event(clock, 3)).seq == 3
    finally:
        audit.close()
    report = verify_store(sqlite_store, verifiers_for([signer]))
    assert report.is_valid and report.events == 3


def test_a_short_time_limit_expires_before_a_longer_one_queued_ahead_of_it(
    sqlite_store: Store, tmp_path: Path, clock: FrozenClock, signer: LocalSigner,
) -> None:
    from tests.audit.helpers import agent_event

    # batches of one event: the short one stays queued behind the patient one
    audit = AuditLog(sqlite_store, signer=signer, clock=clock, busy_timeout_ms=60_000,
                     max_batch=1)
    try:
        audit.record(agent_event(clock, 0))
        blocker = sqlite3.connect(tmp_path / "proctor.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")

        async def both() -> tuple[bool, int]:
            async with asyncio.timeout(30):
                patient = asyncio.ensure_future(
                    audit.record_async(agent_event(clock, 1), timeout=60))
                await asyncio.sleep(0)  # the patient caller is queued first
                try:
                    await audit.record_async(agent_event(clock, 2), timeout=0.2)
                except AuditUnavailableError as exc:
                    assert "did not complete within 0.2 s" in exc.message
                    failed_while_waiting = not patient.done()
                else:
                    failed_while_waiting = False
                blocker.execute("ROLLBACK")
                return failed_while_waiting, (await patient).seq

        try:
            failed_while_waiting, seq = asyncio.run(both())
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
        assert failed_while_waiting
        assert seq == 2  # written once the lock went; the short one withdrawn, never written
    finally:
        audit.close()
    report = verify_store(sqlite_store, verifiers_for([signer]))
    assert report.is_valid and report.events == 2


def test_fail_open_is_an_explicit_choice_that_keeps_the_decision(
    engine: PolicyEngine, sqlite_store: Store, tmp_path: Path, clock: FrozenClock
) -> None:
    audit = AuditLog(sqlite_store, clock=clock, busy_timeout_ms=100, fail_open=True)
    blocker = sqlite3.connect(tmp_path / "proctor.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        decision = decide_and_record(engine, audit, read_log(clock))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        audit.close()
    assert decision.is_allowed


@pytest.fixture
def doomed_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of this test's own, since the test drops it."""
    name = f"proctor_test_doomed_{uuid.uuid4().hex[:10]}"
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(drop)


@pytest.mark.postgres
def test_a_dropped_postgresql_database_denies(
    engine: PolicyEngine, doomed_postgres_url: str, clock: FrozenClock
) -> None:
    store = open_store(doomed_postgres_url)
    audit = AuditLog(store, clock=clock, timeout=20.0)
    try:
        assert decide_and_record(engine, audit, read_log(clock)).is_allowed
        name = doomed_postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        decision = decide_and_record(engine, audit, read_log(clock))
        assert (decision.outcome, decision.code) == (Outcome.DENY,
                                                     ReasonCode.AUDIT_UNAVAILABLE)
    finally:
        audit.close()
        store.close()


def test_many_async_callers_share_batches(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    from tests.audit.helpers import agent_event

    events = [agent_event(clock, n) for n in range(200)]

    async def run() -> list[int]:
        async with asyncio.timeout(60):
            done = await asyncio.gather(*(audit.record_async(e) for e in events))
        return sorted(r.seq for r in done)

    assert asyncio.run(run()) == list(range(1, 201))
    assert audit.batches < 200  # grouped
    assert verify_store(store, verifiers_for([signer])).is_valid

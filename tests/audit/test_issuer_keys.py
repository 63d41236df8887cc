"""Checkpoints signed by the issuer keyring: rotation, unknown keys, several nodes."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proctor.audit import (
    AuditLog,
    ChainHead,
    load_checkpoints,
    sign_checkpoint,
    verify_store,
    write_checkpoint,
)
from proctor.audit.checkpoints import check_checkpoint
from proctor.clock import FrozenClock
from proctor.config import Settings
from proctor.errors import AuditUnavailableError, GrantError
from proctor.grants import IssuerKeyring
from proctor.keys import LocalSigner
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.store import Store
from proctor.store.tables import issuer_keys
from tests.audit.helpers import agent_event, execute, record_many, verified_by_the_cli

MASTER_KEY = secrets.token_bytes(32)


@pytest.fixture
def keyring(store: Store, clock: FrozenClock) -> IssuerKeyring:
    return IssuerKeyring(store, clock, MASTER_KEY)


def problem_of(store: Store, keyring: IssuerKeyring) -> tuple[int, str] | None:
    report = verify_store(store, keyring.checkpoint_verifiers())
    return None if report.problem is None else (report.problem.seq, report.problem.kind)


def test_checkpoints_verify_after_a_rotation_each_by_the_key_that_signed_it(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    with AuditLog(store, signer=keyring, clock=clock, checkpoint_every=5) as audit:
        record_many(audit, clock, 5)
        old = keyring.current().kid
        keyring.rotate(max_ttl_seconds=0)  # an emergency rotation: old grants die at once
        new = keyring.current().kid
        record_many(audit, clock, 5)
    assert old != new
    assert [(c.seq, c.kid) for c in load_checkpoints(store)] == [(5, old), (10, new)]
    clock.advance(seconds=400 * 86_400)
    with pytest.raises(GrantError) as raised:
        keyring.verification_key(old)  # the old key verifies no grant any more...
    assert raised.value.code == "grant_unknown_key"
    assert old not in {key["kid"] for key in keyring.jwks()["keys"]}
    reader = IssuerKeyring(store, clock, MASTER_KEY)  # ...but its checkpoint still holds
    report = verify_store(store, reader.checkpoint_verifiers())
    assert report.is_valid, report.problem
    assert (report.checkpoints, report.unsigned_tail) == (2, 0)


def test_a_checkpoint_by_a_key_not_in_the_keyring_fails_as_an_unknown_key(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    keyring.current()
    with AuditLog(store, signer=LocalSigner.generate(), clock=clock,
                  checkpoint_every=5) as audit:
        record_many(audit, clock, 7)
    assert problem_of(store, keyring) == (5, "checkpoint_unknown_key")


def test_a_checkpoint_naming_a_keyring_key_but_signed_by_another_fails_as_invalid(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    with AuditLog(store, signer=keyring, clock=clock, checkpoint_every=5) as audit:
        record_many(audit, clock, 5)
    [genuine] = load_checkpoints(store)
    forger = LocalSigner.generate()
    payload = genuine.payload.encode()
    signature = base64.urlsafe_b64encode(forger.sign(payload)).rstrip(b"=").decode()
    execute(store, "UPDATE audit_checkpoints SET signature = :s WHERE seq = 5", s=signature)
    assert problem_of(store, keyring) == (5, "checkpoint_invalid")


def test_a_signer_taken_before_another_nodes_rotation_names_the_key_that_signs(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    snapshot = keyring.current_signer()
    other_node = IssuerKeyring(store, clock, MASTER_KEY)
    rotated = other_node.rotate(max_ttl_seconds=600)
    checkpoint = sign_checkpoint(snapshot, ChainHead(1, "ab" * 32), clock.now())
    assert json.loads(checkpoint.payload)["kid"] == checkpoint.kid == snapshot.kid != rotated.kid
    assert check_checkpoint(checkpoint, other_node.checkpoint_verifiers()) is None
    clock.advance(seconds=31)  # this node re-reads its keys: later checkpoints use the new one
    assert keyring.current_signer().kid == rotated.kid


def test_an_imported_key_verifies_its_checkpoints_but_no_grant_and_signs_nothing(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    current = keyring.current().kid
    legacy = LocalSigner.generate()
    with AuditLog(store, signer=legacy, clock=clock, checkpoint_every=5) as audit:
        record_many(audit, clock, 5)
    assert problem_of(store, keyring) == (5, "checkpoint_unknown_key")
    keyring.import_retired(legacy)
    keyring.import_retired(legacy)  # a second import changes nothing
    assert problem_of(store, keyring) is None
    assert keyring.current().kid == current
    assert keyring.current_signer().kid == current
    with pytest.raises(GrantError):
        keyring.verification_key(legacy.kid)
    assert legacy.kid not in {key["kid"] for key in keyring.jwks()["keys"]}


def test_threads_asking_for_the_first_key_at_once_get_one_key(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    # The audit writer's thread and grant issuers may all ask a fresh keyring at once.
    start = threading.Barrier(8, timeout=30)

    def first_kid() -> str:
        start.wait()
        return keyring.current_signer().kid

    with ThreadPoolExecutor(8) as pool:
        kids = {future.result(timeout=60) for future in [pool.submit(first_kid)
                                                         for _ in range(8)]}
    with store.reading() as conn:
        stored = conn.execute(issuer_keys.select()).all()
    assert len(kids) == 1 and [row.kid for row in stored] == list(kids)
    assert stored[0].verify_until is None


def test_a_checkpoint_key_that_cannot_be_opened_fails_its_batch_closed(
    store: Store, clock: FrozenClock, keyring: IssuerKeyring
) -> None:
    keyring.current()  # sealed under MASTER_KEY
    wrong = IssuerKeyring(store, clock, secrets.token_bytes(32))  # a node with another key
    with AuditLog(store, signer=wrong, clock=clock, checkpoint_every=5) as audit:
        record_many(audit, clock, 4)
        with pytest.raises(AuditUnavailableError):
            audit.record(agent_event(clock, 5))  # crosses the boundary: needs the key
    report = verify_store(store, keyring.checkpoint_verifiers())
    assert report.is_valid and (report.events, report.checkpoints) == (4, 0)


@pytest.fixture
def nodes(database_url: str, tmp_path: Path, clock: FrozenClock,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Runtime, Runtime]]:
    """Two runtimes with homes of their own on one database, sharing the master key."""
    monkeypatch.setenv("PROCTOR_MASTER_KEY", base64.urlsafe_b64encode(MASTER_KEY).decode())
    runtimes = []
    for name in ("node-a", "node-b"):
        home = tmp_path / name
        settings = Settings(home=home, database_url=database_url,
                            policy_dir=home / "policies", trust_domain="acme.example")
        init_home(settings)
        runtimes.append(open_runtime(settings, clock=clock))
    try:
        yield runtimes[0], runtimes[1]
    finally:
        for runtime in runtimes:
            runtime.close()


def test_a_checkpoint_written_on_one_node_verifies_on_another_without_jwk(
    nodes: tuple[Runtime, Runtime], clock: FrozenClock, database_url: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    record_many(a.audit, clock, 4)
    by_a = write_checkpoint(a.store, a.keyring, clock)
    b.keyring.rotate(max_ttl_seconds=600)  # node b rotates; node a does not know yet
    record_many(b.audit, clock, 3)
    by_b = write_checkpoint(b.store, b.keyring, clock)
    assert by_a is not None and by_b is not None and by_a.kid != by_b.kid
    for node in (a, b):
        report = verify_store(node.store, node.keyring.checkpoint_verifiers())
        assert report.is_valid, report.problem
        assert (report.events, report.checkpoints) == (8, 2)  # and the first policy.activate
    # And as an operator runs it on node b: the keyring is shared, no --jwk needed.
    assert verified_by_the_cli(monkeypatch, b.settings.home, database_url)["checkpoints"] == 2

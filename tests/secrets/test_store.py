"""Putting, listing and deleting secrets, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text, update

from proctor.audit import Actor, ActorType
from proctor.errors import SecretError
from proctor.secrets import MAX_VALUE_BYTES, SecretStore
from proctor.store.tables import secrets as secret_table

from .conftest import ALICE, VALUE, Secrets


def test_a_put_secret_is_listed_by_name_and_stored_sealed(env: Secrets) -> None:
    info = env.secrets.put("github.token", VALUE, by=ALICE)
    assert (info.name, info.version, info.created_by, info.updated_by) == (
        "github.token", 1, ALICE, ALICE)
    env.secrets.put("crm_api-key", "k-" + "7" * 30, by=ALICE)
    assert env.secrets.names() == ["crm_api-key", "github.token"]
    assert [e.name for e in env.secrets.entries()] == ["crm_api-key", "github.token"]
    assert VALUE not in env.stored_text()
    assert VALUE[4:20] not in env.stored_text()


def test_putting_again_replaces_the_value_and_counts_versions(env: Secrets) -> None:
    env.secrets.put("github.token", VALUE, by=ALICE)
    env.setup.clock.advance(seconds=60)
    info = env.secrets.put("github.token", "ghp_" + "N" * 36, by="bob@acme.example")
    assert (info.version, info.created_by, info.updated_by) == (2, ALICE, "bob@acme.example")
    assert info.updated_at > info.created_at
    grant = env.issue()
    assert env.lease("github.token", grant).value == "ghp_" + "N" * 36


def test_deleting_removes_the_secret_and_an_unknown_one_is_an_error(env: Secrets) -> None:
    env.secrets.put("github.token", VALUE, by=ALICE)
    assert env.secrets.delete("github.token", by=ALICE) == []
    assert env.secrets.names() == []
    with pytest.raises(SecretError) as failure:
        env.secrets.delete("github.token", by=ALICE)
    assert (failure.value.code, failure.value.message) == (
        "secret_unknown", "secret `github.token` does not exist")


@pytest.mark.parametrize(("name", "problem"), [
    ("", "it is empty"),
    ("x" * 129, "it is 129 characters long (at most 128)"),
    ("github token", "character 7 is not one of A-Z a-z 0-9 _ . -"),
    ("ghp_abc/def", "character 8 is not one of A-Z a-z 0-9 _ . -"),
    ("name\n", "character 5 is not one of A-Z a-z 0-9 _ . -"),
    ("dé", "character 2 is not one of A-Z a-z 0-9 _ . -"),
    (VALUE, "it looks like a credential (github_token); was the value given as the name?"),
    ("9Hq2xWv7Lk3pRt8Zm1Ns4Yb6", "it looks like a credential (high_entropy); was the value "
                                 "given as the name?"),
])
def test_an_invalid_name_is_refused_without_echoing_it(env: Secrets, name: str,
                                                       problem: str) -> None:
    with pytest.raises(SecretError) as failure:
        env.secrets.put(name, VALUE, by=ALICE)
    assert failure.value.code == "secret_name_invalid"
    assert failure.value.message == f"invalid secret name: {problem}"
    assert env.secrets.names() == []


@pytest.mark.parametrize(("value", "message"), [
    ("", "a secret value cannot be empty"),
    ("abc\x00def", "a secret value cannot contain a NUL character"),
    ("x" * (MAX_VALUE_BYTES + 1), f"a secret value is at most {MAX_VALUE_BYTES} bytes"),
    ("\udcff" * 3, "a secret value must be valid text"),
    (b"bytes", "a secret value must be text"),
])
def test_an_invalid_value_is_refused_and_nothing_is_stored(env: Secrets, value: object,
                                                           message: str) -> None:
    with pytest.raises(SecretError) as failure:
        env.secrets.put("github.token", value, by=ALICE)  # type: ignore[arg-type]
    assert failure.value.code == "secret_value_invalid"
    assert failure.value.message.startswith(message)
    assert env.secrets.names() == []


def test_a_value_of_the_largest_size_and_with_newlines_round_trips(env: Secrets) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    big = "é" * (MAX_VALUE_BYTES // 2)
    env.secrets.put("deploy.key", pem, by=ALICE)
    env.secrets.put("big", big, by=ALICE)
    grant = env.issue()
    assert env.lease("deploy.key", grant).value == pem
    assert env.lease("big", grant).value == big


def test_an_agent_cannot_change_secrets(env: Secrets) -> None:
    agent = Actor(ActorType.AGENT, "spiffe://acme.example/agent/coder")
    for attempt in (lambda: env.secrets.put("x", VALUE, by=agent),
                    lambda: env.secrets.delete("x", by=agent),
                    lambda: env.secrets.put("x", VALUE, by=" ")):
        with pytest.raises(SecretError) as failure:
            attempt()
        assert failure.value.code == "secret_actor_invalid"
    assert env.secrets.names() == []


def test_changes_are_audited_as_human_or_system_events_without_the_value(env: Secrets) -> None:
    env.secrets.put("github.token", VALUE, by=ALICE)
    env.secrets.put("github.token", VALUE + "2", by=Actor(ActorType.SYSTEM, "proctor"))
    env.secrets.delete("github.token", by=ALICE)
    events = [json.loads(body) for body in env.audit_bodies()]
    assert [(e["actor"]["type"], e["actor"]["id"], e["action"], e["target"], e["outcome"])
            for e in events] == [
        ("human", ALICE, "secret.put", 'Secret::"github.token"', "stored"),
        ("system", "proctor", "secret.put", 'Secret::"github.token"', "stored"),
        ("human", ALICE, "secret.delete", 'Secret::"github.token"', "deleted"),
    ]
    assert [e["detail"].get("version") for e in events] == [1, 2, None]
    assert not any(VALUE[4:16] in body for body in env.audit_bodies())


def test_a_sealed_value_moved_to_another_name_does_not_open(env: Secrets) -> None:
    env.secrets.put("github.token", VALUE, by=ALICE)
    env.secrets.put("crm.key", "k-" + "7" * 30, by=ALICE)
    with env.setup.store.transaction() as conn:
        moved = conn.execute(text("SELECT sealed_value, generation FROM secrets "
                                  "WHERE name = 'github.token'")).one()
        conn.execute(update(secret_table).where(secret_table.c.name == "crm.key")
                     .values(sealed_value=moved[0], generation=moved[1]))
    grant = env.issue()
    with pytest.raises(SecretError) as failure:
        env.lease("crm.key", grant)
    assert failure.value.code == "secret_undecryptable"
    assert env.lease("github.token", grant).value == VALUE


def test_another_master_key_cannot_read_a_secret_and_records_no_lease(
        env: Secrets, other_master_key: bytes) -> None:
    env.secrets.put("github.token", VALUE, by=ALICE)
    grant = env.issue()
    other = SecretStore(env.setup.store, env.setup.clock, other_master_key)
    with pytest.raises(SecretError) as failure:
        other.lease("github.token", leases=env.setup.authority.leases,
                    parent_id=grant.grant_id, task_id=grant.claims.task_id,
                    agent_id=grant.claims.agent_id, expires_at=None)
    assert failure.value.message == "secret `github.token` cannot be decrypted: wrong master key?"
    assert [n.kind for n in env.setup.authority.tree(grant.claims.task_id)] == ["task", "grant"]


def test_two_first_puts_of_one_name_at_once_both_succeed(env: Secrets) -> None:
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def put(value: str) -> None:
        try:
            barrier.wait()
            env.secrets.put("github.token", value, by=ALICE)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(v,)) for v in (VALUE, VALUE + "x")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert [(e.name, e.version) for e in env.secrets.entries()] == [("github.token", 2)]

"""Secret leases are nodes under a grant: revoking anything above ends them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from proctor.errors import SecretError
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.store.tables import leases
from tests.grants.conftest import ISSUER, SUPPORT

from .conftest import ALICE, VALUE, Secrets


@pytest.fixture
def stored(env: Secrets) -> Secrets:
    env.secrets.put("github.token", VALUE, by=ALICE)
    return env


def test_a_lease_hands_out_the_value_as_a_node_under_the_grant(stored: Secrets) -> None:
    grant = stored.issue()
    lease = stored.lease("github.token", grant)
    assert (lease.name, lease.value) == ("github.token", VALUE)
    assert VALUE not in repr(lease) and VALUE not in str(lease)
    assert stored.secrets.is_live(lease.lease_id)
    tree = stored.setup.authority.tree(grant.claims.task_id)
    assert [(n.kind, n.parent_id) for n in tree] == [
        ("task", None), ("grant", grant.claims.task_id), ("secret", grant.grant_id)]
    assert tree[-1].id == lease.lease_id
    assert tree[-1].agent_id == grant.claims.agent_id


def test_revoking_the_grant_ends_the_lease(stored: Secrets) -> None:
    grant = stored.issue()
    lease = stored.lease("github.token", grant)
    revoked = stored.setup.authority.revoke(grant.accessor, "leaked")
    assert lease.lease_id in revoked
    assert not stored.secrets.is_live(lease.lease_id)


def test_ending_the_task_ends_the_lease(stored: Secrets) -> None:
    grant = stored.issue()
    lease = stored.lease("github.token", grant)
    stored.setup.authority.end_task(grant.claims.task_id)
    assert not stored.secrets.is_live(lease.lease_id)


def test_a_lease_under_a_delegated_grant_ends_with_the_parent_grant(stored: Secrets) -> None:
    parent = stored.issue()
    key = stored.setup.agents.keys[parent.claims.agent_id]
    proof = make_proof(key, parent.token, method=EXCHANGE_METHOD, target=ISSUER,
                       now=stored.setup.clock.now())
    child = stored.setup.authority.exchange(
        parent.token, proof, to_agent=SUPPORT,
        scope=GrantScope.from_json({"tools": [{"tool": "git/git_log"}]}))
    assert isinstance(child, IssuedGrant)
    lease = stored.lease("github.token", child)
    stored.setup.authority.revoke(parent.accessor, "parent done")
    assert not stored.secrets.is_live(lease.lease_id)


def test_a_lease_whose_ancestor_is_revoked_is_dead_even_if_it_escaped_the_revocation(
        stored: Secrets) -> None:
    # What a lease added while its grant was being revoked on PostgreSQL looks like:
    # the grant is revoked, the lease node itself is not.
    grant = stored.issue()
    lease = stored.lease("github.token", grant)
    with stored.setup.store.transaction() as conn:
        conn.execute(update(leases).where(leases.c.id == grant.claims.task_id)
                     .values(revoked_at=stored.setup.clock.now(), revoked_reason="task ended"))
    assert stored.setup.authority.leases.node(lease.lease_id).revoked_at is None  # type: ignore[union-attr]
    assert not stored.secrets.is_live(lease.lease_id)


def test_a_lease_ends_no_later_than_its_grant(stored: Secrets) -> None:
    grant = stored.issue(ttl_seconds=120)
    clock = stored.setup.clock
    unbounded = stored.lease("github.token", grant)
    short = stored.lease("github.token", grant, expires_at=clock.now() + timedelta(seconds=30))
    assert unbounded.expires_at == clock.now() + timedelta(seconds=120)
    assert short.expires_at == clock.now() + timedelta(seconds=30)
    clock.advance(seconds=31)
    assert not stored.secrets.is_live(short.lease_id)
    assert stored.secrets.is_live(unbounded.lease_id)
    clock.advance(seconds=90)
    assert not stored.secrets.is_live(unbounded.lease_id)


def test_replacing_the_secret_ends_its_leases_and_tells_subscribers(stored: Secrets) -> None:
    heard: list[tuple[list[str], str]] = []
    stored.setup.authority.leases.subscribe(lambda ids, reason: heard.append((list(ids), reason)))
    grant = stored.issue()
    old = stored.lease("github.token", grant)
    stored.secrets.put("github.token", VALUE + "-rotated", by=ALICE)
    assert not stored.secrets.is_live(old.lease_id)
    assert heard == [([old.lease_id], "secret `github.token` replaced")]
    new = stored.lease("github.token", grant)
    assert new.value == VALUE + "-rotated"
    assert stored.secrets.is_live(new.lease_id)


def test_deleting_the_secret_ends_its_leases_for_good(stored: Secrets) -> None:
    grant = stored.issue()
    lease = stored.lease("github.token", grant)
    assert stored.secrets.delete("github.token", by=ALICE) == [lease.lease_id]
    assert not stored.secrets.is_live(lease.lease_id)
    stored.secrets.put("github.token", VALUE, by=ALICE)  # the same name and value again
    assert not stored.secrets.is_live(lease.lease_id)


def test_an_unknown_lease_is_not_live(stored: Secrets) -> None:
    grant = stored.issue()
    assert not stored.secrets.is_live("slease_nope")
    assert not stored.secrets.is_live(grant.grant_id)  # a grant is not a secret lease


@pytest.mark.parametrize("case", ["unknown_secret", "unknown_parent", "revoked_parent",
                                  "expired_parent", "other_task", "other_agent", "past_expiry",
                                  "naive_expiry", "bad_name"])
def test_a_lease_that_cannot_be_given_is_refused_and_records_nothing(stored: Secrets,
                                                                     case: str) -> None:
    grant = stored.issue(ttl_seconds=60)
    other = stored.issue()
    clock = stored.setup.clock
    expected = "secret_lease_parent_invalid"
    attempt: Callable[[], object]
    if case == "unknown_secret":
        attempt, expected = (lambda: stored.lease("nope", grant)), "secret_unknown"
    elif case == "unknown_parent":
        attempt = lambda: stored.lease("github.token", grant, parent_id="grant_nope")  # noqa: E731
    elif case == "revoked_parent":
        stored.setup.authority.revoke(grant.accessor, "done")
        attempt = lambda: stored.lease("github.token", grant)  # noqa: E731
    elif case == "expired_parent":
        clock.advance(seconds=61)
        attempt = lambda: stored.lease("github.token", grant)  # noqa: E731
    elif case == "other_task":
        attempt = lambda: stored.lease("github.token", grant,  # noqa: E731
                                       task_id=other.claims.task_id)
    elif case == "other_agent":
        attempt = lambda: stored.lease("github.token", grant, agent_id=SUPPORT)  # noqa: E731
    elif case == "past_expiry":
        attempt = lambda: stored.lease("github.token", grant,  # noqa: E731
                                       expires_at=clock.now())
        expected = "secret_lease_expiry_invalid"
    elif case == "naive_expiry":
        attempt = lambda: stored.lease("github.token", grant,  # noqa: E731
                                       expires_at=datetime(2030, 1, 1))
        expected = "secret_lease_expiry_invalid"
    else:
        attempt, expected = (lambda: stored.lease("a b", grant)), "secret_name_invalid"
    with pytest.raises(SecretError) as failure:
        attempt()
    assert failure.value.code == expected
    kinds = [n.kind for n in stored.setup.authority.tree(grant.claims.task_id)]
    assert kinds == ["task", "grant"]

"""Inspecting a grant with the in-process views, as the runtime wires them: nothing is
written or waited for, and still every revocation committed before the answer is
honoured, whichever process committed it, at once (no waiting for a notification)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from proctor.clock import FrozenClock
from proctor.errors import GrantError
from proctor.grants import (
    GrantAuthority,
    GrantScope,
    IssuedGrant,
    IssuerKeyring,
    RevocationView,
    TaskView,
    TokenCodec,
    make_proof,
)
from proctor.store import open_store
from proctor.store.changes import ChangeFeed
from proctor.store.tables import leases

from .conftest import CODER, ISSUER, Setup

GIT = GrantScope.from_json({"tools": [{"tool": "git/*"}]})
TARGET = "mcp://git/git_log"


class _Other:
    """Another process on the same database: its own store, feed, views and authority."""

    def __init__(self, setup: Setup, clock: FrozenClock, **options: Any) -> None:
        url = setup.store.engine.url.render_as_string(hide_password=False)
        self.store = open_store(url)
        self.feed = ChangeFeed(self.store, **options)
        codec = TokenCodec(IssuerKeyring(self.store, clock, setup.master_key), issuer=ISSUER,
                           audience="proctor")
        self.authority = GrantAuthority(self.store, clock, codec, setup.engine, setup.agents,
                                        tasks=TaskView(self.store, self.feed),
                                        revocations=RevocationView(self.store, self.feed))

    def refusal(self, grant: IssuedGrant) -> str | None:
        try:
            self.authority.inspect(grant.token)
        except GrantError as exc:
            return exc.code
        return None

    def close(self) -> None:
        self.authority.leases.settle(timeout=30)
        self.feed.close()
        self.store.close()


@pytest.fixture
def other(setup: Setup, clock: FrozenClock) -> Iterator[_Other]:
    found = _Other(setup, clock)
    yield found
    found.close()


def _issue(setup: Setup, **kwargs: Any) -> IssuedGrant:
    task = setup.authority.start_task(CODER, purpose="fix the build",
                                      on_behalf_of="alice@acme.example", idle_seconds=60)
    return setup.authority.issue(task.id, GIT, **kwargs)


def _use(setup: Setup, grant: IssuedGrant) -> None:
    proof = make_proof(setup.agents.keys[CODER], grant.token, method="tools/call",
                       target=TARGET, now=setup.clock.now())
    setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                          tool_id="git/git_log", args={"repo_path": "/srv/repos/app"})


def test_a_revocation_committed_by_another_process_is_honoured_by_the_next_inspect(
        setup: Setup, other: _Other) -> None:
    grant = _issue(setup)
    assert other.refusal(grant) is None  # its line and task are held from now on
    assert other.refusal(grant) is None
    setup.authority.revoke(grant.accessor, "leaked")
    assert other.refusal(grant) == "grant_revoked"


def test_a_task_revoked_behind_the_grants_back_is_honoured_by_the_next_inspect(
        setup: Setup, other: _Other) -> None:
    grant = _issue(setup)
    assert other.refusal(grant) is None
    with setup.store.transaction() as conn:  # the task's node alone, as a racing end would
        conn.execute(update(leases).where(leases.c.id == grant.claims.task_id)
                     .values(revoked_at=setup.clock.now(), revoked_reason="task ended"))
    assert other.refusal(grant) == "grant_revoked"


def test_an_idle_deadline_moved_by_calls_in_another_process_keeps_the_grant_valid(
        setup: Setup, other: _Other) -> None:
    grant = _issue(setup)
    assert other.refusal(grant) is None  # holds the task, idle until +60 s
    setup.clock.advance(seconds=50)
    _use(setup, grant)  # idle until +110 s now
    setup.clock.advance(seconds=20)
    assert other.refusal(grant) is None  # the held deadline passed: read again
    setup.clock.advance(seconds=60)
    assert other.refusal(grant) == "task_idle"


def test_uses_left_are_counted_as_of_now(setup: Setup, other: _Other) -> None:
    grant = _issue(setup, max_uses=2)
    assert other.authority.inspect(grant.token).uses_left == 2
    _use(setup, grant)
    assert other.authority.inspect(grant.token).uses_left == 1
    _use(setup, grant)
    assert other.refusal(grant) == "grant_uses_exhausted"
    unlimited = _issue(setup)
    checked = other.authority.inspect(unlimited.token)
    assert (checked.uses_left, checked.accessor) == (None, unlimited.accessor)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_inspect_reads_the_store_while_the_feed_cannot_be_read(
        setup: Setup, clock: FrozenClock) -> None:
    other = _Other(setup, clock)
    try:
        grant = _issue(setup)
        assert other.refusal(grant) is None  # held
        setup.authority.end_task(grant.claims.task_id)
        with setup.store.transaction() as conn:  # the feed's sequence becomes unreadable
            conn.exec_driver_sql("ALTER TABLE changes RENAME TO changes_away")
        assert not other.feed.catch_up()
        assert other.refusal(grant) == "grant_revoked"
    finally:
        other.close()

"""Policy revisions in the store: on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.clock import FrozenClock
from proctor.errors import NotFoundError, PolicyValidationError
from proctor.policy import Outcome, PolicyEngine, PolicyStore, ReasonCode
from proctor.store import Store, open_store

from .helpers import CATALOG, PRINCIPALS, call

ALLOW_GIT = 'permit (principal, action == Action::"tool:git/git_log", resource);'
DENY_ALL = 'forbid (principal, action, resource);'


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = open_store(database_url)
    yield store
    store.close()


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.cedar").write_text(text)
    return directory


def test_loading_a_directory_stores_and_activates_a_revision(
    store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    engine = PolicyEngine(CATALOG, PRINCIPALS)
    policies = PolicyStore(store, engine, clock)
    compiled = policies.load_directory(_write(tmp_path / "v1", ALLOW_GIT))
    active = policies.active_revision()
    assert active is not None
    assert active.id == compiled.revision
    assert active.activated_at == clock.now()
    decision = engine.decide(call("git/git_log", {"repo_path": "/x"}))
    assert decision.is_allowed
    assert decision.revision == active.id


def test_an_invalid_set_never_replaces_the_active_one(
    store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    engine = PolicyEngine(CATALOG, PRINCIPALS)
    policies = PolicyStore(store, engine, clock)
    good = policies.load_directory(_write(tmp_path / "good", ALLOW_GIT))
    with pytest.raises(PolicyValidationError):
        policies.load_directory(_write(tmp_path / "bad", "permit (principal, action"))
    with pytest.raises(PolicyValidationError):
        policies.load_directory(tmp_path / "empty-dir-does-not-exist")
    assert engine.active is good
    assert [r.id for r in policies.list_revisions()] == [good.revision]
    assert engine.decide(call("git/git_log", {"repo_path": "/x"})).is_allowed


def test_activating_a_new_revision_retires_the_old_and_is_recorded(
    store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    engine = PolicyEngine(CATALOG, PRINCIPALS)
    policies = PolicyStore(store, engine, clock)
    first = policies.load_directory(_write(tmp_path / "v1", ALLOW_GIT))
    clock.advance(seconds=60)
    second = policies.load_directory(_write(tmp_path / "v2", DENY_ALL))
    statuses = {r.id: r.status for r in policies.list_revisions()}
    assert statuses == {first.revision: "retired", second.revision: "active"}
    decision = engine.decide(call("git/git_log", {"repo_path": "/x"}))
    assert decision.outcome is Outcome.DENY
    assert decision.revision == second.revision


def test_the_same_text_reuses_its_revision(
    store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    policies = PolicyStore(store, PolicyEngine(CATALOG, PRINCIPALS), clock)
    first = policies.load_directory(_write(tmp_path / "a", ALLOW_GIT))
    again = policies.load_directory(_write(tmp_path / "b", ALLOW_GIT))
    assert again.revision == first.revision
    assert len(policies.list_revisions()) == 1


def test_a_restarted_engine_loads_the_active_revision_from_the_store(
    store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    PolicyStore(store, PolicyEngine(CATALOG, PRINCIPALS), clock).load_directory(
        _write(tmp_path / "v1", ALLOW_GIT)
    )
    restarted = PolicyEngine(CATALOG, PRINCIPALS)
    assert restarted.decide(call("git/git_log", {"repo_path": "/x"})).code is ReasonCode.NO_POLICIES
    loaded = PolicyStore(store, restarted, clock).load_active()
    assert loaded is not None
    assert restarted.decide(call("git/git_log", {"repo_path": "/x"})).is_allowed


def test_an_invalid_candidate_is_stored_but_cannot_be_activated(
    store: Store, clock: FrozenClock
) -> None:
    engine = PolicyEngine(CATALOG, PRINCIPALS)
    policies = PolicyStore(store, engine, clock)
    revision = policies.add_candidate({"x.cedar": "permit (principal, action"}, origin="upload")
    with pytest.raises(PolicyValidationError):
        policies.activate(revision)
    assert policies.active_revision() is None
    assert engine.active is None
    assert policies.list_revisions()[0].status == "candidate"


def test_an_unknown_revision_is_not_found(store: Store, clock: FrozenClock) -> None:
    policies = PolicyStore(store, PolicyEngine(CATALOG, PRINCIPALS), clock)
    with pytest.raises(NotFoundError, match="policy revision `99` does not exist"):
        policies.activate(99)


def test_with_the_store_down_activation_fails_and_decisions_keep_the_last_set(
    store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    from proctor.errors import StoreError

    engine = PolicyEngine(CATALOG, PRINCIPALS)
    policies = PolicyStore(store, engine, clock)
    good = policies.load_directory(_write(tmp_path / "v1", ALLOW_GIT))
    broken = PolicyStore(open_store("postgresql://nobody@127.0.0.1:1/x", migrate=False),
                         engine, clock)
    with pytest.raises(StoreError):
        broken.load_directory(_write(tmp_path / "v2", DENY_ALL))
    assert engine.active is good

"""Grant issuance decisions and revocations go to the audit log; issuance fails closed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from proctor.audit import (
    Actor,
    ActorType,
    AuditLog,
    ChainHead,
    EventFilter,
    EventRow,
    WriteCursor,
    search_events,
)
from proctor.errors import GrantError, ScopeError, StoreError
from proctor.grants import GrantAuthority, GrantScope, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.grants.leases import LEFT_OVER_SECONDS, LeaseTree
from proctor.grants.requests import Request
from proctor.grants.tasks import Task
from proctor.store.tables import grant_offers

from .conftest import CODER, SUPPORT, Setup
from .test_authority import _use

GIT = GrantScope.from_json({"tools": [{"tool": "git/git_log"}]})


@pytest.fixture
def audited(setup: Setup) -> Iterator[tuple[GrantAuthority, AuditLog]]:
    audit = AuditLog(setup.store, clock=setup.clock)
    authority = GrantAuthority(setup.store, setup.clock, setup.codec, setup.engine,
                               setup.agents, audit=audit)
    yield authority, audit
    authority.leases.settle(timeout=30)  # its revocations' descendants: marked
    audit.close()


def test_issuance_decisions_and_a_humans_revocation_are_audited_apart(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog],
) -> None:
    authority, _ = audited
    task = authority.start_task(CODER, purpose="fix the build",
                                on_behalf_of="alice@acme.example")
    grant = authority.issue(task.id, GIT)
    authority.revoke(grant.accessor, "leaked in a log",
                     by=Actor(ActorType.HUMAN, "erin@acme.example"))

    [issued] = [e.event for e in search_events(
        setup.store, EventFilter(actor_type=ActorType.AGENT))]
    assert (issued["action"], issued["outcome"]) == ("grant:issue", "allowed")
    assert issued["decision"]["policy_ids"] == ["grants-for-trusted-agents"]
    assert issued["task"] == task.id

    [revoked] = [e.event for e in search_events(
        setup.store, EventFilter(actor_type=ActorType.HUMAN))]
    assert (revoked["actor"]["id"], revoked["action"]) == ("erin@acme.example", "grant.revoke")
    assert revoked["target"] == grant.accessor
    assert revoked["detail"] == {"reason": "leaked in a log", "roots": [grant.grant_id],
                                 "revoked": 1}
    assert grant.token not in str(revoked)


def test_ending_a_task_is_audited_as_the_system_by_default(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog],
) -> None:
    authority, _ = audited
    task = authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    authority.issue(task.id, GIT)
    authority.end_task(task.id)
    [ended] = [e.event for e in search_events(
        setup.store, EventFilter(actor_type=ActorType.SYSTEM))]
    assert (ended["action"], ended["outcome"]) == ("task.end", "revoked")
    # the roots its own transaction revoked (the grant under the task is marked after it)
    assert (ended["detail"]["roots"], ended["detail"]["revoked"]) == ([task.id], 1)


def test_when_the_audit_log_is_down_issuance_is_denied_and_revocation_still_works(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog],
) -> None:
    authority, audit = audited
    task = authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    grant = authority.issue(task.id, GIT)
    audit.close()
    with pytest.raises(GrantError) as caught:
        authority.issue(task.id, GIT)
    assert caught.value.code == "issuance_denied"
    assert "audit" in caught.value.message
    assert authority.revoke(grant.accessor, "cleanup") == [grant.grant_id]


def test_a_revocation_whose_descendants_cannot_be_collected_stands_and_is_audited(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the roots' transaction committed (with its event), then the store failed while the
    # nodes under them were collected: the caller got the error and no audit event was
    # written
    authority, _ = audited
    task = authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    grant = authority.issue(task.id, GIT)  # under the task's node

    def unavailable(self: LeaseTree, root_ids: object) -> list[str]:
        raise StoreError("the database does not answer")

    monkeypatch.setattr(LeaseTree, "unrevoked_under", unavailable)
    assert authority.end_task(task.id) == [task.id]  # the roots alone: the rest is the sweep's
    monkeypatch.undo()

    [ended] = [e.event for e in search_events(
        setup.store, EventFilter(actor_type=ActorType.SYSTEM))]
    # the event names the roots its transaction revoked: no subtree counted inside it
    assert (ended["detail"]["roots"], ended["detail"]["revoked"]) == ([task.id], 1)
    node = authority.leases.node(grant.grant_id)
    assert node is not None and not node.is_revoked  # not marked yet, but refused:
    assert _use(setup, grant) == "grant_revoked"
    setup.clock.advance(seconds=LEFT_OVER_SECONDS + 1)  # left over: no marker has them
    authority.sweep()
    node = authority.leases.node(grant.grant_id)
    assert node is not None and node.is_revoked


@pytest.mark.parametrize("max_batch", [1, 512])
def test_an_issuance_of_many_tools_leaves_its_allows_with_its_grant_and_only_then(
        setup: Setup, max_batch: int) -> None:
    """Each tool's event goes with the grant's write (the first carries it, the others
    follow it, in its batch or, one event a batch, in later ones): a write that refuses
    the grant for good leaves the refusal's event alone, one that stores it every allow."""
    with batching(setup, max_batch) as (authority, _, task):
        parent = authority.issue(task.id, MANY, max_uses=1)
        proofs = (make_proof(setup.agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                             target=setup.codec.issuer, now=setup.clock.now())
                  for _ in range(2))
        with pytest.raises(GrantError) as refused:  # more uses than the parent has left
            authority.exchange(parent.token, next(proofs), to_agent=SUPPORT, scope=MANY,
                               ttl_seconds=60, max_uses=5)
        assert refused.value.code == "delegation_widens_uses"
        [event] = _agent_events(setup, SUPPORT)
        assert (event["action"], event["outcome"], event["detail"]["code"]) == (
            "grant:issue", "denied", "delegation_widens_uses")
        authority.exchange(parent.token, next(proofs), to_agent=SUPPORT, scope=MANY,
                           ttl_seconds=60, max_uses=1)
        allowed = _agent_events(setup, SUPPORT)[1:]
        assert sorted(e["target"] for e in allowed) == sorted(
            f'Tool::"{t}"' for t in ("git/git_log", "git/git_status", "git/git_diff"))
        assert {e["outcome"] for e in allowed} == {"allowed"}


@contextlib.contextmanager
def batching(setup: Setup, max_batch: int) -> Iterator[tuple[GrantAuthority, AuditLog, Task]]:
    """An audited authority whose log writes at most ``max_batch`` events a batch, and
    a task of the coder's."""
    audit = AuditLog(setup.store, clock=setup.clock, max_batch=max_batch)
    authority = GrantAuthority(setup.store, setup.clock, setup.codec, setup.engine,
                               setup.agents, audit=audit)
    try:
        yield authority, audit, authority.start_task(CODER, purpose="fix the build",
                                                     on_behalf_of="alice@acme.example")
    finally:
        audit.close()


MANY = GrantScope.from_json({"tools": [{"tool": "git/git_log"}, {"tool": "git/git_status"},
                                       {"tool": "git/git_diff"}]})


def _agent_events(setup: Setup, agent_id: str) -> list[Mapping[str, Any]]:
    found = search_events(setup.store, EventFilter(actor_type=ActorType.AGENT), limit=1000)
    return [e.event for e in sorted(found, key=lambda e: e.seq)
            if e.event["actor"]["id"] == agent_id]


class FailingAllows:
    """The audit writer's observer: fails every batch that holds an allowed grant:issue
    event (so a refusal's event still goes through), while ``active``."""

    def __init__(self) -> None:
        self.failed = 0
        self.active = True

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        if self.active and any(row.action == "grant:issue" and row.decision == "allow"
                               for row in rows):
            self.failed += 1
            raise RuntimeError("the batch fails")

    def appended(self, head: ChainHead) -> None:
        pass


def refused_by_failing_allows(setup: Setup, audit: AuditLog, ask: Callable[[], object]
                              ) -> FailingAllows:
    """``ask`` (a first issuance or offer of the coder's), with every batch of an allow
    failing: refused ``issuance_denied``, its one event the refusal's."""
    failing = FailingAllows()
    audit.observe(failing)
    with pytest.raises(GrantError) as refused:
        ask()
    assert refused.value.code == "issuance_denied" and failing.failed >= 1
    [event] = _agent_events(setup, CODER)
    assert (event["action"], event["outcome"], event["detail"]["code"]) == (
        "grant:issue", "denied", "issuance_denied")
    assert "could not be audited" in event["detail"]["reason"]
    return failing


@pytest.mark.parametrize("max_batch", [1, 512])
def test_an_issuance_of_many_tools_whose_write_fails_leaves_its_refusal(
        setup: Setup, max_batch: int) -> None:
    """The write of the grant and its allows fails (the first event's batch, or each one
    event a batch): none of them is written, the grant is not stored, and the attempt
    leaves one denied event that says why; with the log down for it too, it is refused
    all the same."""
    with batching(setup, max_batch) as (authority, audit, task):
        refused_by_failing_allows(setup, audit, lambda: authority.issue(task.id, MANY))
        assert [n.id for n in authority.leases.subtree(task.id)] == [task.id]  # no grant
        audit.close()  # the refusal cannot be written either: refused all the same
        with pytest.raises(GrantError) as again:
            authority.issue(task.id, MANY)
        assert again.value.code == "issuance_denied"
        assert len(_agent_events(setup, CODER)) == 1


@pytest.mark.parametrize("max_batch", [1, 512])
def test_an_offer_of_many_tools_leaves_its_allows_with_the_offer_and_only_then(
        setup: Setup, max_batch: int) -> None:
    """An offer's events go with its write as a grant's do: stored, every allow; a write
    that fails, none of them, no offer, and its refusal."""
    with batching(setup, max_batch) as (authority, audit, task):
        failing = refused_by_failing_allows(setup, audit, lambda: authority.offer(task.id, MANY))
        with setup.store.reading() as conn:
            assert conn.execute(select(func.count()).select_from(grant_offers)).scalar() == 0
        failing.active = False
        offer = authority.offer(task.id, MANY)
        allowed = _agent_events(setup, CODER)[1:]
        assert sorted(e["target"] for e in allowed) == sorted(
            f'Tool::"{t}"' for t in ("git/git_log", "git/git_status", "git/git_diff"))
        assert {e["outcome"] for e in allowed} == {"allowed"}
        assert authority.offer_of(offer.id).redeemed_at is None



class FailingSecond:
    """The audit writer's observer: fails the batch that holds the second allowed
    grant:issue event it sees (an issuance's second tool: its first may have been
    written in a batch before)."""

    def __init__(self) -> None:
        self.allows = 0
        self.failed = 0

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        allows = sum(row.action == "grant:issue" and row.decision == "allow" for row in rows)
        if self.allows + allows >= 2:
            self.failed += 1
            raise RuntimeError("the batch fails")
        self.allows += allows

    def appended(self, head: ChainHead) -> None:
        pass


@pytest.mark.parametrize("max_batch", [1, 512])
def test_an_issuance_of_many_tools_is_one_write_even_one_event_a_batch(
        setup: Setup, max_batch: int) -> None:
    """The issuance's events and its grant are written together, whatever the writer's
    batches: a write that fails on its second tool's event stores no grant and leaves
    none of its allows, only its refusal (a first event's batch that committed with the
    grant left an allow and a grant whose token was never handed out, unrevoked)."""
    with batching(setup, max_batch) as (authority, audit, task):
        failing = FailingSecond()
        audit.observe(failing)
        with pytest.raises(GrantError) as refused:
            authority.issue(task.id, MANY)
        assert refused.value.code == "issuance_denied" and failing.failed >= 1
        [event] = _agent_events(setup, CODER)
        assert (event["action"], event["outcome"], event["detail"]["code"]) == (
            "grant:issue", "denied", "issuance_denied")
        assert [n.id for n in authority.leases.subtree(task.id)] == [task.id]  # no grant


@pytest.mark.parametrize("max_batch", [1, 512])
def test_an_exchange_refused_at_its_write_leaves_none_of_the_delegators_allows(
        setup: Setup, max_batch: int) -> None:
    """The delegator's decisions of the child's tools go with the child's write: a child
    refused there (more uses than the parent has left) leaves none of the delegator's
    allows, one whose write fails none either; a child stored leaves all of them."""
    with batching(setup, max_batch) as (authority, audit, task):
        parent = authority.issue(task.id, MANY, max_uses=1)
        issued = len(_agent_events(setup, CODER))
        proofs = (make_proof(setup.agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                             target=setup.codec.issuer, now=setup.clock.now())
                  for _ in range(3))
        with pytest.raises(GrantError) as refused:
            authority.exchange(parent.token, next(proofs), to_agent=SUPPORT, scope=MANY,
                               ttl_seconds=60, max_uses=5)
        assert refused.value.code == "delegation_widens_uses"
        assert len(_agent_events(setup, CODER)) == issued  # none of the delegator's
        failing = FailingAllows()
        audit.observe(failing)
        with pytest.raises(GrantError) as failed:
            authority.exchange(parent.token, next(proofs), to_agent=SUPPORT, scope=MANY,
                               ttl_seconds=60, max_uses=1)
        assert failed.value.code == "issuance_denied" and failing.failed >= 1
        assert len(_agent_events(setup, CODER)) == issued
        failing.active = False
        authority.exchange(parent.token, next(proofs), to_agent=SUPPORT, scope=MANY,
                           ttl_seconds=60, max_uses=1)
        delegators = _agent_events(setup, CODER)[issued:]
        assert sorted(e["target"] for e in delegators) == sorted(
            f'Tool::"{t}"' for t in ("git/git_log", "git/git_status", "git/git_diff"))
        assert {(e["action"], e["outcome"]) for e in delegators} == {
            ("grant:issue", "allowed")}
        assert [e["outcome"] for e in _agent_events(setup, SUPPORT)] == [
            "denied", "denied", "allowed", "allowed", "allowed"]


@pytest.mark.parametrize("tools", [["git/git_log"], ["gone/tool", "git/git_log"],
                                   ["gone/*"]])
def test_a_receiver_no_grant_may_go_to_is_written_whatever_tools_its_scope_names(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog], tools: list[str],
) -> None:
    """An exchange's refusal of a receiver no agent is (``refuse_receiver``) writes one
    denied ``grant:issue`` event naming its reason whatever the scope: one whose entries
    cover no tool known now (the catalog changed since the exchange expanded it, or a
    library caller's scope) made no decision and wrote nothing, a refusal off the record
    (it raised ``scope_invalid`` instead of letting the caller refuse as policy does)."""
    authority, _ = audited
    task = authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    nobody = "spiffe://acme.example/agent/nobody"
    scope = GrantScope.from_json({"tools": [{"tool": t} for t in tools]})
    expires = int(setup.clock.now().timestamp()) + 60
    authority._issuer.refuse_receiver(Request(task, nobody, scope, expires, None, task.id),
                                      60, "agent `nobody` is not registered")
    [event] = _agent_events(setup, nobody)
    assert (event["action"], event["outcome"], event["target"]) == (
        "grant:issue", "denied", f'Tool::"{tools[0]}"')
    assert event["task"] == task.id
    assert "is not registered" in str(event["decision"]["reasons"])


def test_a_scope_of_no_tools_is_refused_before_anything_is_decided_or_issued(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog],
) -> None:
    """A library caller's scope of no entries (``GrantScope(())``; a scope document
    without tools is refused when parsed) issued a grant that covered nothing with
    nothing decided and nothing audited: an issuance off the record. It is refused
    ``scope_invalid`` like the document, before any decision, for an issuance, an offer
    and an exchange, whoever the receiver (a registered agent or an id no agent has)."""
    authority, _ = audited
    empty = GrantScope(())
    task = authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    parent = authority.issue(task.id, GIT)
    issued = _agent_events(setup, CODER)
    for attempt in (lambda: authority.issue(task.id, empty),
                    lambda: authority.offer(task.id, empty)):
        with pytest.raises(ScopeError) as refused:
            attempt()
        assert refused.value.code == "scope_invalid"
    for receiver in (SUPPORT, "spiffe://acme.example/agent/nobody"):
        proof = make_proof(setup.agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                           target=setup.codec.issuer, now=setup.clock.now())
        with pytest.raises(ScopeError) as refused:
            authority.exchange(parent.token, proof, to_agent=receiver, scope=empty,
                               ttl_seconds=60)
        assert refused.value.code == "scope_invalid", receiver
    assert _agent_events(setup, CODER) == issued
    assert _agent_events(setup, SUPPORT) == []
    assert [n.id for n in authority.leases.subtree(task.id)] == [task.id, parent.grant_id]


class _Crash(BaseException):
    """The process dies here (nothing catches a BaseException on the way out)."""


@pytest.mark.parametrize("how", ["grant", "agent", "task"])
def test_a_process_that_dies_right_after_a_revocation_took_effect_leaves_its_event(
    setup: Setup, audited: tuple[GrantAuthority, AuditLog], monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    # the revocation's transaction committed, then its event was to be written: a process
    # that died between the two left the grant revoked and nothing in the log saying so
    authority, _ = audited
    task = authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    grant = authority.issue(task.id, GIT)

    def crash(self: LeaseTree, revoked: object, reason: object) -> list[str]:
        raise _Crash  # what runs right after the commit: announcing and marking

    monkeypatch.setattr(LeaseTree, "revoked_after", crash)
    erin = Actor(ActorType.HUMAN, "erin@acme.example")
    with pytest.raises(_Crash):
        if how == "grant":
            authority.revoke(grant.accessor, "leaked", by=erin)
        elif how == "agent":
            authority.revoke_agent(CODER, "leaked", by=erin)
        else:
            authority.end_task(task.id, by=erin)
    monkeypatch.undo()

    assert _use(setup, grant) == "grant_revoked"  # it took effect: so the log says so
    actions = [e.event["action"] for e in search_events(
        setup.store, EventFilter(actor_type=ActorType.HUMAN))]
    assert actions == [{"grant": "grant.revoke", "agent": "agent.revoke_grants",
                        "task": "task.end"}[how]]

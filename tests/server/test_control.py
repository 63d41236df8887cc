"""The control-plane policies themselves: the guardrails hold whatever roles a principal
carries, and a policy that fails to evaluate is a refusal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.audit import AuditLog, EventFilter, search_events
from proctor.clock import SystemClock
from proctor.errors import ApiError
from proctor.policy import Outcome, ReasonCode
from proctor.server import ControlPlane, Principal, PrincipalKind
from proctor.server.control import entity, service
from proctor.store import open_store

CODER = "spiffe://acme.example/agent/coder"
SUPPORT = "spiffe://acme.example/agent/support"


@pytest.fixture
def control(sqlite_template: Path, tmp_path: Path) -> Iterator[ControlPlane]:
    # a copy of the session's migrated file: migrating a new database is most of a test here
    database = tmp_path / "proctor.db"
    shutil.copyfile(sqlite_template, database)
    store = open_store(f"sqlite:///{database}")
    audit = AuditLog(store)
    yield ControlPlane(audit, SystemClock())
    audit.close()
    store.close()


def agent(*roles: str) -> Principal:
    return Principal(PrincipalKind.AGENT, CODER, frozenset(roles), "own_key", owner="alice")


@pytest.mark.parametrize("action", [
    "api:agent.register", "api:agent.review", "api:agent.suspend", "api:agent.retire",
    "api:policy.upload", "api:policy.activate", "api:policy.shadow", "api:approval.decide",
    "api:token.manage",
])
def test_an_agent_never_governs_even_with_every_role(control: ControlPlane,
                                                     action: str) -> None:
    resource = (entity("Approval", "apr_1", agent=("Agent", SUPPORT), on_behalf_of="bob")
                if action == "api:approval.decide" else
                entity("Agent", SUPPORT, roles=["agent"], owner="bob")
                if action.startswith("api:agent.") and action != "api:agent.register"
                else service("agents"))
    decision = control.decide(agent("agent", "admin", "approver", "auditor"), action, resource)
    assert decision.outcome is Outcome.DENY
    assert decision.policy_ids == ("agents-never-govern",)


def test_an_agent_with_every_role_still_cannot_touch_another_agents_grant(
        control: ControlPlane) -> None:
    theirs = entity("Grant", "grant_1", agent=("Agent", SUPPORT), task="task_1")
    mine = entity("Grant", "grant_2", agent=("Agent", CODER), task="task_2")
    everything = agent("agent", "admin")
    for action in ("api:grant.revoke", "api:grant.exchange", "api:grant.check", "api:decide"):
        assert control.decide(everything, action, theirs).code is ReasonCode.FORBIDDEN
        assert control.decide(agent("agent"), action, mine).is_allowed


def test_a_human_admin_may_do_anything_but_present_an_agents_manifest(
        control: ControlPlane) -> None:
    admin = Principal(PrincipalKind.HUMAN, "erin", frozenset({"admin"}), "api_token")
    coder = entity("Agent", CODER, roles=["agent"], owner="alice")
    assert control.decide(admin, "api:agent.retire", coder).is_allowed
    assert not control.decide(admin, "api:agent.present_manifest", coder).is_allowed


def test_a_request_that_does_not_fit_the_schema_is_refused(control: ControlPlane) -> None:
    admin = Principal(PrincipalKind.HUMAN, "erin", frozenset({"admin"}), "api_token")
    # api:task.start needs `on_behalf_of` in its context; without it nothing is allowed
    decision = control.decide(admin, "api:task.start",
                              entity("Agent", CODER, roles=["agent"], owner="alice"))
    assert decision.outcome is Outcome.DENY
    unknown = control.decide(admin, "api:nothing.here", service("agents"))
    assert unknown.outcome is Outcome.DENY


def test_an_answer_is_remembered_for_its_request_and_entities_alone(
        control: ControlPlane) -> None:
    mine = entity("Grant", "grant_2", agent=("Agent", CODER), task="task_2")
    first = control.decide(agent("agent"), "api:decide", mine)
    assert first.is_allowed
    assert control.decide(agent("agent"), "api:decide", mine) is first  # not evaluated again
    # the same grant id, now another agent's: evaluated anew, and refused
    moved = entity("Grant", "grant_2", agent=("Agent", SUPPORT), task="task_2")
    assert control.decide(agent("agent"), "api:decide", moved).code is ReasonCode.FORBIDDEN
    assert control.decide(agent("agent", "admin"), "api:policy.upload",
                          service("policies")).code is ReasonCode.FORBIDDEN
    assert control.decide(agent("agent"), "api:decide", mine) is first


def test_a_refusal_answered_from_memory_is_still_audited_each_time() -> None:
    store = open_store("sqlite:///:memory:")
    audit = AuditLog(store)
    try:
        control = ControlPlane(audit, SystemClock())
        theirs = entity("Grant", "grant_1", agent=("Agent", SUPPORT), task="task_1")
        for _ in range(2):
            with pytest.raises(ApiError) as refused:
                control.require(agent("agent"), "api:grant.revoke", theirs)
            assert refused.value.code == "forbidden"
        events = [e.event for e in search_events(store, EventFilter(), limit=10)]
        assert [(e["action"], e["outcome"]) for e in events] == [
            ("api:grant.revoke", "refused")] * 2
    finally:
        audit.close()
        store.close()


def test_a_control_plane_decision_the_engine_fails_is_refused_500_engine_error_and_audited(
        ) -> None:
    store = open_store("sqlite:///:memory:")
    audit = AuditLog(store)
    try:
        control = ControlPlane(audit, SystemClock())
        admin = Principal(PrincipalKind.HUMAN, "erin", frozenset({"admin"}), "api_token")
        # a context Cedar cannot take (no JSON value): the engine fails, nothing decides
        with pytest.raises(ApiError) as refused:
            control.require(admin, "api:task.start",
                            entity("Agent", CODER, roles=["agent"], owner="alice"),
                            context={"on_behalf_of": object()})
        # it was a 403 `forbidden`, as if a policy had denied it
        assert (refused.value.status, refused.value.code) == (500, "engine_error")
        [event] = [e.event for e in search_events(store, EventFilter(), limit=10)]
        assert (event["action"], event["outcome"], event["decision"]["code"]) == (
            "api:task.start", "refused", "engine_error")
    finally:
        audit.close()
        store.close()

"""Suspending or retiring an agent through the API (and the console) is one transaction
with its audit event: the agent's state, the end of its grants and the event that says
who did it commit together, or not at all. So is the drift of an agent that presents
another manifest, with its ``agent.drift`` event."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest

from proctor.audit import AuditLog, verify_store
from proctor.grants.leases import LeaseTree
from tests.identity.factories import manifest

from .conftest import SUPPORT, Api
from .test_unaudited_changes import audit_down

pytestmark = pytest.mark.anyio

KB = [{"tool": "kb/search_articles"}]


class _CrashError(Exception):
    """The process dies here."""


@pytest.mark.parametrize("verb", ["suspend", "retire"])
async def test_a_process_that_dies_right_after_a_suspension_took_effect_leaves_its_event(
        agents: Api, monkeypatch: pytest.MonkeyPatch, verb: str) -> None:
    # the state change committed (the agent's grants revoked in its transaction), then its
    # event was to be written: a process that died between the two left an agent stopped
    # and nothing in the log saying who stopped it, or that anyone did
    api = agents
    grant = await api.grant(SUPPORT, KB)

    def crash(self: LeaseTree, revoked: object, reason: object) -> list[str]:
        raise _CrashError  # what runs right after the commit: announcing and marking

    monkeypatch.setattr(LeaseTree, "revoked_after", crash)
    with pytest.raises(_CrashError):
        await api.client.post(f"/v1/agents/{SUPPORT}/{verb}", headers=api.admin,
                              json={"reason": "odd behaviour"})
    monkeypatch.undo()

    state = "suspended" if verb == "suspend" else "retired"
    assert api.runtime.registry.get(SUPPORT).trust_state.value == state
    node = api.runtime.grants.leases.node(grant["grant_id"])
    assert node is not None and node.is_revoked  # in the same transaction
    [event] = [e.event for e in api.events() if e.event["action"] == f"agent.{verb}"]
    assert (event["actor"]["type"], event["outcome"], event["detail"]["reason"],
            event["detail"]["roots"]) == ("human", state, "odd behaviour", [grant["grant_id"]])


async def test_a_suspension_names_the_grants_it_revoked_and_a_second_changes_nothing(
        agents: Api) -> None:
    api = agents
    first, second = await api.grant(SUPPORT, KB), await api.grant(SUPPORT, KB)
    for _ in range(2):
        answer = await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=api.admin,
                                       json={})
        assert (answer.status_code, answer.json()["trust_state"]) == (200, "suspended")
    events = [e.event for e in sorted(api.events(), key=lambda e: e.seq)
              if e.event["action"] == "agent.suspend"]
    assert [(sorted(e["detail"].get("roots", [])), e["detail"].get("revoked"),
             e["detail"].get("unchanged")) for e in events] == [
        (sorted([first["grant_id"], second["grant_id"]]), 2, None), ([], None, True)]


async def test_a_retired_agent_cannot_be_suspended_and_nothing_is_written(
        agents: Api) -> None:
    api = agents
    retired = await api.client.post(f"/v1/agents/{SUPPORT}/retire", headers=api.admin,
                                    json={})
    assert retired.status_code == 200
    before = {e.seq for e in api.events()}
    refused = await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=api.admin,
                                    json={})
    assert (refused.status_code, refused.json()["code"]) == (409, "agent_state_invalid")
    assert api.runtime.registry.get(SUPPORT).trust_state.value == "retired"
    assert [e.event["action"] for e in api.events() if e.seq not in before] == []


@pytest.mark.parametrize("verb", ["suspend", "retire"])
async def test_a_suspension_the_log_cannot_hold_is_made_alone_and_nothing_is_written_after_it(
        agents: Api, verb: str) -> None:
    # the log is down when the change is made, and back right after its commit: the
    # change made alone used to be the registry's own, whose revocation then wrote an
    # agent.revoke_grants event after that commit, so the log held the end of the grants
    # and no suspension. The rule is a revocation's: made alone, no event, the caller told
    api = agents
    first, second = await api.grant(SUPPORT, KB), await api.grant(SUPPORT, KB)
    before = {e.seq for e in api.events()}
    outage = ExitStack()
    outage.enter_context(audit_down(api.runtime.store))
    api.runtime.registry.on_changed(lambda _agent_id: outage.close())  # the log is back
    with outage:
        answer = await api.client.post(f"/v1/agents/{SUPPORT}/{verb}", headers=api.admin,
                                       json={"reason": "odd behaviour"})

    assert (answer.status_code, answer.json()["code"]) == (503, "audit_unavailable")
    assert answer.json()["detail"].endswith("took effect but could not be audited")
    state = "suspended" if verb == "suspend" else "retired"
    assert api.runtime.registry.get(SUPPORT).trust_state.value == state
    leases = api.runtime.grants.leases
    for grant in (first, second):  # every grant ended, in the change's transaction
        node = leases.node(grant["grant_id"])
        assert node is not None and node.is_revoked
        assert node.revoked_reason == f"agent {state}: odd behaviour"
    assert [e.event["action"] for e in api.events() if e.seq not in before] == []
    report = verify_store(api.runtime.store, api.runtime.keyring.checkpoint_verifiers())
    assert report.problem is None
    # the log takes events again: the next change is made with its event
    if verb == "suspend":
        again = await api.client.post(f"/v1/agents/{SUPPORT}/retire", headers=api.admin,
                                      json={})
        assert again.status_code == 200
        assert [e.event["action"] for e in api.events() if e.seq not in before] == [
            "agent.retire"]


async def test_a_process_that_dies_right_after_a_drift_took_effect_leaves_its_event(
        agents: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # the registry made the agent drifted, then the route wrote agent.drift after that
    # commit: a process that died between the two left the agent drifted and nothing in
    # the log saying what it had presented
    api = agents
    presented = manifest(model_id="another-model")

    def record(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        raise _CrashError  # an event written after the change's commit

    with_effects = AuditLog.record_with

    def record_with(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        with_effects(self, *args, **kwargs)
        raise _CrashError  # the writer's transaction committed

    monkeypatch.setattr(AuditLog, "record", record)
    monkeypatch.setattr(AuditLog, "record_with", record_with)
    with pytest.raises(_CrashError):
        await api.client.post(f"/v1/agents/{SUPPORT}/manifest", headers=api.agent(SUPPORT),
                              json={"manifest": presented.as_json()})
    monkeypatch.undo()

    assert api.runtime.registry.get(SUPPORT).trust_state.value == "drifted"
    [event] = [e.event for e in api.events() if e.event["action"] == "agent.drift"]
    assert (event["actor"]["type"], event["actor"]["id"], event["outcome"],
            event["detail"]["presented_digest"], event["detail"]["fields"]) == (
        "agent", SUPPORT, "drifted", presented.digest, ["model_id"])


async def test_every_manifest_a_drifted_agent_presents_is_audited_and_the_same_one_once(
        agents: Api) -> None:
    # the route audited a change of trust state only: a drifted agent presenting yet
    # another manifest changed what a reviewer adopts with no event of it
    api = agents
    first, second = manifest(model_id="another-model"), manifest(model_id="a-third-model")
    for presented in (first, second, second):
        answer = await api.client.post(f"/v1/agents/{SUPPORT}/manifest",
                                       headers=api.agent(SUPPORT),
                                       json={"manifest": presented.as_json()})
        assert (answer.status_code, answer.json()["trust_state"]) == (200, "drifted")
    drifts = [e.event for e in sorted(api.events(), key=lambda e: e.seq)
              if e.event["action"] == "agent.drift"]
    assert [(d["outcome"], d["detail"]["presented_digest"]) for d in drifts] == [
        ("drifted", first.digest), ("drifted", second.digest)]
    assert api.runtime.registry.get(SUPPORT).presented_digest == second.digest

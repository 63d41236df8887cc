"""A human's change through the API commits with its audit event, in one transaction: a
process that dies right after the change's commit leaves its event, whichever change it
was. (Suspension and retirement: test_agent_standing.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select

from proctor.audit import AuditLog
from proctor.oversight.inventory import Inventory
from proctor.oversight.pinning import ToolPins, definition_digest
from proctor.store.tables import leases, tasks
from tests.identity.factories import manifest, public_jwk
from tests.server.conftest import CODER, OWNER, SUPPORT, Api
from tests.server.test_connectors_api import SALESFORCE
from tests.server.test_tools_api import Y, Z, _pins

pytestmark = pytest.mark.anyio

NEW = "spiffe://acme.example/agent/reviewer-bot"


class _CrashError(Exception):
    """The process dies here."""


def _dies_after_its_first_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies at the first point after a change committed: before an event
    written after it (record), or once the writer's transaction committed (record_with)."""
    def record(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        raise _CrashError

    with_effects = AuditLog.record_with

    def record_with(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        with_effects(self, *args, **kwargs)
        raise _CrashError

    monkeypatch.setattr(AuditLog, "record", record)
    monkeypatch.setattr(AuditLog, "record_with", record_with)


@dataclass(frozen=True)
class _Kind:
    action: str
    outcome: str
    target: str | None  # None: made by the change (a task's id)
    prepare: Callable[[Api], Awaitable[dict[str, Any]]]  # before: what the change sends
    change: Callable[[Api, dict[str, Any]], Awaitable[httpx.Response]]
    took_effect: Callable[[Api], bool]
    detail: tuple[str, ...] = ()  # what the event's detail holds


async def _suspended_coder(api: Api) -> dict[str, Any]:
    answer = await api.client.post(f"/v1/agents/{CODER}/suspend", headers=api.admin,
                                   json={"reason": "looks odd"})
    assert answer.status_code == 200, answer.text
    return {"expected_digest": api.runtime.registry.get(CODER).review_digest}


async def _new_agent(api: Api) -> dict[str, Any]:
    return {"id": NEW, "owner": OWNER, "groups": ["coding-agents"],
            "proof": {"method": "own_key", "jwk": public_jwk(ECKey.generate_key("P-256"))},
            "manifest": manifest().as_json()}


async def _candidate(api: Api) -> dict[str, Any]:
    """The active set with the small-refund limit moved; stored as a candidate."""
    sources = api.runtime.policies.sources(1)
    sources["support.cedar"] = sources["support.cedar"].replace(
        "amount_cents <= 5000", "amount_cents <= 2000")
    response = await api.client.post("/v1/policies/revisions", headers=api.admin,
                                     json={"sources": sources, "origin": "tighter refunds"})
    assert response.status_code == 201, response.text
    return {"revision": response.json()["id"]}


def _active(api: Api) -> int | None:
    active = api.runtime.policies.active_revision()
    return None if active is None else active.id


async def _pending(api: Api) -> dict[str, Any]:
    _pins(api)  # w/weather: reviewed, then listed as Y, then as Z (pending both)
    return {}


def _pin(api: Api) -> Any:
    runtime = api.runtime
    return ToolPins(runtime.store, runtime.clock, runtime.audit).record("w/weather")


def _verdict(verb: str, definition: dict[str, Any]) -> Callable[
        [Api, dict[str, Any]], Awaitable[httpx.Response]]:
    return lambda api, _: api.client.post(f"/v1/tools/w/weather/{verb}", headers=api.admin,
                                          json={"expected_digest": definition_digest(definition)})


async def _nothing(api: Api) -> dict[str, Any]:
    return {}


async def _salesforce(api: Api) -> dict[str, Any]:
    added = await api.client.post("/v1/connectors", headers=api.admin, json=SALESFORCE)
    assert added.status_code == 201, added.text
    return {}


def _connector(api: Api) -> Any:
    return Inventory(api.runtime.store, api.runtime.clock).find("salesforce")


def _tasks(api: Api) -> list[str]:
    with api.runtime.store.reading() as conn:
        return [row.id for row in conn.execute(select(tasks))]


def _on_candidate(verb: str) -> Callable[[Api, dict[str, Any]], Awaitable[httpx.Response]]:
    return lambda api, body: api.client.post(
        f"/v1/policies/revisions/{body['revision']}/{verb}", headers=api.admin)


def _shadowed(api: Api) -> int | None:
    return api.app.state.proctor.shadow.status().revision  # type: ignore[no-any-return]


def _was_shadowing(api: Api) -> bool:
    return any(e.event["outcome"] == "shadowing" for e in api.events(action="policy.shadow"))


async def _shadowing(api: Api) -> dict[str, Any]:
    body = await _candidate(api)
    started = await api.client.post(f"/v1/policies/revisions/{body['revision']}/shadow",
                                    headers=api.admin)
    assert started.status_code == 200, started.text
    return body


async def _support_task(api: Api) -> dict[str, Any]:
    started = await api.client.post("/v1/tasks", headers=api.admin, json={
        "agent": SUPPORT, "purpose": "help a customer", "on_behalf_of": OWNER})
    assert started.status_code == 201, started.text
    return {"task": started.json()["id"], "scope": {"tools": [{"tool": "kb/search_articles"}]}}


def _grants(api: Api) -> list[str]:
    with api.runtime.store.reading() as conn:
        return [row.id for row in conn.execute(select(leases).where(leases.c.kind == "grant"))]


KINDS = {
    "agent.review": _Kind(
        "agent.review", "trusted", f'Agent::"{CODER}"', _suspended_coder,
        lambda api, body: api.client.post(f"/v1/agents/{CODER}/review", headers=api.admin,
                                          json=body),
        lambda api: api.runtime.registry.get(CODER).trust_state.value == "trusted",
        ("manifest_digest",)),
    "agent.register": _Kind(
        "agent.register", "registered", f'Agent::"{NEW}"', _new_agent,
        lambda api, body: api.client.post("/v1/agents", headers=api.admin, json=body),
        lambda api: api.runtime.registry.find(NEW) is not None, ("manifest_digest",)),
    "policy.activate": _Kind(
        "policy.activate", "activated", "PolicyRevision::2", _candidate,
        _on_candidate("activate"),
        lambda api: _active(api) == 2),
    "tool.review": _Kind(
        "tool.review", "reviewed", "w/weather", _pending, _verdict("review", Z),
        lambda api: _pin(api).state == "reviewed", ("digest", "previous_digest")),
    "tool.reject": _Kind(
        "tool.reject", "rejected", "w/weather", _pending, _verdict("reject", Y),
        lambda api: [d.digest for d in _pin(api).rejected] == [definition_digest(Y)],
        ("digest", "previous_digest")),
    "connector.add": _Kind(
        "connector.add", "added", "Connector::salesforce", _nothing,
        lambda api, _: api.client.post("/v1/connectors", headers=api.admin, json=SALESFORCE),
        lambda api: _connector(api) is not None, ("kind", "scopes")),
    "connector.retire": _Kind(
        "connector.retire", "retired", "Connector::salesforce", _salesforce,
        lambda api, _: api.client.post("/v1/connectors/salesforce/retire", headers=api.admin),
        lambda api: _connector(api).retired_at is not None),
    "policy.upload": _Kind(
        "policy.upload", "stored", "PolicyRevision::2", _nothing,
        lambda api, _: api.client.post("/v1/policies/revisions", headers=api.admin, json={
            "sources": {**api.runtime.policies.sources(1), "extra.cedar": ""}}),
        lambda api: [r.id for r in api.runtime.policies.list_revisions()] == [2, 1],
        ("digest",)),
    "policy.shadow": _Kind(
        "policy.shadow", "shadowing", "PolicyRevision::2", _candidate,
        _on_candidate("shadow"),
        lambda api: _shadowed(api) == 2),
    "policy.shadow stopped": _Kind(
        "policy.shadow", "stopped", "PolicyRevision::none", _shadowing,
        lambda api, _: api.client.delete("/v1/policies/shadow", headers=api.admin),
        lambda api: _shadowed(api) is None and _was_shadowing(api)),
    "task.start": _Kind(
        "task.start", "started", None, _nothing,
        lambda api, _: api.client.post("/v1/tasks", headers=api.admin, json={
            "agent": SUPPORT, "purpose": "help a customer", "on_behalf_of": OWNER}),
        lambda api: len(_tasks(api)) == 1),
    "grant.issue": _Kind(
        "grant.issue", "issued", None, _support_task,
        lambda api, body: api.client.post("/v1/grants", headers=api.admin, json=body),
        lambda api: len(_grants(api)) == 1, ("agent",)),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_process_that_dies_right_after_a_human_change_committed_leaves_its_event(
        agents: Api, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # the change committed, then its event was written: a process that died between the
    # two left the change (access given) and nothing in the log saying who made it
    api, case = agents, KINDS[kind]
    body = await case.prepare(api)
    admin = next(e.event["actor"]["id"] for e in api.events()
                 if e.event["action"] == "agent.register")  # the fixture's, by the admin
    assert not case.took_effect(api)
    _dies_after_its_first_commit(monkeypatch)
    with pytest.raises(_CrashError):
        await case.change(api, body)
    monkeypatch.undo()

    assert case.took_effect(api)
    [event] = [e.event for e in api.events() if e.event["action"] == case.action
               and case.target in (None, e.event["target"])]
    assert (event["actor"]["type"], event["actor"]["id"], event["outcome"]) == (
        "human", admin, case.outcome)
    assert all(event["detail"][name] for name in case.detail)


async def test_activating_the_shadowed_revision_stops_the_shadowing_with_its_event(
        agents: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # the route stopped shadowing after the activation had committed, with no event of it:
    # a process that died between the two left the revision shadowed beside itself
    api = agents
    body = await _shadowing(api)
    admin = next(e.event["actor"]["id"] for e in api.events()
                 if e.event["action"] == "agent.register")
    _dies_after_its_first_commit(monkeypatch)
    with pytest.raises(_CrashError):
        await _on_candidate("activate")(api, body)
    monkeypatch.undo()

    assert (_active(api), _shadowed(api)) == (2, None)
    shadow = [(e.event["outcome"], e.event["target"], e.event["actor"]["id"])
              for e in api.events(action="policy.shadow")]
    assert shadow == [("stopped", "PolicyRevision::2", admin),  # newest first
                      ("shadowing", "PolicyRevision::2", admin)]

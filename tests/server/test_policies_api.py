"""Policy revisions through the API: upload (validated), validate, compare, shadow, activate."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SUPPORT, TARGET, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio


async def _sources(api: Api, revision: int = 1) -> dict[str, str]:
    response = await api.client.get(f"/v1/policies/revisions/{revision}", headers=api.admin)
    assert response.status_code == 200
    sources: dict[str, str] = response.json()["sources"]
    return sources


async def _candidate(api: Api, change: str) -> dict[str, Any]:
    """The example set with the small-refund limit moved from 50.00 to 20.00."""
    sources = await _sources(api)
    sources["support.cedar"] = sources["support.cedar"].replace(
        "amount_cents <= 5000", change)
    response = await api.client.post("/v1/policies/revisions", headers=api.admin,
                                     json={"sources": sources, "origin": "tighter refunds"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_invalid_policy_set_is_refused_with_located_errors_and_nothing_stored(
        api: Api) -> None:
    bad = {"sources": {"bad.cedar": 'permit (principal, action, resource)\nwhen { '
                       'context.nope == 1 };'}}
    response = await api.client.post("/v1/policies/revisions", headers=api.admin, json=bad)
    assert_problem(response, 422, "policy_invalid")
    errors = response.json()["errors"]
    assert errors[0]["file"] == "bad.cedar"
    assert errors[0]["line"] == 1
    listed = (await api.client.get("/v1/policies/revisions", headers=api.admin)).json()
    assert [r["id"] for r in listed["revisions"]] == [1]
    validation = await api.client.post("/v1/policies/validate", headers=api.admin, json=bad)
    assert validation.json()["valid"] is False
    assert validation.json()["errors"][0]["file"] == "bad.cedar"


@pytest.mark.parametrize("name", ["../escape.cedar", "/abs.cedar", "notes.txt"])
async def test_policy_file_names_stay_inside_the_set(api: Api, name: str) -> None:
    response = await api.client.post("/v1/policies/validate", headers=api.admin, json={
        "sources": {name: 'permit (principal, action, resource);'}})
    assert_problem(response, 422, "request_invalid")


async def test_compare_shows_what_a_candidate_would_decide_otherwise(api: Api) -> None:
    candidate = await _candidate(api, "amount_cents <= 2000")
    assert candidate["status"] == "candidate"
    requests = [{"agent": SUPPORT, "tool": "crm/issue_refund",
                 "args": {"customer_id": "c", "amount_cents": amount}}
                for amount in (1000, 3000)]
    response = await api.client.post(f"/v1/policies/revisions/{candidate['id']}/compare",
                                     headers=api.admin, json={"requests": requests})
    body = response.json()
    assert (body["requests"], len(body["differences"])) == (2, 1)
    difference = body["differences"][0]
    assert difference["active"]["decision"] == "allow"
    assert difference["candidate"]["decision"] == "deny"


async def test_a_shadowed_candidate_records_differences_on_real_decisions(
        agents: Api) -> None:
    api = agents
    candidate = await _candidate(api, "amount_cents <= 2000")
    started = await api.client.post(f"/v1/policies/revisions/{candidate['id']}/shadow",
                                    headers=api.admin)
    assert started.json()["revision"] == candidate["id"]
    grant = await api.grant(SUPPORT, [{"tool": "crm/issue_refund"}])
    for amount in (1000, 3000):
        response = await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json={
            "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
            "call": {"tool": "crm/issue_refund",
                     "args": {"customer_id": "c", "amount_cents": amount}},
            "target": TARGET})
        assert response.json()["decision"] == "allow"  # the active set still decides
    shadow = (await api.client.get("/v1/policies/shadow", headers=api.admin)).json()
    assert shadow["differences"] == 1
    recent = shadow["recent"][0]
    assert (recent["principal"], recent["action"]) == (
        f'Agent::"{SUPPORT}"', "tool:crm/issue_refund")
    assert recent["active"]["decision"] == "allow"
    assert recent["candidate"]["decision"] == "deny"
    assert "amount_cents" not in str(shadow)  # no arguments are kept

    stopped = await api.client.delete("/v1/policies/shadow", headers=api.admin)
    assert (stopped.json()["revision"], stopped.json()["differences"]) == (None, 0)


async def test_activating_a_revision_changes_decisions_and_is_audited(agents: Api) -> None:
    api = agents
    candidate = await _candidate(api, "amount_cents <= 2000")
    activated = await api.client.post(f"/v1/policies/revisions/{candidate['id']}/activate",
                                      headers=api.admin)
    assert activated.json()["status"] == "active"
    grant = await api.grant(SUPPORT, [{"tool": "crm/issue_refund"}])
    response = await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
        "call": {"tool": "crm/issue_refund", "args": {"customer_id": "c", "amount_cents": 3000}},
        "target": TARGET})
    assert (response.json()["decision"], response.json()["revision"]) == ("deny",
                                                                           candidate["id"])
    events = [e.event for e in api.events(action="policy.activate")]
    # the candidate's, and the first open's of the home's policies (revision 1, the system)
    assert sorted((e["actor"]["id"], e["target"]) for e in events) == [
        ("local-admin", f"PolicyRevision::{candidate['id']}"), ("proctor", "PolicyRevision::1")]
    missing = await api.client.post("/v1/policies/revisions/999/activate", headers=api.admin)
    assert_problem(missing, 404, "not_found")

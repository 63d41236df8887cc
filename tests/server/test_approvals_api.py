"""/v1/approvals: an approver decides the calls waiting for a human; an agent never can."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.audit import ActorType

from .conftest import OWNER, SUPPORT, TARGET, Api

pytestmark = pytest.mark.anyio

REFUND = [{"tool": "crm/issue_refund"}]
APPROVER = "erin@acme.example"


async def decide(api: Api, grant: dict[str, Any], amount: int) -> dict[str, Any]:
    response = await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
        "call": {"tool": "crm/issue_refund",
                 "args": {"customer_id": "c-1001", "amount_cents": amount}},
        "target": TARGET})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def waiting(api: Api, amount: int = 25_000) -> tuple[dict[str, Any], str]:
    grant = await api.grant(SUPPORT, REFUND)
    held = await decide(api, grant, amount)
    assert held["decision"] == "approval_required"
    return grant, str(held["approval"]["id"])


async def test_an_approver_lists_reads_and_approves_and_the_call_then_runs(
        agents: Api) -> None:
    api = agents
    grant, approval_id = await waiting(api)
    erin = api.human(APPROVER, "approver")
    listed = await api.client.get("/v1/approvals", headers=erin)
    assert listed.status_code == 200
    assert [a["id"] for a in listed.json()["approvals"]] == [approval_id]
    read = await api.client.get(f"/v1/approvals/{approval_id}", headers=erin)
    assert grant["token"] not in read.text
    shown = read.json()
    assert shown["request"]["args"] == {"customer_id": "c-1001", "amount_cents": 25000}
    assert shown["request"]["reasons"] == ["refunds over 50.00 need a human's approval"]
    assert (shown["agent"], shown["on_behalf_of"], shown["grant"]) == (
        SUPPORT, OWNER, grant["accessor"])

    approved = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=erin,
                                     json={"comment": "customer verified"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"]["decided_by"] == APPROVER
    allowed = await decide(api, grant, 25_000)
    assert (allowed["decision"], allowed["approval"]["id"]) == ("allow", approval_id)
    [human] = [e.event for e in api.events(actor_type=ActorType.HUMAN, action="approval.grant")]
    assert human["actor"]["id"] == APPROVER  # the authenticated human, not a body field


async def test_an_agent_cannot_approve_and_its_attempt_is_audited(agents: Api) -> None:
    api = agents
    _, approval_id = await waiting(api)
    for path in (f"/v1/approvals/{approval_id}/approve", "/v1/approvals/apr_unknown/approve"):
        refused = await api.client.post(path, headers=api.agent(SUPPORT), json={})
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "forbidden"
        assert "agents-never-govern" in refused.json()["policy_ids"]
    listed = await api.client.get("/v1/approvals", headers=api.agent(SUPPORT))
    assert listed.status_code == 403
    refusals = [e.event for e in api.refusals(ActorType.AGENT)]
    assert [e["action"] for e in refusals].count("api:approval.decide") == 2
    assert {e["actor"]["id"] for e in refusals} == {SUPPORT}
    status = (await api.client.get(f"/v1/approvals/{approval_id}", headers=api.admin)).json()
    assert status["status"] == "pending"


async def test_an_auditor_reads_but_cannot_decide(agents: Api) -> None:
    api = agents
    _, approval_id = await waiting(api)
    auditor = api.human("ada@acme.example", "auditor")
    assert (await api.client.get("/v1/approvals", headers=auditor)).status_code == 200
    refused = await api.client.post(f"/v1/approvals/{approval_id}/deny", headers=auditor,
                                    json={})
    assert refused.status_code == 403
    assert [e.event["action"] for e in api.refusals(ActorType.HUMAN)] == [
        "api:approval.decide"]


async def test_approving_twice_or_too_late_conflicts(agents: Api) -> None:
    api = agents
    erin = api.human(APPROVER, "approver")
    _, first = await waiting(api)
    _, late = await waiting(api, 30_000)
    assert (await api.client.post(f"/v1/approvals/{first}/approve", headers=erin,
                                  json={})).status_code == 200
    twice = await api.client.post(f"/v1/approvals/{first}/deny", headers=erin, json={})
    assert (twice.status_code, twice.json()["code"]) == (409, "approval_already_decided")
    api.clock.advance(seconds=601)
    expired = await api.client.post(f"/v1/approvals/{late}/approve",
                                    headers=api.human(APPROVER, "approver"), json={})
    assert (expired.status_code, expired.json()["code"]) == (409, "approval_expired")


async def test_an_approval_never_covers_another_argument_set(agents: Api) -> None:
    api = agents
    erin = api.human(APPROVER, "approver")
    grant, approval_id = await waiting(api)
    await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=erin, json={})
    other = await decide(api, grant, 26_000)
    assert other["decision"] == "approval_required"
    assert other["approval"]["id"] != approval_id
    assert (await decide(api, grant, 25_000))["decision"] == "allow"
    replayed = await decide(api, grant, 25_000)  # single use
    assert replayed["decision"] == "approval_required"


async def test_the_owner_may_deny_but_not_approve(agents: Api) -> None:
    api = agents
    bob = api.human(OWNER, "approver")
    _, approval_id = await waiting(api)
    own = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=bob, json={})
    assert (own.status_code, own.json()["code"]) == (403, "approval_own_request")
    denied = await api.client.post(f"/v1/approvals/{approval_id}/deny", headers=bob,
                                   json={"comment": "not this customer"})
    assert denied.json()["approval"]["status"] == "denied"


async def test_approve_similar_and_its_bad_input(agents: Api) -> None:
    api = agents
    erin = api.human(APPROVER, "approver")
    grant, approval_id = await waiting(api)
    unknown = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=erin,
                                    json={"similar": {"vary": ["nope"]}})
    assert (unknown.status_code, unknown.json()["code"]) == (422, "approval_similar_invalid")
    too_long = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=erin,
                                     json={"comment": "x" * 2001})
    assert too_long.status_code == 422
    approved = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=erin,
                                     json={"similar": {"max_uses": 2, "ttl_seconds": 300}})
    assert approved.status_code == 200, approved.text
    similar = approved.json()["similar_grant"]
    assert (similar["max_uses"], similar["tool"]) == (2, "crm/issue_refund")
    await decide(api, grant, 25_000)  # the approved call itself
    assert (await decide(api, grant, 12_000))["decision"] == "allow"


async def test_the_owner_signed_in_under_another_letter_case_may_not_approve(
        agents: Api) -> None:
    api = agents
    bob = api.human("Bob@ACME.Example", "approver")
    _, approval_id = await waiting(api)
    own = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=bob, json={})
    assert (own.status_code, own.json()["code"]) == (403, "approval_own_request")
    status = (await api.client.get(f"/v1/approvals/{approval_id}", headers=api.admin)).json()
    assert status["status"] == "pending"
    assert (await api.client.get("/v1/whoami", headers=bob)).json()["id"] == OWNER


async def test_an_agent_starts_a_task_for_its_owner_spelt_in_any_case(agents: Api) -> None:
    api = agents
    started = await api.client.post("/v1/tasks", headers=api.agent(SUPPORT), json={
        "agent": SUPPORT, "purpose": "help", "on_behalf_of": "BOB@acme.example"})
    assert started.status_code == 201, started.text
    assert started.json()["on_behalf_of"] == OWNER
    other = await api.client.post("/v1/tasks", headers=api.agent(SUPPORT), json={
        "agent": SUPPORT, "purpose": "help", "on_behalf_of": "b\u200bob@acme.example"})
    assert (other.status_code, other.json()["code"]) == (422, "request_invalid")

"""Tasks and grants through the API: start, issue, check, exchange, tree, revoke, end."""

from __future__ import annotations

import pytest

from proctor.runtime import issuer_for

from .conftest import CODER, OWNER, SUPPORT, TARGET, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

KB = [{"tool": "kb/search_articles"}, {"tool": "crm/lookup_customer"}]


async def test_an_issued_grant_is_shown_once_and_checks_as_valid(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, KB, ttl_seconds=600, max_uses=3)
    assert grant["agent"] == SUPPORT
    assert grant["accessor"].startswith("acc_")
    assert grant["scope"] == {"tools": KB}
    check = await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT),
                                  json={"token": grant["token"]})
    assert check.json()["valid"] is True
    assert check.json()["grant"]["grant_id"] == grant["grant_id"]
    tree = (await api.client.get(f"/v1/tasks/{grant['task']}/tree", headers=api.admin)).json()
    assert "token" not in str(tree)


async def test_a_check_with_a_proof_uses_the_grant_once(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, KB, max_uses=2)
    body = {"token": grant["token"], "tool": "kb/search_articles", "args": {"query": "q"},
            "target": TARGET}
    answers = []
    for _ in range(3):
        proof = api.call_proof(SUPPORT, grant["token"])
        response = await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT),
                                         json={**body, "proof": proof})
        answers.append((response.json()["valid"], response.json()["code"],
                        response.json()["uses_left"]))
    assert answers == [(True, "valid", 1), (True, "valid", 0),
                       (False, "grant_uses_exhausted", None)]


async def test_a_check_without_a_proof_tells_a_used_up_grant_from_a_valid_one(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, KB, max_uses=1)
    inspect = {"token": grant["token"]}
    before = await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT), json=inspect)
    assert (before.json()["valid"], before.json()["uses_left"]) == (True, 1)
    proof = api.call_proof(SUPPORT, grant["token"])
    used = await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT), json={
        **inspect, "tool": "kb/search_articles", "args": {"query": "q"}, "target": TARGET,
        "proof": proof})
    assert used.json()["valid"] is True
    after = await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT), json=inspect)
    assert (after.json()["valid"], after.json()["code"]) == (False, "grant_uses_exhausted")


async def test_issuance_outside_policy_is_refused_and_audited(agents: Api) -> None:
    api = agents
    task = await api.client.post("/v1/tasks", headers=api.admin, json={
        "agent": SUPPORT, "purpose": "", "on_behalf_of": OWNER})
    response = await api.client.post("/v1/grants", headers=api.agent(SUPPORT), json={
        "task": task.json()["id"], "scope": {"tools": [{"tool": "ledger/read_ledger"}]}})
    assert_problem(response, 403, "issuance_denied")
    refused = [e.event for e in api.events() if e.event["outcome"] == "refused"]
    assert [(e["action"], e["decision"]["code"]) for e in refused] == [
        ("api:grant.issue", "issuance_denied")]


async def test_bad_grant_requests_change_nothing(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, KB)
    cases = [
        ({"task": grant["task"], "scope": {"tools": []}}, 422, "scope_invalid"),
        ({"task": grant["task"], "scope": {"tools": [{"tool": "nope/none"}]}}, 422,
         "scope_invalid"),
        ({"task": grant["task"], "scope": {"tools": KB}, "ttl_seconds": 0}, 422,
         "request_invalid"),
        ({"task": "task_missing", "scope": {"tools": KB}}, 404, "task_unknown"),
    ]
    for body, status, code in cases:
        response = await api.client.post("/v1/grants", headers=api.admin, json=body)
        assert_problem(response, status, code)
    tree = (await api.client.get(f"/v1/tasks/{grant['task']}/tree", headers=api.admin)).json()
    assert [n["kind"] for n in tree["nodes"]] == ["task", "grant"]


async def test_delegation_gives_a_narrower_child_that_dies_with_its_parent(
        agents: Api) -> None:
    api = agents
    parent = await api.grant(SUPPORT, KB)
    issuer = issuer_for(api.runtime.settings)
    proof = api.call_proof(SUPPORT, parent["token"], method="grant/exchange", target=issuer)
    child = await api.client.post("/v1/grants/exchange", headers=api.agent(SUPPORT), json={
        "token": parent["token"], "proof": proof, "to_agent": "coder",
        "scope": {"tools": [{"tool": "kb/search_articles"}]}, "ttl_seconds": 60})
    assert child.status_code == 201, child.text
    assert child.json()["agent"] == CODER
    assert child.json()["actor_chain"] == [SUPPORT]
    assert child.json()["ancestors"] == [parent["grant_id"]]

    wider = await api.client.post("/v1/grants/exchange", headers=api.agent(SUPPORT), json={
        "token": parent["token"],
        "proof": api.call_proof(SUPPORT, parent["token"], method="grant/exchange",
                                target=issuer),
        "to_agent": CODER, "scope": {"tools": [{"tool": "crm/issue_refund"}]},
        "ttl_seconds": 60})
    assert_problem(wider, 422, "delegation_widens_scope")
    # a wildcard asks for what it matches among the parent's tools, never more
    narrowed = await api.client.post("/v1/grants/exchange", headers=api.agent(SUPPORT), json={
        "token": parent["token"],
        "proof": api.call_proof(SUPPORT, parent["token"], method="grant/exchange",
                                target=issuer),
        "to_agent": CODER, "scope": {"tools": [{"tool": "crm/*"}]}, "ttl_seconds": 60})
    assert narrowed.json()["scope"] == {"tools": [{"tool": "crm/lookup_customer"}]}

    stolen = await api.client.post("/v1/grants/exchange", headers=api.agent(CODER), json={
        "token": parent["token"], "proof": proof, "to_agent": CODER,
        "scope": {"tools": [{"tool": "kb/search_articles"}]}})
    assert_problem(stolen, 403, "forbidden")

    ended = await api.client.post(f"/v1/tasks/{parent['task']}/end", headers=api.admin)
    assert set(ended.json()["revoked"]) == {parent["task"], parent["grant_id"],
                                            child.json()["grant_id"],
                                            narrowed.json()["grant_id"]}
    check = await api.client.post("/v1/grants/check", headers=api.agent(CODER),
                                  json={"token": child.json()["token"]})
    assert (check.json()["valid"], check.json()["code"]) == (False, "grant_revoked")
    task = await api.client.get(f"/v1/tasks/{parent['task']}", headers=api.admin)
    assert task.json()["ended_at"] is not None


async def test_revoking_names_a_grant_by_accessor_or_id_never_by_token(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, KB)
    by_token = await api.client.post(f"/v1/grants/{grant['token'][:120]}/revoke",
                                     headers=api.admin, json={})
    assert_problem(by_token, 404, "grant_unknown")
    by_id = await api.client.post(f"/v1/grants/{grant['grant_id']}/revoke", headers=api.admin,
                                  json={"reason": "rotated"})
    assert by_id.json() == {"grant": grant["accessor"], "revoked": [grant["grant_id"]]}
    again = await api.client.post(f"/v1/grants/{grant['accessor']}/revoke", headers=api.admin)
    assert again.json()["revoked"] == []
    revocations = [e.event for e in api.events(action="grant.revoke")]
    assert [(e["actor"]["type"], e["actor"]["id"]) for e in revocations] == [
        ("human", "local-admin"), ("human", "local-admin")]


async def test_an_issuance_the_policy_engine_fails_on_is_a_500_engine_error_audited(
        agents: Api) -> None:
    api = agents
    # the trusted agents' grant permit overflows Cedar's integers: it cannot be evaluated
    await api.overflowing("context.ttl_seconds <= 900", "context.ttl_seconds")
    task = await api.client.post("/v1/tasks", headers=api.agent(SUPPORT), json={
        "agent": SUPPORT, "purpose": "help a customer", "on_behalf_of": OWNER})
    response = await api.client.post("/v1/grants", headers=api.agent(SUPPORT), json={
        "task": task.json()["id"], "scope": {"tools": [{"tool": "kb/search_articles"}]}})
    # it was 403 issuance_denied, as a policy's deny; then 503, which clients retry: the
    # same request fails again, so 500 and no Retry-After
    assert_problem(response, 500, "engine_error")
    assert "retry-after" not in response.headers
    [decided] = api.events(action="grant:issue")
    assert (decided.event["decision"]["outcome"], decided.event["decision"]["code"]) == (
        "deny", "engine_error")
    refused = [e.event for e in api.events() if e.event["outcome"] == "refused"]
    assert [(e["action"], e["decision"]["code"]) for e in refused] == [
        ("api:grant.issue", "engine_error")]
    assert api.runtime.store.fetch("SELECT count(*) FROM grants", [])[0][0] == 0

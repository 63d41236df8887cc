"""Each role, with a human and with an agent principal: what the control-plane Cedar
policies let it do, and that every refusal is a 403 written to the audit log."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.audit import ActorType

from .conftest import CODER, OWNER, SUPPORT, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

NEW_AGENT = {"id": "spiffe://acme.example/agent/newbie", "owner": OWNER,
             "proof": {"method": "jwt_svid"},
             "manifest": {"model_id": "m", "weights_digest": "sha256:" + "a" * 64,
                          "system_prompt_digest": "sha256:" + "b" * 64, "tools": [],
                          "dependency_lock_digest": "sha256:" + "c" * 64}}
POLICY = {"sources": {"extra.cedar": 'permit (principal, action == Action::"tool:kb/'
                      'search_articles", resource);'}}


async def _status(api: Api, method: str, path: str, headers: dict[str, str],
                  body: dict[str, Any] | None = None) -> int:
    response = await api.client.request(method, path, headers=headers, json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 403:
        assert response.json()["code"] == "forbidden"
    return response.status_code


async def test_an_admin_runs_the_control_plane(agents: Api) -> None:
    api = agents
    assert await _status(api, "GET", "/v1/agents", api.admin) == 200
    assert await _status(api, "POST", "/v1/policies/revisions", api.admin, POLICY) == 201
    assert await _status(api, "GET", "/v1/audit/verify", api.admin) == 200
    assert await _status(api, "POST", f"/v1/agents/{CODER}/suspend", api.admin, {}) == 200
    shown = api.runtime.registry.get(CODER).review_digest
    assert await _status(api, "POST", f"/v1/agents/{CODER}/review", api.admin,
                         {"expected_digest": shown}) == 200
    assert api.refusals(ActorType.HUMAN) == []


async def test_an_approver_sees_and_may_suspend_but_not_govern(agents: Api) -> None:
    api = agents
    dave = api.human("dave@acme.example", "approver")
    assert await _status(api, "GET", "/v1/agents", dave) == 200
    assert await _status(api, "GET", f"/v1/agents/{SUPPORT}", dave) == 200
    assert await _status(api, "GET", "/v1/policies/revisions", dave) == 200
    assert await _status(api, "POST", f"/v1/agents/{SUPPORT}/suspend", dave,
                         {"reason": "odd refunds"}) == 200
    assert await _status(api, "POST", f"/v1/agents/{SUPPORT}/review", dave, {}) == 403
    assert await _status(api, "POST", "/v1/agents", dave, NEW_AGENT) == 403
    assert await _status(api, "POST", "/v1/policies/revisions", dave, POLICY) == 403
    assert await _status(api, "GET", "/v1/audit/events", dave) == 403
    refused = {e.event["action"] for e in api.refusals(ActorType.HUMAN)}
    assert refused == {"api:agent.review", "api:agent.register", "api:policy.upload",
                       "api:audit.search"}


async def test_an_auditor_reads_everything_and_changes_nothing(agents: Api) -> None:
    api = agents
    frank = api.human("frank@acme.example", "auditor")
    for path in ("/v1/agents", f"/v1/agents/{CODER}", "/v1/policies/revisions",
                 "/v1/policies/revisions/1", "/v1/policies/shadow", "/v1/audit/events",
                 "/v1/audit/verify", "/v1/audit/export"):
        assert await _status(api, "GET", path, frank) == 200, path
    assert await _status(api, "POST", "/v1/policies/validate", frank, POLICY) == 200
    for method, path, body in (
            ("POST", f"/v1/agents/{CODER}/suspend", {}),
            ("POST", "/v1/agents", NEW_AGENT),
            ("POST", "/v1/policies/revisions/1/activate", None),
            ("POST", "/v1/tasks", {"agent": CODER, "purpose": "x", "on_behalf_of": OWNER})):
        assert await _status(api, method, path, frank, body) == 403, path
    assert len(api.refusals(ActorType.HUMAN)) == 4


async def test_an_agent_can_never_govern(agents: Api) -> None:
    api = agents
    coder = api.agent(CODER)
    # on another agent, the refusal is the answer for an agent that is not registered:
    # an agent may not learn which others exist (test_agent_enumeration.py)
    hidden = (404, "agent_unknown")
    attempts = [
        ("POST", "/v1/agents", NEW_AGENT, "api:agent.register", None),
        ("POST", f"/v1/agents/{CODER}/review", {}, "api:agent.review", None),
        ("POST", f"/v1/agents/{SUPPORT}/suspend", {}, "api:agent.suspend", hidden),
        ("POST", f"/v1/agents/{CODER}/retire", {}, "api:agent.retire", None),
        ("POST", "/v1/policies/revisions", POLICY, "api:policy.upload", None),
        ("POST", "/v1/policies/revisions/1/activate", None, "api:policy.activate", None),
        ("POST", "/v1/policies/revisions/1/shadow", None, "api:policy.shadow", None),
        ("GET", "/v1/agents", None, "api:agent.list", None),
        ("GET", f"/v1/agents/{SUPPORT}", None, "api:agent.read", hidden),
        ("GET", "/v1/audit/events", None, "api:audit.search", None),
        ("POST", "/v1/tasks", {"agent": SUPPORT, "purpose": "x", "on_behalf_of": OWNER},
         "api:task.start", hidden),
    ]
    for method, path, body, _, answer in attempts:
        response = await api.client.request(method, path, headers=coder, json=body)
        if answer is None:
            assert_problem(response, 403, "forbidden")
            assert response.json()["reasons"]
        else:
            assert_problem(response, *answer)
    refused = api.refusals(ActorType.AGENT)
    assert [e.event["action"] for e in reversed(refused)] == [a[3] for a in attempts]
    assert all(e.event["decision"]["code"] == "forbidden" for e in refused)
    assert {e.event["actor"]["id"] for e in refused} == {CODER}
    assert all(e.event["decision"]["outcome"] == "deny" for e in refused)
    governing = [e for e in refused if e.event["action"] in {
        "api:agent.register", "api:agent.review", "api:policy.activate"}]
    assert all(e.event["decision"]["policy_ids"] == ["agents-never-govern"] for e in governing)
    # and nothing changed
    listed = (await api.client.get("/v1/agents", headers=api.admin)).json()["agents"]
    assert {a["id"]: a["trust_state"] for a in listed} == {CODER: "trusted", SUPPORT: "trusted"}


async def test_an_agent_reads_itself_and_works_on_its_own_tasks(agents: Api) -> None:
    api = agents
    support = api.agent(SUPPORT)
    assert await _status(api, "GET", f"/v1/agents/{SUPPORT}", support) == 200
    assert await _status(api, "GET", "/v1/agents/support", support) == 200
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    task = grant["task"]
    assert await _status(api, "GET", f"/v1/tasks/{task}", support) == 200
    assert await _status(api, "GET", f"/v1/tasks/{task}/tree", support) == 200
    assert await _status(api, "GET", f"/v1/tasks/{task}", api.agent(CODER)) == 403
    assert await _status(api, "POST", f"/v1/tasks/{task}/end", api.agent(CODER), {}) == 403
    assert await _status(api, "POST", f"/v1/tasks/{task}/end", support, {}) == 200


async def test_an_agent_starts_tasks_only_for_itself_on_behalf_of_its_owner(
        agents: Api) -> None:
    api = agents
    body = {"agent": SUPPORT, "purpose": "help", "on_behalf_of": OWNER}
    assert await _status(api, "POST", "/v1/tasks", api.agent(SUPPORT), body) == 201
    assert await _status(api, "POST", "/v1/tasks", api.agent(SUPPORT),
                         {**body, "on_behalf_of": "carol@acme.example"}) == 403
    # another agent's: refused as if it were not registered (test_agent_enumeration.py)
    assert await _status(api, "POST", "/v1/tasks", api.agent(CODER), body) == 404


async def test_an_agent_revokes_its_own_grants_but_never_another_agents(agents: Api) -> None:
    api = agents
    mine = await api.grant(CODER, [{"tool": "git/git_log"}], purpose="fix the build")
    theirs = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    response = await api.client.post(f"/v1/grants/{theirs['accessor']}/revoke",
                                     headers=api.agent(CODER), json={"reason": "mine now"})
    assert_problem(response, 403, "forbidden")
    assert response.json()["policy_ids"] == ["agents-never-touch-other-agents-grants"]
    tree = await api.client.get(f"/v1/tasks/{theirs['task']}/tree", headers=api.admin)
    assert all(node["revoked_at"] is None for node in tree.json()["nodes"])
    refusal = api.refusals(ActorType.AGENT)[0].event
    assert (refusal["action"], refusal["actor"]["id"]) == ("api:grant.revoke", CODER)
    assert refusal["target"] == f'Grant::"{theirs["grant_id"]}"'

    own = await api.client.post(f"/v1/grants/{mine['accessor']}/revoke",
                                headers=api.agent(CODER), json={"reason": "task done"})
    assert own.status_code == 200
    assert own.json()["revoked"] == [mine["grant_id"]]

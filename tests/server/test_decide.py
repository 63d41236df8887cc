"""POST /v1/decide: the enforcement point's one call, with the same answers the gateway
gets (grant, agent, Cedar, approval, audit), and metrics that count them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from proctor.audit import ActorType
from proctor.server.deps import Credentials
from proctor.server.problems import problem_responses
from proctor.server.routes import decide as module

from .conftest import CODER, SUPPORT, TARGET, Api
from .test_authentication import assert_problem
from .test_unaudited_changes import audit_down

pytestmark = pytest.mark.anyio

REFUND = [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}}]


async def _ask(api: Api, grant: dict[str, Any], tool: str, args: dict[str, Any], *,
               caller: str = SUPPORT, proof: str | None = None) -> httpx.Response:
    proof = proof or api.call_proof(grant["agent"], grant["token"])
    return await api.client.post("/v1/decide", headers=api.agent(caller), json={
        "token": grant["token"], "proof": proof, "call": {"tool": tool, "args": args},
        "target": TARGET})


async def _decide(api: Api, grant: dict[str, Any], tool: str, args: dict[str, Any], *,
                  caller: str = SUPPORT, proof: str | None = None) -> dict[str, Any]:
    response = await _ask(api, grant, tool, args, caller=caller, proof=proof)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_call_is_allowed_denied_or_held_for_approval_with_its_reasons(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, REFUND)
    small = await _decide(api, grant, "crm/issue_refund",
                          {"customer_id": "c-1001", "amount_cents": 2500})
    assert (small["decision"], small["code"], small["policy_ids"]) == (
        "allow", "allow", ["support-small-refund"])
    assert small["reasons"] == ["support agents refund up to 50.00 on their own"]
    assert small["grant"]["accessor"] == grant["accessor"]

    large = await _decide(api, grant, "crm/issue_refund",
                          {"customer_id": "c-1001", "amount_cents": 25000})
    assert (large["decision"], large["policy_ids"]) == (
        "approval_required", ["support-large-refund"])
    assert large["approval"]["status"] == "pending"

    outside = await _decide(api, grant, "email/send_email",
                            {"to": "a@example.org", "subject": "s", "body": "b"})
    assert (outside["decision"], outside["code"]) == ("deny", "grant_out_of_scope")

    over = await _decide(api, grant, "crm/issue_refund",
                         {"customer_id": "c-1001", "amount_cents": 60000})
    assert (over["decision"], over["code"]) == ("deny", "grant_out_of_scope")

    events = {e.event["id"]: e.event for e in api.events()}
    for answer in (small, large, outside, over):
        assert answer["event_id"] in events
    assert events[small["event_id"]]["decision"]["policy_ids"] == ["support-small-refund"]
    assert events[large["event_id"]]["outcome"] == "pending_approval"


async def test_a_replayed_proof_is_a_deny_not_an_error(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, REFUND)
    proof = api.call_proof(SUPPORT, grant["token"])
    args = {"customer_id": "c-1", "amount_cents": 100}
    first = await _decide(api, grant, "crm/issue_refund", args, proof=proof)
    again = await _decide(api, grant, "crm/issue_refund", args, proof=proof)
    assert (first["decision"], again["decision"], again["code"]) == (
        "allow", "deny", "proof_replayed")


async def test_a_revoked_grant_is_denied_at_once(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, REFUND)
    await api.client.post(f"/v1/grants/{grant['accessor']}/revoke", headers=api.admin,
                          json={"reason": "customer complaint"})
    answer = await _decide(api, grant, "crm/issue_refund",
                           {"customer_id": "c-1", "amount_cents": 100})
    assert (answer["decision"], answer["code"]) == ("deny", "grant_revoked")


async def test_an_agent_cannot_ask_with_another_agents_grant(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, REFUND)
    response = await api.client.post("/v1/decide", headers=api.agent(CODER), json={
        "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
        "call": {"tool": "crm/issue_refund", "args": {"customer_id": "c", "amount_cents": 1}},
        "target": TARGET})
    assert_problem(response, 403, "forbidden")
    assert [e.event["action"] for e in api.refusals(ActorType.AGENT)] == ["api:decide"]
    garbage = await api.client.post("/v1/decide", headers=api.agent(CODER), json={
        "token": "not.a.grant", "proof": "x", "call": {"tool": "kb/search_articles"}})
    assert_problem(garbage, 403, "forbidden")


async def test_an_admin_enforcement_point_gets_the_agents_answer(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    response = await api.client.post("/v1/decide", headers=api.admin, json={
        "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
        "call": {"tool": "kb/search_articles", "args": {"query": "refund policy"}},
        "target": TARGET})
    assert response.json()["decision"] == "allow"
    garbage = await api.client.post("/v1/decide", headers=api.admin, json={
        "token": "not.a.grant", "proof": "x", "call": {"tool": "kb/search_articles"}})
    assert (garbage.json()["decision"], garbage.json()["code"]) == ("deny", "grant_malformed")


async def test_the_proof_names_this_endpoint_when_no_target_is_given(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    proof = api.call_proof(SUPPORT, grant["token"], target="http://proctor.test/v1/decide")
    response = await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": proof,
        "call": {"tool": "kb/search_articles", "args": {"query": "q"}}})
    assert response.json()["decision"] == "allow", response.json()


async def test_metrics_count_decisions_by_outcome(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, REFUND)
    for amount in (100, 200, 30000):
        await _decide(api, grant, "crm/issue_refund", {"customer_id": "c", "amount_cents": amount})
    text = (await api.client.get("/metrics")).text
    assert 'proctor_decisions_total{code="allow",outcome="allow"} 2.0' in text
    assert ('proctor_decisions_total{code="approval_required",outcome="approval_required"} 1.0'
            in text)
    assert "proctor_decision_seconds_count 3.0" in text
    assert 'proctor_http_requests_total{method="POST",route="/v1/decide",status="200"} 3.0' \
        in text


async def test_a_suspended_agent_gets_no_allow_with_a_workload_proof_it_used_before(
        agents: Api) -> None:
    # /v1/decide takes the caller's agent from the process's agent view (the decision's
    # write confirms it): the suspension is honoured all the same, on the next request
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    headers = api.agent(SUPPORT)

    async def decide() -> Any:
        return await api.client.post("/v1/decide", headers=headers, json={
            "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
            "call": {"tool": "kb/search_articles", "args": {"query": "q"}},
            "target": TARGET})

    assert (await decide()).json()["decision"] == "allow"
    suspended = await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=api.admin,
                                      json={"reason": "key leaked"})
    assert suspended.json()["trust_state"] == "suspended"
    assert_problem(await decide(), 401, "agent_not_active")


async def test_a_body_the_route_cannot_take_is_a_422_naming_the_first_fault(
        agents: Api) -> None:
    # the lean handler takes only a JSON body that DecideIn accepts; everything else is
    # FastAPI's handler's to refuse, with the problems every route answers with
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    good = {"token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
            "call": {"tool": "kb/search_articles", "args": {"query": "q"}}, "target": TARGET}
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, dict[str, str], str]] = [
        (json.dumps({**good, "call": {"args": {}}}).encode(), json_type,
         "`body.call.tool`: Field required"),
        (json.dumps({**good, "extra": 1}).encode(), json_type,
         "`body.extra`: Extra inputs are not permitted"),
        (json.dumps({**good, "token": ""}).encode(), json_type,
         "`body.token`: String should have at least 1 character"),
        (json.dumps({**good, "call": {"tool": 7}}).encode(),
         {"Content-Type": "application/json; charset=utf-8"},
         "`body.call.tool`: Input should be a valid string"),
        (json.dumps([good]).encode(), json_type,
         "`body`: Input should be a valid dictionary or object to extract fields from"),
        (b'{"token": ', json_type, "`body.10`: JSON decode error"),
        (b"", json_type, "`body`: Field required"),
        (json.dumps(good).encode(), {"Content-Type": "text/plain"},
         "`body`: Input should be a valid dictionary or object to extract fields from"),
        (json.dumps(good).encode(), {},
         "`body`: Input should be a valid dictionary or object to extract fields from"),
    ]
    for content, content_type, detail in cases:
        response = await api.client.post("/v1/decide", content=content, headers={
            **api.agent(SUPPORT), **content_type})
        assert_problem(response, 422, "request_invalid")
        assert response.json()["detail"] == detail, content
    assert api.events(action="tool:kb/search_articles") == []
    # the same body as JSON is decided
    response = await api.client.post("/v1/decide", content=json.dumps(good).encode(),
                                     headers={**api.agent(SUPPORT), **json_type})
    assert response.json()["decision"] == "allow", response.text
    assert response.headers["content-type"] == "application/json"


def test_the_lean_route_documents_the_operation_fastapi_would() -> None:
    # the route class changes the handler, not the OpenAPI operation: the same endpoint on
    # FastAPI's own route class gives the same document
    plain = APIRouter(tags=["decisions"])
    plain.add_api_route("/v1/decide", module.decide, methods=["POST"],
                        response_model=module.Verdict, dependencies=Credentials,
                        responses=problem_responses("proof_target_unknown"))
    documents = []
    for router in (module.router, plain):
        app = FastAPI()
        app.include_router(router)
        documents.append(app.openapi())
    lean, framework = documents
    assert type(module.router.routes[0]).__name__ == "LeanDecideRoute"
    assert lean["paths"]["/v1/decide"]["post"]["requestBody"]
    assert lean == framework


async def test_the_direct_path_answers_as_fastapis_route(agents: Api,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # DirectDecide answers POST /v1/decide in front of FastAPI's router; under a root path
    # it steps aside and the router takes the request to the same endpoint: both must
    # answer alike, and the router must see only what the direct path hands on
    api = agents
    routed_transport = httpx.ASGITransport(app=api.app, client=("10.1.2.3", 40000),
                                           root_path="/routed")
    routed = httpx.AsyncClient(transport=routed_transport, base_url="http://proctor.test",
                               auth=api.auth)
    routings = 0
    route = type(api.app.router).__call__

    async def counted(self: Any, scope: Any, receive: Any, send: Any) -> None:
        nonlocal routings
        routings += 1
        await route(self, scope, receive, send)

    monkeypatch.setattr(type(api.app.router), "__call__", counted)
    grant = await api.grant(SUPPORT, REFUND)
    args = {"customer_id": "c-1", "amount_cents": 100}

    def body(**changes: Any) -> dict[str, Any]:
        return {"token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
                "call": {"tool": "crm/issue_refund", "args": args}, "target": TARGET,
                **changes}

    replayed = api.call_proof(SUPPORT, grant["token"])
    cases: list[tuple[str, dict[str, str], Callable[[], dict[str, Any]]]] = [
        ("allow", api.agent(SUPPORT), body),
        ("approval", api.agent(SUPPORT), lambda: body(call={"tool": "crm/issue_refund", "args": {
            "customer_id": "c-1", "amount_cents": 25000}})),
        ("deny", api.agent(SUPPORT), lambda: body(call={"tool": "email/send_email", "args": {}})),
        ("replayed", api.agent(SUPPORT), lambda: body(proof=replayed)),
        ("no credentials", {}, body),
        ("another agent's grant", api.agent(CODER), body),
        ("a body it refuses", api.agent(SUPPORT), lambda: body(extra=1)),
    ]
    async with routed:
        await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json=body(proof=replayed))
        for name, headers, make in cases:
            answers = []
            for client, path in ((api.client, "/v1/decide"), (routed, "/routed/v1/decide")):
                before = routings
                response = await client.post(path, headers=headers, json=make())
                answer = response.json()
                for volatile in ("event_id", "instance", "approval"):
                    answer.pop(volatile, None)
                answers.append((response.status_code, response.headers["content-type"],
                                answer, routings - before))
            (status, media_type, answer, routed_direct), (*framework, routed_there) = answers
            assert [status, media_type, answer] == framework, name
            assert routed_there == 1, name
            assert routed_direct == (1 if name == "a body it refuses" else 0), name
    refusals = [e.event["action"] for e in api.refusals(ActorType.AGENT)]
    assert refusals == ["api:decide", "api:decide"]  # audited both ways
    text = (await api.client.get("/metrics")).text
    assert 'proctor_http_requests_total{method="POST",route="/v1/decide",status="200"} 9.0' \
        in text


async def test_the_control_plane_is_asked_once_per_caller_and_grant(
        agents: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # its policies are fixed while the server runs: an allowed (caller, grant) is not
    # asked again; any other caller with the grant still is, and is refused and audited
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    control = api.app.state.proctor.control
    asked: list[str] = []
    decide = control.decide

    def counted(principal: Any, action: str, resource: Any, **kwargs: Any) -> Any:
        asked.append(principal.id)
        return decide(principal, action, resource, **kwargs)

    monkeypatch.setattr(control, "decide", counted)
    for _ in range(3):
        answer = await _decide(api, grant, "kb/search_articles", {"query": "q"})
        assert answer["decision"] == "allow"
    assert asked == [SUPPORT]
    for _ in range(2):
        response = await api.client.post("/v1/decide", headers=api.agent(CODER), json={
            "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
            "call": {"tool": "kb/search_articles", "args": {"query": "q"}}, "target": TARGET})
        assert_problem(response, 403, "forbidden")
    assert asked == [SUPPORT, CODER, CODER]
    assert [e.event["action"] for e in api.refusals(ActorType.AGENT)] == ["api:decide"] * 2


async def test_a_call_the_policy_engine_fails_on_is_a_500_engine_error_with_the_deny_audited(
        agents: Api) -> None:
    api = agents
    # the small-refund permit overflows Cedar's integers: it cannot be evaluated
    await api.overflowing("context.args.amount_cents <= 5000", "context.args.amount_cents")
    response = await _ask(api, await api.grant(SUPPORT, REFUND), "crm/issue_refund",
                          {"customer_id": "c", "amount_cents": 10})
    # it was a 200 deny, as a policy's deny: nothing told the caller or an operator that
    # the engine had failed; then a 503, which clients retry, and the policy is evaluated
    # the same way each time: 500, no Retry-After
    assert_problem(response, 500, "engine_error")
    assert "retry-after" not in response.headers
    problem = response.json()
    assert problem["decision"] == "deny"
    [event] = api.events(action="tool:crm/issue_refund")
    assert event.event["id"] == problem["event_id"]
    assert (event.event["decision"]["outcome"], event.event["decision"]["code"]) == (
        "deny", "engine_error")


async def test_a_call_whose_decision_cannot_be_audited_is_a_503_with_retry_after(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, REFUND)
    with audit_down(api.runtime.store):
        response = await _ask(api, grant, "crm/issue_refund",
                              {"customer_id": "c", "amount_cents": 10})
    # it was a 200 deny, as a policy's deny: a failure that passes, answered as if it
    # would not, so a client never tried again
    assert_problem(response, 503, "audit_unavailable")
    assert response.headers["retry-after"] == "1"
    assert response.json()["decision"] == "deny"
    again = await _decide(api, grant, "crm/issue_refund", {"customer_id": "c",
                                                            "amount_cents": 10})
    assert again["decision"] == "allow"

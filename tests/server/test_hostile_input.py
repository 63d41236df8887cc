"""Hostile input never makes the API fail inside: deeply nested JSON in a body, a token or
a proof, and NUL characters in ids and filters, are clear 4xx answers on both backends."""

from __future__ import annotations

import base64
import json

import pytest

from tests.server.conftest import BASE_URL, OWNER, SUPPORT, Api

pytestmark = pytest.mark.anyio


def _part(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


HEADER = _part(json.dumps({"alg": "ES256", "typ": "dpop+jwt"}).encode())
NESTED = _part(b"[" * 2000)  # deeper than Python's JSON decoder recurses


async def test_a_deeply_nested_body_is_a_422_with_its_code_and_decides_nothing(
        agents: Api) -> None:
    grant = await agents.grant(SUPPORT, [{"tool": "crm/*"}])
    proof = agents.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/decide")
    # 900 levels: the body parsed and the decision failed on RecursionError (a deny with
    # no reason); 6000: FastAPI's decoder overflowed and said "not valid JSON"
    for depth in (900, 6000):
        args = "[" * depth + "]" * depth
        body = (f'{{"token": "{grant["token"]}", "proof": "{proof}", "call": '
                f'{{"tool": "crm/lookup_customer", "args": {{"customer_id": {args}}}}}}}')
        for content_type in ({"Content-Type": "application/json"}, {}):
            response = await agents.client.post("/v1/decide", content=body, headers={
                **agents.agent(SUPPORT), **content_type})
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "document_too_deep"
            assert response.json()["detail"] == "the request body nests deeper than 64 levels"
    assert agents.events(action="tool:crm/lookup_customer") == []


async def test_a_bearer_token_with_a_deeply_nested_payload_is_a_401(api: Api) -> None:
    response = await api.client.get("/v1/whoami", headers={
        "Authorization": f"Bearer {HEADER}.{NESTED}.c2ln"})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "proof_malformed"


async def test_a_dpop_grant_or_proof_with_deeply_nested_json_is_a_401(agents: Api) -> None:
    grant = await agents.grant(SUPPORT, [{"tool": "crm/lookup_customer"}])
    nested_proof = f"{HEADER}.{NESTED}.c2ln"
    nested_grant = f"{NESTED}.{HEADER}.c2ln"
    for token, proof in ((grant["token"], nested_proof), (nested_grant, nested_proof),
                         (grant["token"], f"{NESTED}.{HEADER}.c2ln")):
        response = await agents.client.get("/v1/whoami", headers={
            "Authorization": f"DPoP {token}", "DPoP": proof})
        assert response.status_code == 401, response.text
        assert response.json()["code"] in ("grant_malformed", "proof_invalid")


async def test_a_grant_with_a_deeply_nested_payload_is_refused_not_a_crash(agents: Api) -> None:
    token = f"{HEADER}.{NESTED}.c2ln"
    checked = await agents.client.post("/v1/grants/check", headers=agents.admin,
                                       json={"token": token})
    assert checked.status_code == 200, checked.text
    assert checked.json()["valid"] is False
    for path, body in (("/v1/grants/check", {"token": token}),
                       ("/v1/decide", {"token": token, "proof": "a.b.c",
                                       "call": {"tool": "crm/lookup_customer"}}),
                       ("/v1/grants/exchange", {"token": token, "proof": "a.b.c",
                                                "to_agent": SUPPORT, "scope": {"tools": []}})):
        response = await agents.client.post(path, headers=agents.agent(SUPPORT), json=body)
        assert response.status_code == 403, response.text  # held by nobody: not this agent
        assert response.json()["code"] == "forbidden"


async def test_a_nul_character_in_an_id_or_filter_is_a_4xx(agents: Api) -> None:
    for method, path, body in (
            ("GET", "/v1/tasks/%00", None), ("GET", "/v1/approvals/%00", None),
            ("POST", "/v1/grants/%00/revoke", None), ("GET", "/v1/audit/events?actor=%00", None),
            ("GET", "/v1/approvals?task=%00", None),
            ("POST", "/v1/grants", {"task": "task_\x00", "scope": {"tools": []}}),
            ("POST", "/v1/tasks", {"agent": SUPPORT, "purpose": "a\x00b",
                                   "on_behalf_of": "bob@acme.example"})):
        response = await agents.client.request(method, path, headers=agents.admin, json=body)
        assert response.status_code < 500, (path, response.text)
        if response.status_code >= 400:
            assert response.json()["code"] in ("request_invalid", "task_unknown",
                                                "approval_unknown", "grant_unknown"), path


# over 32 KB in all: the files are validated on worker threads while they are parsed
LARGE_SET = {"large.cedar": "// a large policy set\n" * 1600
             + "permit (principal, action, resource) when { context.approved };\n"}


@pytest.mark.parametrize("others", [{}, LARGE_SET], ids=["alone", "in_a_large_set"])
@pytest.mark.parametrize(("nesting", "problem"), [
    ("(" * 3000 + "true" + ")" * 3000, "nests deeper"),
    ("if true then " * 5000 + "true" + " else true" * 5000, "nests deeper"),
    ("[" * 3000 + "]" * 3000 + " == []", "nests deeper"),
    # no brackets, a level of Cedar's tree per operator: cedarpy's walk of the tree
    # overflowed the stack from about 1,500 levels
    ("true || " * 2000 + "true", "chains more than"),
    ("context" + ".a" * 2000 + " == 1", "chains more than"),
    ('context["a"]' + '["b"]' * 2000 + " == 1", "chains more than")])
async def test_a_policy_nested_past_what_cedar_parses_is_refused_not_a_crash(
        api: Api, nesting: str, problem: str, others: dict[str, str]) -> None:
    # Cedar's parser recursed once per level and overflowed the thread's stack: the
    # whole server process died on a validation an auditor may ask for. In a set over
    # 32 KB, Cedar's validator was given every file on a worker thread before any was
    # checked for depth, and the process died the same way.
    text = f"permit (principal, action, resource) when {{ {nesting} }};"
    sources = {"deep.cedar": text, **others}
    auditor = api.human("audrey@acme.example", "auditor")
    checked = await api.client.post("/v1/policies/validate", headers=auditor,
                                    json={"sources": sources})
    assert checked.status_code == 200, checked.text
    assert checked.json()["valid"] is False
    [error] = checked.json()["errors"]
    assert error["file"] == "deep.cedar" and problem in error["message"]
    uploaded = await api.client.post("/v1/policies/revisions", headers=api.admin,
                                     json={"sources": sources})
    assert uploaded.status_code == 422 and uploaded.json()["code"] == "policy_invalid"
    assert len((await api.client.get("/v1/policies/revisions", headers=api.admin)
                ).json()["revisions"]) == 1


async def test_a_body_escaping_a_lone_surrogate_is_a_422_with_its_code_and_changes_nothing(
        agents: Api) -> None:
    # valid JSON (``\ud800`` escapes a code point that is not a character): Python's
    # decoder takes it and UTF-8 cannot encode it. A decision asked policy and then
    # failed on the audit event's digest (a bare `enforcement_error`); a grant's scope
    # failed the answer naming it (500)
    grant = await agents.grant(SUPPORT, [{"tool": "crm/*"}])
    proof = agents.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/decide")
    task = await agents.client.post("/v1/tasks", headers=agents.agent(SUPPORT), json={
        "agent": SUPPORT, "purpose": "p", "on_behalf_of": "bob@acme.example"})
    before = len(agents.events())
    bodies = [("/v1/decide", f'{{"token": "{grant["token"]}", "proof": "{proof}", "call": '
               f'{call}}}') for call in (
        '{"tool": "crm/lookup_customer", "args": {"customer_id": "c-\\ud800"}}',
        '{"tool": "crm/lookup_customer", "args": {"\\udfff": "c-1"}}',
        '{"tool": "crm/lookup_customer", "args": {"customer_id": ["c", "\\udc00x"]}}',
        '{"tool": "crm/\\ud800", "args": {}}')]
    bodies += [("/v1/grants", f'{{"task": "{task.json()["id"]}", "scope": {{"tools": '
                f'[{entry}]}}}}') for entry in (
        '{"tool": "crm/lookup_customer", "args": {"\\ud800": {"in": ["x"]}}}',
        '{"tool": "crm/\\udbff"}')]
    for path, body in bodies:
        response = await agents.client.post(path, content=body, headers={
            **agents.agent(SUPPORT), "Content-Type": "application/json"})
        assert (response.status_code, response.json()["code"]) == (
            422, "document_malformed"), response.text
        assert "lone surrogate" in response.json()["detail"]
    assert len(agents.events()) == before  # nothing decided, issued or used
    # a pair escaped (an emoji) is text: decided as usual, and the grant still works
    ok = await agents.client.post("/v1/decide", headers={
        **agents.agent(SUPPORT), "Content-Type": "application/json"}, content=(
        f'{{"token": "{grant["token"]}", "proof": "{proof}", "call": {{"tool": '
        '"crm/lookup_customer", "args": {"customer_id": "c-1 \\ud83d\\ude00"}}}'))
    assert ok.json()["decision"] == "allow", ok.text


async def test_a_token_or_proof_giving_a_lone_surrogate_key_twice_is_a_4xx(agents: Api) -> None:
    """A key given twice is refused by name (41d1a76); a name that is a lone surrogate
    made that refusal's text unencodable: 500s, and a decision that could not be audited."""
    twice = _part(b'{"\\ud800": 1, "\\ud800": 2}')
    for header, payload in ((HEADER, twice), (_part(b'{"alg": "\\ud800"}'), HEADER),
                            (_part(b'{"alg": "ES256", "typ": "\\ud800"}'), HEADER),
                            (_part(b'{"alg": "ES256", "kid": "\\ud800"}'), HEADER),
                            (HEADER, _part(b'{"sub": "\\ud800", "htm": "\\udc00"}'))):
        response = await agents.client.get("/v1/whoami", headers={
            "Authorization": f"Bearer {header}.{payload}.c2ln"})
        assert response.status_code == 401, response.text
    grant = await agents.grant(SUPPORT, [{"tool": "crm/lookup_customer"}])
    for token, proof in ((grant["token"], f"{HEADER}.{twice}.c2ln"),
                         (f"{twice}.{HEADER}.c2ln", f"{HEADER}.{twice}.c2ln"),
                         (grant["token"], f"{twice}.{HEADER}.c2ln")):
        response = await agents.client.get("/v1/whoami", headers={
            "Authorization": f"DPoP {token}", "DPoP": proof})
        assert response.status_code == 401, response.text
    token = f"{HEADER}.{twice}.c2ln"
    checked = await agents.client.post("/v1/grants/check", headers=agents.admin,
                                       json={"token": token})
    assert checked.status_code == 200, checked.text
    assert checked.json()["valid"] is False
    proof = agents.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/decide")
    for body in ({"token": grant["token"], "proof": f"{twice}.{HEADER}.c2ln",
                  "call": {"tool": "crm/lookup_customer"}},
                 {"token": grant["token"], "proof": proof,
                  "call": {"tool": "crm/lookup_customer", "args": {"customer_id": "c-1"}}}):
        response = await agents.client.post("/v1/decide", headers=agents.agent(SUPPORT),
                                            json=body)
        assert response.status_code < 500, response.text


@pytest.mark.parametrize("value", ["true", '"600"', "600.0"])
async def test_a_number_given_as_another_json_type_is_a_422_and_starts_nothing(
        agents: Api, value: str) -> None:
    # pydantic's default read `true` as 1, `"600"` as 600 and `600.0` as 600: a task of
    # one second, and a grant for one second or one use, from a body of the wrong types
    body = (f'{{"agent": "{SUPPORT}", "purpose": "p", "on_behalf_of": "{OWNER}", '
            f'"ttl_seconds": {value}}}')
    started = await agents.client.post("/v1/tasks", content=body, headers={
        **agents.agent(SUPPORT), "Content-Type": "application/json"})
    assert started.status_code == 422, started.text
    assert started.json()["code"] == "request_invalid"
    assert started.json()["errors"][0]["loc"] == ["body", "ttl_seconds"]
    assert agents.events(action="task.start") == []
    task = (await agents.client.post("/v1/tasks", headers=agents.agent(SUPPORT), json={
        "agent": SUPPORT, "purpose": "p", "on_behalf_of": OWNER})).json()["id"]
    issued = await agents.client.post("/v1/grants", content=(
        f'{{"task": "{task}", "scope": {{"tools": [{{"tool": "crm/*"}}]}}, '
        f'"max_uses": {value}}}'), headers={**agents.agent(SUPPORT),
                                            "Content-Type": "application/json"})
    assert issued.status_code == 422, issued.text
    assert issued.json()["errors"][0]["loc"] == ["body", "max_uses"]
    assert len(agents.events(action="task.start")) == 1  # the second one, well typed
    assert agents.events(action="grant:issue") == []
    await agents.grant(SUPPORT, [{"tool": "crm/*"}])
    assert agents.events(action="grant:issue") != []  # as a well typed issuance is


async def test_a_nul_character_in_a_text_field_is_a_422_on_either_store(agents: Api) -> None:
    # PostgreSQL's text cannot hold U+0000 (refused there, by the store); SQLite's can:
    # the same body started a task or suspended an agent on one store and not the other
    for path, headers, body in (
            ("/v1/tasks", agents.agent(SUPPORT),
             {"agent": SUPPORT, "purpose": "a\u0000b", "on_behalf_of": OWNER}),
            (f"/v1/agents/{SUPPORT}/suspend", agents.admin, {"reason": "drift\u0000"})):
        response = await agents.client.post(path, headers=headers, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "request_invalid"
        assert "NUL character" in response.json()["detail"]
    assert agents.events(action="task.start") == []
    agent = await agents.client.get(f"/v1/agents/{SUPPORT}", headers=agents.admin)
    assert agent.json()["trust_state"] == "trusted"
    # a decision for a tool named with a NUL: denied and audited on SQLite, denied
    # with no audit event on PostgreSQL (the event could not be written)
    grant = await agents.grant(SUPPORT, [{"tool": "crm/*"}])
    proof = agents.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/decide")
    audited = len(agents.events())
    decided = await agents.client.post("/v1/decide", headers=agents.agent(SUPPORT), json={
        "token": grant["token"], "proof": proof, "call": {"tool": "crm/\u0000"}})
    assert decided.status_code == 422, decided.text
    assert decided.json()["code"] == "request_invalid"
    assert decided.json()["errors"][0]["loc"] == ["body", "call", "tool"]
    assert len(agents.events()) == audited  # refused before anything is decided


@pytest.mark.parametrize("value", ["yes", "on", "1", "0", "no", "off", "True", "FALSE", ""])
async def test_a_boolean_query_parameter_is_true_or_false_and_nothing_else(
        api: Api, value: str) -> None:
    # FastAPI read `?newest_first=off` as false and `?pending=YES` as true: a URL a
    # reader (or a proxy's log) takes one way, the API another
    for path, name in (("/v1/audit/events", "newest_first"), ("/v1/tools", "pending")):
        response = await api.client.get(path, params={name: value}, headers=api.admin)
        assert (response.status_code, response.json()["code"]) == (422, "request_invalid"), \
            (path, value)
        assert name in response.json()["detail"]


async def test_a_boolean_query_parameter_reads_true_and_false(agents: Api) -> None:
    for value, newest_first in (("true", True), ("false", False)):
        response = await agents.client.get("/v1/audit/events", headers=agents.admin,
                                           params={"newest_first": value})
        assert response.status_code == 200, response.text
        seqs = [e["seq"] for e in response.json()["events"]]
        assert len(seqs) >= 2 and seqs == sorted(seqs, reverse=newest_first)
    assert (await agents.client.get("/v1/tools", headers=agents.admin,
                                    params={"pending": "true"})).status_code == 200


@pytest.mark.parametrize("query", ["actor_type=agent&actor_type=human",
                                   "newest_first=true&newest_first=false",
                                   "limit=1&limit=1000", "task=&task=t"])
async def test_a_query_parameter_given_twice_is_a_422_before_any_route(
        api: Api, query: str) -> None:
    # the route read the last, a proxy or a log in front of it may read the first
    response = await api.client.get(f"/v1/audit/events?{query}", headers=api.admin)
    assert (response.status_code, response.json()["code"]) == (422, "request_invalid")
    assert "twice" in response.json()["detail"]

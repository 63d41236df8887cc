"""A request body that gives a JSON key twice in one object is refused (422
``request_invalid`` naming the key) on every route, the decision's too: FastAPI's and
pydantic's parsers kept the last value, another reader (the upstream a decided call's
arguments go to, a reviewer, a log) may keep the first, and the two would disagree on
what was asked."""

from __future__ import annotations

import pytest

from .conftest import OWNER, SUPPORT, TARGET, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


async def test_a_key_given_twice_is_refused_naming_it_and_changes_nothing(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    tasks = await api.client.post("/v1/tasks", headers={**api.admin, **JSON}, content=(
        b'{"agent": "%s", "purpose": "a", "purpose": "b", "on_behalf_of": "%s"}'
        % (SUPPORT.encode(), OWNER.encode())))
    assert_problem(tasks, 422, "request_invalid")
    assert "`purpose` twice" in tasks.json()["detail"]
    # nested, in a free-form document: the scope's entry names two tools
    issued = await api.client.post("/v1/grants", headers={**api.admin, **JSON}, content=(
        b'{"task": "%s", "scope": {"tools": [{"tool": "crm/issue_refund", '
        b'"tool": "kb/search_articles"}]}}' % grant["task"].encode()))
    assert_problem(issued, 422, "request_invalid")
    assert "`tool` twice" in issued.json()["detail"]
    tree = (await api.client.get(f"/v1/tasks/{grant['task']}/tree", headers=api.admin)).json()
    assert [n["kind"] for n in tree["nodes"]] == ["task", "grant"]
    # the same key in two objects is no repetition
    fine = await api.client.post("/v1/grants", headers={**api.admin, **JSON}, content=(
        b'{"task": "%s", "scope": {"tools": [{"tool": "kb/search_articles"}, '
        b'{"tool": "crm/lookup_customer"}]}}' % grant["task"].encode()))
    assert fine.status_code == 201, fine.text


async def test_a_decision_whose_arguments_give_a_key_twice_is_refused(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    events = len(api.events())
    body = (b'{"token": "%s", "proof": "%s", "call": {"tool": "kb/search_articles", '
            b'"args": {"query": "allowed", "query": "other"}}, "target": "%s"}' % (
                grant["token"].encode(), api.call_proof(SUPPORT, grant["token"]).encode(),
                TARGET.encode()))
    decided = await api.client.post("/v1/decide", headers={**api.agent(SUPPORT), **JSON},
                                    content=body)
    assert_problem(decided, 422, "request_invalid")
    assert "`query` twice" in decided.json()["detail"]
    assert len(api.events()) == events  # nothing decided, nothing used

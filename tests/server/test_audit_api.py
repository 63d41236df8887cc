"""The audit log through the API: search with filters, verify, export as a stream."""

from __future__ import annotations

import json

import pytest

from proctor.audit import GENESIS_HASH, ChainHead, canonical_json, chain_hash

from .conftest import SUPPORT, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio


async def test_search_keeps_agents_and_humans_apart(agents: Api) -> None:
    api = agents
    await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    humans = await api.client.get("/v1/audit/events", headers=api.admin,
                                  params={"actor_type": "human"})
    agents_only = await api.client.get("/v1/audit/events", headers=api.admin,
                                       params={"actor_type": "agent", "limit": 1})
    assert {e["event"]["actor"]["type"] for e in humans.json()["events"]} == {"human"}
    assert [e["event"]["action"] for e in humans.json()["events"]] == [
        "agent.register", "agent.register"]
    assert [e["event"]["action"] for e in agents_only.json()["events"]] == ["grant:issue"]
    naive = await api.client.get("/v1/audit/events", headers=api.admin,
                                 params={"since": "2026-01-01T00:00:00"})
    assert_problem(naive, 422, "request_invalid")
    wrong = await api.client.get("/v1/audit/events", headers=api.admin,
                                 params={"actor_type": "robot"})
    assert_problem(wrong, 422, "request_invalid")


async def test_verify_reports_a_valid_chain(agents: Api) -> None:
    report = (await agents.client.get("/v1/audit/verify", headers=agents.admin)).json()
    assert report["valid"] is True
    assert report["events"] == report["last_seq"] == 3  # with the first policy.activate


async def test_the_export_stream_re_verifies_offline(agents: Api) -> None:
    api = agents
    await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    response = await api.client.get("/v1/audit/export", headers=api.admin)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    head = ChainHead(0, GENESIS_HASH)
    for line in lines:
        assert line["prev_hash"] == head.hash
        assert chain_hash(head.hash, canonical_json(line["event"])) == line["hash"]
        head = ChainHead(line["seq"], line["hash"])
    assert head.seq == len(lines) == 5  # with the first policy.activate
    ocsf = await api.client.get("/v1/audit/export", headers=api.admin,
                                params={"format": "ocsf", "actor_type": "agent"})
    documents = [json.loads(line) for line in ocsf.text.splitlines()]
    assert len(documents) == 2
    assert all(d["class_uid"] == 6003 for d in documents)


@pytest.mark.parametrize("path", ["/v1/audit/events", "/v1/audit/export"])
@pytest.mark.parametrize("value", ["-1", "0", "1733000000", "1e3", "NaN", "today", "\u0661"])
async def test_a_time_range_is_iso_8601_text_never_a_number_read_as_seconds(
        agents: Api, path: str, value: str) -> None:
    # `since=-1` was read as 1969-12-31T23:59:59Z: a number taken for a time
    for name in ("since", "until"):
        answer = await agents.client.get(path, headers=agents.admin, params={name: value})
        assert_problem(answer, 422, "request_invalid")
        assert f"`{name}`" in answer.json()["detail"]
    fine = await agents.client.get(path, headers=agents.admin,
                                   params={"since": "2020-01-01T00:00:00+00:00"})
    assert fine.status_code == 200

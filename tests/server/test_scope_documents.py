"""Issuance, offers and exchange refuse a scope document with a key they do not know
(or a value of the wrong type) with 422 ``scope_invalid``, and change nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from proctor.runtime import issuer_for

from .conftest import SUPPORT, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

KB = [{"tool": "kb/search_articles"}, {"tool": "crm/lookup_customer"}]
BAD = [{"tools": KB, "extra": float("nan")}, {"tools": KB, "extra": 10**400},
       {"tools": [{"tool": "kb/search_articles", "argz": {"query": {"in": ["a"]}}}]}]


async def _post(api: Api, path: str, headers: dict[str, str], body: dict[str, Any]
                ) -> httpx.Response:
    """``body`` as JSON text, NaN included (what a client library refuses to write)."""
    return await api.client.post(path, content=json.dumps(body).encode(), headers={
        **headers, "content-type": "application/json"})


async def test_issuance_offers_and_exchange_refuse_unknown_scope_keys(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, KB)
    issuer = issuer_for(api.runtime.settings)
    for scope in BAD:
        issued = await _post(api, "/v1/grants", api.admin, {
            "task": grant["task"], "scope": scope})
        assert_problem(issued, 422, "scope_invalid")
        offered = await _post(api, "/v1/grants/offers", api.admin, {
            "task": grant["task"], "scope": scope})
        assert_problem(offered, 422, "scope_invalid")
        exchanged = await _post(api, "/v1/grants/exchange", api.agent(SUPPORT), {
                "token": grant["token"], "to_agent": "coder", "scope": scope,
                "proof": api.call_proof(SUPPORT, grant["token"], method="grant/exchange",
                                        target=issuer)})
        assert_problem(exchanged, 422, "scope_invalid")
    tree = (await api.client.get(f"/v1/tasks/{grant['task']}/tree", headers=api.admin)).json()
    assert [n["kind"] for n in tree["nodes"]] == ["task", "grant"]

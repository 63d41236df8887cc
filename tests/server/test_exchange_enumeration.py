"""An exchange does not tell the delegating agent which agents are registered: handing a
grant on to an id no agent has, to a retired agent and to one policy will not issue the
grant to gets one answer (403 ``issuance_denied``, one message but for the id), each
audited; the reasons stay in the audit log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proctor.audit import ActorType
from proctor.runtime import issuer_for
from tests.identity.factories import manifest

from .conftest import CODER, SUPPORT, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

KB = [{"tool": "kb/search_articles"}]
NOBODY = "spiffe://acme.example/agent/nobody"
RETIRED = "spiffe://acme.example/agent/retired"
DRIFTED = "spiffe://acme.example/agent/drifted"


async def _exchange(api: Api, parent: dict[str, Any], to: str) -> httpx.Response:
    proof = api.call_proof(SUPPORT, parent["token"], method="grant/exchange",
                           target=issuer_for(api.runtime.settings))
    return await api.client.post("/v1/grants/exchange", headers=api.agent(SUPPORT), json={
        "token": parent["token"], "proof": proof, "to_agent": to, "scope": {"tools": KB},
        "ttl_seconds": 600})


def _answer(response: httpx.Response, agent_id: str) -> tuple[int, dict[str, Any]]:
    body = dict(response.json())
    body["detail"] = body["detail"].replace(agent_id, "<id>")
    return response.status_code, body


async def test_an_exchange_cannot_tell_a_registered_agent_from_none(agents: Api) -> None:
    api = agents
    for agent_id in (RETIRED, DRIFTED):
        await api.register(agent_id, "support-agents")
    api.runtime.registry.retire(RETIRED, by="erin@acme.example", reason="gone")
    # a drifted agent gets grants of up to 300 s only (grants-for-drifted-agents)
    api.runtime.registry.present_manifest(DRIFTED, manifest(model_id="another-model"))
    parent = await api.grant(SUPPORT, KB, ttl_seconds=900)
    missing = await _exchange(api, parent, NOBODY)
    assert_problem(missing, 403, "issuance_denied")
    for agent_id in (RETIRED, DRIFTED):
        refused = await _exchange(api, parent, agent_id)
        assert _answer(refused, agent_id) == _answer(missing, NOBODY), agent_id
    assert (await _exchange(api, parent, CODER)).status_code == 201  # one it may
    # every probe is a refusal on the record; the drifted agent's decision keeps its reason
    refusals = [e.event for e in api.refusals(ActorType.AGENT)
                if e.event["action"] == "api:grant.exchange"]
    assert len(refusals) == 3
    denied = [e.event for e in api.events(action="grant:issue")
              if e.event["outcome"] == "denied" and e.event["actor"]["id"] == DRIFTED]
    assert denied


async def test_a_receiver_no_grant_may_go_to_is_decided_and_written_as_policys_refusal(
        agents: Api) -> None:
    """An id no agent has and a retired agent are refused with the work of a refusal by
    policy (a decision, its ``grant:issue`` event written before the answer), not sooner
    and with nothing written: the time the answer takes told the delegating agent which
    agents exist. The event keeps the reason, which the answer does not give."""
    api = agents
    await api.register(RETIRED, "support-agents")
    api.runtime.registry.retire(RETIRED, by="erin@acme.example", reason="gone")
    parent = await api.grant(SUPPORT, KB, ttl_seconds=900)
    for agent_id, reason in ((NOBODY, "is not registered"),
                             (RETIRED, "is suspended or retired")):
        assert_problem(await _exchange(api, parent, agent_id), 403, "issuance_denied")
        denied = [e.event for e in api.events(action="grant:issue")
                  if e.event["actor"]["id"] == agent_id]
        assert [(e["outcome"], e["target"]) for e in denied] == [
            ("denied", 'Tool::"kb/search_articles"')], agent_id
        assert reason in str(denied[0]), denied[0]
        assert denied[0]["task"] == parent["task"]


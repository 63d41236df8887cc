"""Which agents are registered is told only to a caller who may know it (one who may list
agents, or read the agent named): anyone else gets the same answer for an agent that is
not registered and one it may not act on, so status codes cannot list the agents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proctor.audit import ActorType

from .conftest import CODER, OWNER, SUPPORT, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

NOBODY = "spiffe://acme.example/agent/nobody"


def _probes(agent_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route that names an agent, for ``agent_id``."""
    return [
        ("GET", f"/v1/agents/{agent_id}", None),
        ("POST", f"/v1/agents/{agent_id}/review", {}),
        ("POST", f"/v1/agents/{agent_id}/suspend", {}),
        ("POST", f"/v1/agents/{agent_id}/retire", {}),
        ("POST", f"/v1/agents/{agent_id}/manifest", {"manifest": _MANIFEST}),
        ("POST", "/v1/tasks", {"agent": agent_id, "purpose": "x", "on_behalf_of": OWNER}),
    ]


_MANIFEST = {"model_id": "m", "weights_digest": "sha256:" + "a" * 64,
             "system_prompt_digest": "sha256:" + "b" * 64, "tools": [],
             "dependency_lock_digest": "sha256:" + "c" * 64}


def _answer(response: httpx.Response, agent_id: str) -> tuple[int, dict[str, Any]]:
    """The answer as a caller sees it, the agent's id taken out of the message."""
    body = dict(response.json())
    body["detail"] = body["detail"].replace(agent_id, "<id>")
    body["instance"] = body["instance"].replace(agent_id, "<id>")
    return response.status_code, body


async def test_an_agent_cannot_tell_another_agent_from_none(agents: Api) -> None:
    api = agents
    coder = api.agent(CODER)
    for (method, path, body), (_, unknown_path, unknown_body) in zip(
            _probes(SUPPORT), _probes(NOBODY), strict=True):
        existing = await api.client.request(method, path, headers=coder, json=body)
        missing = await api.client.request(method, unknown_path, headers=coder,
                                           json=unknown_body)
        assert_problem(existing, 404, "agent_unknown")
        assert _answer(existing, SUPPORT) == _answer(missing, NOBODY), path
    # each probe is a refusal in the audit log, the existing agent's and the missing one's
    refused = api.refusals(ActorType.AGENT)
    targets = [e.event["target"] for e in refused]
    assert targets.count(f'Agent::"{SUPPORT}"') == len(_probes(SUPPORT))
    assert targets.count(f'Agent::"{NOBODY}"') == len(_probes(NOBODY))
    assert {e.event["actor"]["id"] for e in refused} == {CODER}
    # and nothing changed
    assert api.runtime.registry.get(SUPPORT).trust_state.value == "trusted"


async def test_a_caller_who_may_know_is_told_unknown_from_forbidden(agents: Api) -> None:
    api = agents
    frank = api.human("frank@acme.example", "auditor")  # may list agents
    missing = await api.client.post(f"/v1/agents/{NOBODY}/suspend", headers=frank, json={})
    assert_problem(missing, 404, "agent_unknown")
    assert missing.json()["detail"] == f"agent `{NOBODY}` is not registered"
    existing = await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=frank, json={})
    assert_problem(existing, 403, "forbidden")
    assert existing.json()["reasons"]
    # an agent may know itself: what it may not do to itself is a 403 with the reasons
    own = await api.client.post(f"/v1/agents/{CODER}/retire", headers=api.agent(CODER),
                                json={})
    assert_problem(own, 403, "forbidden")
    assert own.json()["policy_ids"] == ["agents-never-govern"]
    assert (await api.client.get(f"/v1/agents/{NOBODY}", headers=api.admin)).status_code == 404

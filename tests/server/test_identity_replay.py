"""An agent's own-key identity proof is good for the one request it names, once, on any
node: a captured one (a log, a proxy) cannot be presented as the agent again.

It used to be a bearer credential for its lifetime (five minutes): the SDK reused one for
a minute, and the API remembered a verified one, so whoever captured it could start and
end the agent's tasks (ending one revokes its grants), present a manifest (the agent
drifted), read its record and approvals, and ask for grants, as the agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select

from proctor.audit import ActorType
from proctor.store.tables import proof_nonces, tasks
from tests.identity.factories import manifest, own_key_proof

from .conftest import OWNER, SUPPORT, TARGET, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120
START = {"agent": SUPPORT, "purpose": "help a customer", "on_behalf_of": OWNER}


def _body(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _replays(api: Api) -> list[Mapping[str, Any]]:
    """The audited refusals of an agent's own proof, presented by someone (not the agent)."""
    return [e.event for e in api.refusals(ActorType.SYSTEM)
            if e.event["action"] == "api:authenticate"]


def _tasks(api: Api) -> int:
    with api.runtime.store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(tasks)).scalar_one())


def _nonces(api: Api) -> int:
    with api.runtime.store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(proof_nonces)).scalar_one())


async def test_a_captured_proof_replayed_for_the_same_request_is_refused_and_audited(
        agents: Api) -> None:
    api = agents
    body = _body(START)
    captured = api.bearer(SUPPORT, "POST", "/v1/tasks", body)
    json_type = {"Content-Type": "application/json"}
    first = await api.client.post("/v1/tasks", headers={**captured, **json_type}, content=body)
    assert first.status_code == 201, first.text
    again = await api.client.post("/v1/tasks", headers={**captured, **json_type}, content=body)
    assert_problem(again, 401, "proof_replayed")
    assert _tasks(api) == 1
    [event] = _replays(api)
    assert (event["actor"], event["target"], event["outcome"], event["decision"]["code"]) == (
        {"type": "system", "id": "unauthenticated", "on_behalf_of": ""},
        f'Agent::"{SUPPORT}"', "refused",
        "proof_replayed")
    assert (event["detail"]["method"], event["detail"]["path"]) == ("POST", "/v1/tasks")
    assert event["source"] == "10.1.2.3"


async def test_a_captured_proof_is_refused_on_every_other_endpoint(agents: Api) -> None:
    api = agents
    task = (await api.client.post("/v1/tasks", headers=api.agent(SUPPORT), json=START)).json()
    used = api.bearer(SUPPORT, "GET", "/v1/whoami")
    assert (await api.client.get("/v1/whoami", headers=used)).status_code == 200
    unused = api.bearer(SUPPORT, "GET", "/v1/whoami")  # taken on its way, never arrived
    drifted = {"manifest": manifest(model_id="another-model").as_json()}
    for captured in (used, unused):
        ended = await api.client.post(f"/v1/tasks/{task['id']}/end", headers=captured)
        assert_problem(ended, 401, "proof_wrong_request")
        presented = await api.client.post(f"/v1/agents/{SUPPORT}/manifest", headers=captured,
                                          json=drifted)
        assert_problem(presented, 401, "proof_wrong_request")
        started = await api.client.post("/v1/tasks", headers=captured, json=START)
        assert_problem(started, 401, "proof_wrong_request")
        asked = await api.client.post("/v1/grants", headers=captured, json={
            "task": task["id"], "scope": {"tools": [{"tool": "kb/search_articles"}]}})
        assert_problem(asked, 401, "proof_wrong_request")
        read = await api.client.get(f"/v1/agents/{SUPPORT}", headers=captured)
        assert_problem(read, 401, "proof_wrong_request")
    # nothing changed: the task is open, the agent trusted, no second task, no grant
    mine = await api.client.get(f"/v1/tasks/{task['id']}", headers=api.agent(SUPPORT))
    assert mine.json()["ended_at"] is None
    assert api.runtime.registry.get(SUPPORT).trust_state.value == "trusted"
    assert _tasks(api) == 1
    assert [e["decision"]["code"] for e in _replays(api)] == ["proof_wrong_request"] * 10
    # the unused one is still good for the request it names, once
    assert (await api.client.get("/v1/whoami", headers=unused)).status_code == 200
    assert_problem(await api.client.get("/v1/whoami", headers=unused), 401, "proof_replayed")


async def test_a_proof_over_one_body_is_refused_with_another(agents: Api) -> None:
    api = agents
    captured = api.bearer(SUPPORT, "POST", "/v1/tasks", _body(START))
    other = _body({**START, "purpose": "export every customer"})
    swapped = await api.client.post("/v1/tasks", content=other, headers={
        **captured, "Content-Type": "application/json"})
    assert_problem(swapped, 401, "proof_wrong_request")
    assert _tasks(api) == 0


async def test_an_old_reusable_proof_is_refused_as_unbound_and_audited(agents: Api) -> None:
    api = agents
    old = own_key_proof(api.keys[SUPPORT], SUPPORT, api.clock.now(), request=None, ttl=300)
    for _ in range(2):
        refused = await api.client.post("/v1/tasks", json=START,
                                        headers={"Authorization": f"Bearer {old}"})
        assert_problem(refused, 401, "proof_unbound")
        assert "update the agent's proctor SDK" in refused.json()["detail"]
    assert _tasks(api) == 0
    assert [(e["target"], e["decision"]["code"]) for e in _replays(api)] == [
        (f'Agent::"{SUPPORT}"', "proof_unbound")] * 2


async def test_a_forged_proof_is_not_audited_as_the_agents(agents: Api) -> None:
    # only a proof whose signature verified is the agent's: anyone can name an agent
    api = agents
    forged = own_key_proof(api.keys["spiffe://acme.example/agent/coder"], SUPPORT,
                           api.clock.now(), request=None)
    refused = await api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(refused, 401, "proof_invalid_signature")
    assert _replays(api) == []


async def test_a_decision_takes_only_its_proof_of_possession_and_its_identity_proof_with_it(
        agents: Api) -> None:
    # POST /v1/decide claims the body's proof of possession in its own write; the
    # identity proof, bound to that body, is taken with it: no second write
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    body = _body({"token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
                  "call": {"tool": "kb/search_articles", "args": {"query": "q"}},
                  "target": TARGET})
    captured = {**api.bearer(SUPPORT, "POST", "/v1/decide", body),
                "Content-Type": "application/json"}
    before = _nonces(api)
    first = await api.client.post("/v1/decide", headers=captured, content=body)
    assert first.json()["decision"] == "allow", first.text
    assert _nonces(api) == before + 1
    again = await api.client.post("/v1/decide", headers=captured, content=body)
    assert (again.json()["decision"], again.json()["code"]) == ("deny", "proof_replayed")
    assert _nonces(api) == before + 1
    # and it is nothing anywhere else
    ended = await api.client.post(f"/v1/tasks/{grant['task']}/end", headers=captured,
                                  content=body)
    assert_problem(ended, 401, "proof_wrong_request")
    # every other request of the agent's takes its proof's jti
    await api.client.get("/v1/whoami", headers=api.agent(SUPPORT))
    assert _nonces(api) == before + 2


async def test_two_processes_cannot_both_take_one_proof(agents: Api) -> None:
    api = agents
    body = _body(START)
    headers = {**api.bearer(SUPPORT, "POST", "/v1/tasks", body),
               "Content-Type": "application/json"}
    settings = api.runtime.settings
    job = {"method": "POST", "path": "/v1/tasks", "headers": headers, "body": body.decode()}
    other = subprocess.Popen(
        [sys.executable, "-m", "tests.server.second_api", str(settings.home),
         settings.database_url, json.dumps(job)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert other.stdin is not None and other.stdout is not None
    try:
        with anyio.fail_after(WAIT):
            ready = await anyio.to_thread.run_sync(other.stdout.readline)
        assert ready.strip() == "ready"
        other.stdin.write("go\n")
        other.stdin.flush()
        here = await api.client.post("/v1/tasks", headers=headers, content=body)
        with anyio.fail_after(WAIT):
            there = json.loads(await anyio.to_thread.run_sync(other.stdout.readline))
    finally:
        other.stdin.close()
        assert other.wait(timeout=WAIT) == 0
        other.stdout.close()
    answers = sorted([(here.status_code, here.json().get("code")),
                      (there["status"], there["code"])], key=lambda a: a[0])
    assert answers[0][0] == 201, answers
    assert answers[1] == (401, "proof_replayed"), answers
    assert _tasks(api) == 1

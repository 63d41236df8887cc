"""Background work, and several server processes on one database: sweeping expired
leases, following another process's policy, agent and shadow changes, hearing its
revocations (PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI

from proctor.audit import verify_store
from proctor.audit.checkpoint_chain import verifiers_of
from proctor.audit.retention import archived_left
from proctor.clock import FrozenClock
from proctor.config import Settings
from proctor.oversight.milestones import archive_with_event
from proctor.runtime import open_runtime
from proctor.server import ServerConfig, create_app
from proctor.server.background import Background
from tests.audit.helpers import agent_event

from .conftest import BASE_URL, SUPPORT, TARGET, Api
from .test_authentication import assert_problem

NEW = "spiffe://acme.example/agent/helpdesk"

pytestmark = pytest.mark.anyio


@pytest.fixture
async def other(settings: Settings, frozen: FrozenClock, database_url: str,
                tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A second server process's app on the same database (its own runtime and caches)."""
    runtime = open_runtime(settings, clock=frozen)
    app = create_app(runtime, ServerConfig(sync_seconds=3600, sweep_seconds=3600,
                                          enforcement_points=(TARGET,)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as client:
        yield client, app
    runtime.close()


def background(app: FastAPI) -> Background:
    found: Background = app.state.background
    return found


async def test_the_sweep_revokes_expired_grants(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}], ttl_seconds=60)
    api.clock.advance(seconds=120)
    expired = (await anyio.to_thread.run_sync(background(api.app).sweep_once)).expired
    assert expired == 1
    tree = (await api.client.get(f"/v1/tasks/{grant['task']}/tree", headers=api.admin)).json()
    reasons = {n["id"]: n["revoked_reason"] for n in tree["nodes"]}
    assert reasons == {grant["task"]: None, grant["grant_id"]: "expired"}
    metrics = (await api.client.get("/metrics")).text
    assert 'proctor_swept_total{kind="lease"} 1.0' in metrics


async def test_another_process_follows_policy_agent_and_shadow_changes(
        agents: Api, other: tuple[httpx.AsyncClient, FastAPI]) -> None:
    api = agents
    client, other_app = other
    other_background = background(other_app)
    sources = (await api.client.get("/v1/policies/revisions/1", headers=api.admin)).json()
    tighter = dict(sources["sources"])
    tighter["support.cedar"] = tighter["support.cedar"].replace("amount_cents <= 5000",
                                                                "amount_cents <= 2000")
    candidate = (await api.client.post("/v1/policies/revisions", headers=api.admin,
                                       json={"sources": tighter})).json()
    await api.client.post(f"/v1/policies/revisions/{candidate['id']}/shadow",
                          headers=api.admin)
    grant = await api.grant(SUPPORT, [{"tool": "crm/issue_refund"}])

    async def decide_on_other(amount: int) -> str:
        response = await client.post("/v1/decide", headers=api.agent(SUPPORT),
                                     auth=api.auth, json={
            "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
            "call": {"tool": "crm/issue_refund",
                     "args": {"customer_id": "c", "amount_cents": amount}},
            "target": TARGET})
        assert response.status_code == 200, response.text
        decision: str = response.json()["decision"]
        return decision

    await anyio.to_thread.run_sync(other_background.sync_once)
    assert await decide_on_other(3000) == "allow"
    await anyio.to_thread.run_sync(other_background.sync_once)  # moves its differences
    shadow = (await api.client.get("/v1/policies/shadow", headers=api.admin)).json()
    assert shadow["differences"] == 1

    await api.client.post(f"/v1/policies/revisions/{candidate['id']}/activate",
                          headers=api.admin)
    await anyio.to_thread.run_sync(other_background.sync_once)
    assert await decide_on_other(3000) == "deny"

    await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=api.admin, json={})
    assert_problem(await client.get("/v1/whoami", headers=api.agent(SUPPORT),
                                    auth=api.auth), 401,
                   "agent_not_active")

    # an agent registered through one process acts through the other
    await api.register(NEW, "support-agents")
    await anyio.to_thread.run_sync(other_background.sync_once)
    fresh = await api.grant(NEW, [{"tool": "kb/search_articles"}])
    answer = await client.post("/v1/decide", headers=api.agent(NEW), auth=api.auth, json={
        "token": fresh["token"], "proof": api.call_proof(NEW, fresh["token"]),
        "call": {"tool": "kb/search_articles", "args": {"query": "q"}}, "target": TARGET})
    assert (answer.json()["decision"], answer.json()["policy_ids"]) == ("allow", ["support-kb"])


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_revocation_made_by_one_process_is_heard_by_another(
        agents: Api, other: tuple[httpx.AsyncClient, FastAPI]) -> None:
    """PostgreSQL only: revocations are announced with NOTIFY."""
    api = agents
    client, other_app = other
    other_background = background(other_app)
    heard: list[Sequence[str]] = []
    other_app.state.proctor.revocation_listeners.append(lambda ids, reason: heard.append(ids))
    await other_background.start()
    try:
        grant = await api.grant(SUPPORT, [{"tool": "kb/search_articles"}])
        await api.client.post(f"/v1/grants/{grant['accessor']}/revoke", headers=api.admin,
                              json={"reason": "leaked"})
        with anyio.fail_after(10):
            while not heard:
                await anyio.sleep(0.05)
        assert list(heard[0]) == [grant["grant_id"]]
        metrics = (await client.get("/metrics")).text
        assert "proctor_revocations_heard_total 1.0" in metrics
    finally:
        await other_background.stop()



async def test_the_sweep_finishes_deleting_what_an_archive_left(agents: Api, tmp_path: Path
                                                                ) -> None:
    api = agents
    runtime = api.runtime
    head = runtime.audit.record(agent_event(api.clock)).seq
    archive_with_event(runtime.store, runtime.audit, tmp_path / "seg.jsonl", up_to_seq=head,
                       signer=runtime.keyring, verifiers={}, event=agent_event(api.clock),
                       most_chunks=0)  # a process stopped before its first chunk
    keys = verifiers_of(runtime.keyring)  # the key made to sign the closing checkpoint
    assert archived_left(runtime.store) == head
    assert verify_store(runtime.store, keys).is_valid
    await anyio.to_thread.run_sync(background(api.app).sweep_once)
    assert archived_left(runtime.store) == 0
    report = verify_store(runtime.store, keys)
    assert report.is_valid, report.problem
    assert report.first_seq == head + 1  # the archive's own event

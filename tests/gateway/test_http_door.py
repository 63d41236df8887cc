"""The HTTP gateway's door: a call on a live session is checked in the store once, by its
decision (one hop to a worker thread), and is still refused the moment its grant is
revoked; a request the gateway does not decide keeps the door's own check, of the grant
in the store and of its proof (:mod:`proctor.gateway.door`)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from sqlalchemy.pool import QueuePool

from proctor.clock import FrozenClock, SystemClock
from proctor.config import MIN_POOL_SIZE
from proctor.gateway import Gateway, GatewayConfig, GrantAuth, UpstreamConfig
from proctor.gateway.http import MAX_SESSIONS_PER_GRANT, build_http_app
from proctor.grants import CheckedGrant, IssuedGrant
from proctor.runtime import open_runtime
from tests.gateway.conftest import ROOT, UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import (
    Gate,
    agent,
    echo_through_gate,
    gateway_on,
    http_gateway,
    listening_socket,
    served,
    url_of,
)

pytestmark = pytest.mark.anyio


async def _nothing() -> None:
    pass


def _auth(grant: IssuedGrant, deployment: Deployment) -> GrantAuth:
    """The agent's bearer grant and a proof of its key on each request."""
    return GrantAuth(grant.token, deployment.key, SystemClock())


async def test_a_call_on_a_live_session_is_checked_once_and_refused_once_revoked(
        deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grant = deployment.grant()
    clock = FrozenClock(SystemClock().now())  # the watch never polls: only the call can see
    gate = Gate(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client:
            first = await echo_through_gate(client, gate, "first", _nothing)
            assert not isinstance(first, MCPError)
            inspected: list[str] = []
            checked: list[str] = []
            inspect, check = gateway.grants.inspect, gateway.grants.check

            def counted(token: str) -> CheckedGrant:
                inspected.append(token)
                return inspect(token)

            def counted_check(token: str, proof: str, **kwargs: Any) -> CheckedGrant:
                checked.append(token)
                return check(token, proof, **kwargs)

            monkeypatch.setattr(gateway.grants, "inspect", counted)
            monkeypatch.setattr(gateway.grants, "check", counted_check)
            result = await client.call_tool("echo", {"text": "second"})
            assert result.structured_content is not None
            assert result.structured_content["text"] == "second"
            # the decision checked the grant; the door did not again
            assert (inspected, checked) == ([], [])
            await client.list_tools()
            # not decided: the door checks the grant in the store, and its proof
            assert (inspected, checked) == ([], [grant.token])

            await anyio.to_thread.run_sync(deployment.runtime.grants.revoke, grant.accessor,
                                           "incident 14")
            with pytest.raises(MCPError) as refused:
                await client.call_tool("echo", {"text": "third"})
            assert refused.value.error.data["reason"] == "grant_revoked"


async def test_a_grant_the_door_cannot_check_for_want_of_the_store_is_503_not_401(
        deployment: Deployment) -> None:
    # a grant checked while every connection of the store's pool is held: the check
    # fails, not the grant. It was 401 `invalid_token` naming `store_unavailable`, which
    # tells a client to drop a good grant; the API answers 503 with Retry-After
    settings = dc_replace(deployment.settings, database_pool_size=MIN_POOL_SIZE,
                          database_pool_timeout_seconds=0.2)
    runtime = open_runtime(settings)
    sock = listening_socket()
    public = url_of(sock)
    config = GatewayConfig(upstreams={"test": UpstreamConfig(
        name="test", command=tuple(UPSTREAM), cwd=str(ROOT))},
        public_url=public, listen=public.removeprefix("http://"))
    grant = deployment.grant()
    pool = runtime.store.engine.pool
    assert isinstance(pool, QueuePool)
    try:
        async with served(build_http_app(Gateway.on(runtime, config)), sock), \
                httpx2.AsyncClient(timeout=WAIT, auth=GrantAuth(
                    grant.token, deployment.key, SystemClock())) as http:
            with ExitStack() as held:
                while pool.checkedout() < MIN_POOL_SIZE:
                    held.enter_context(runtime.store.reading())
                refused = await http.post(
                    f"{public}/mcp/test", headers={
                        "Accept": "application/json, text/event-stream"},
                    json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert "www-authenticate" not in refused.headers
            error = refused.json()["error"]
            assert error["data"] == {"reason": "store_unavailable", "retry_after_seconds": 1}
            assert grant.token not in refused.text
            # the store back, the same grant goes through the door
            answered = await http.post(
                f"{public}/mcp/test", headers={
                    "Accept": "application/json, text/event-stream"},
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}})
            assert answered.status_code == 200, answered.text
    finally:
        runtime.close()


async def test_a_grant_holds_at_most_its_share_of_mcp_sessions_and_others_open_theirs(
        deployment: Deployment) -> None:
    # the SDK caps the sessions of an endpoint (10,000), not of a grant: one agent could
    # open them all and every other agent's initialize was refused until they idled out
    greedy, other = deployment.grant(), deployment.grant()
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with http_gateway(deployment) as public, httpx2.AsyncClient(
            timeout=WAIT, headers=accept) as http:
        endpoint = f"{public}/mcp/test"

        async def opened(grant: IssuedGrant) -> httpx2.Response:
            return await http.post(endpoint, json=initialize, auth=_auth(grant, deployment))

        sessions = []
        for _ in range(MAX_SESSIONS_PER_GRANT):
            answer = await opened(greedy)
            assert answer.status_code == 200, answer.text
            sessions.append(answer.headers["mcp-session-id"])
        refused = await opened(greedy)
        assert refused.status_code == 429
        assert refused.json()["error"]["data"] == {
            "reason": "session_limit", "max_sessions": MAX_SESSIONS_PER_GRANT}
        assert (await opened(other)).status_code == 200  # another grant is not held back
        ended = await http.delete(endpoint, auth=_auth(greedy, deployment), headers={
            "Mcp-Session-Id": sessions[0], "MCP-Protocol-Version": "2025-06-18"})
        assert ended.status_code == 200, ended.text
        assert (await opened(greedy)).status_code == 200  # one ended: one may open


async def test_an_initialize_spelt_with_escapes_counts_against_the_grants_sessions(
        deployment: Deployment) -> None:
    # the door read a message only when its bytes held `"initialize"`: the same method
    # with a JSON escape in its name (`"\u0069nitialize"`) is the SDK's initialize all
    # the same, and went past the count
    greedy = deployment.grant()
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}
    spelt = json.dumps(initialize).replace('"initialize"', '"\\u0069nitialize"')
    assert '"initialize"' not in spelt
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    async with http_gateway(deployment) as public, httpx2.AsyncClient(
            timeout=WAIT, headers=headers, auth=_auth(greedy, deployment)) as http:
        endpoint = f"{public}/mcp/test"
        for _ in range(MAX_SESSIONS_PER_GRANT):
            answer = await http.post(endpoint, content=spelt)
            assert answer.status_code == 200, answer.text
        refused = await http.post(endpoint, content=spelt)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["data"]["reason"] == "session_limit"


async def test_a_refused_opening_request_leaves_no_session_for_its_grant_to_hold(
        deployment: Deployment) -> None:
    # the SDK names a session in its answer to any request without one, and discards it
    # when that request is refused (only an initialize opens one): the door took every
    # such name for a session of the grant and kept it until the grant's next
    # initialize, so an agent posting bodies that open nothing grew the gateway's memory
    grant = deployment.grant()
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    built: list[Any] = []
    async with http_gateway(deployment, built=built) as public, httpx2.AsyncClient(
            timeout=WAIT, headers=headers, auth=_auth(grant, deployment)) as http:
        [sessions] = [m.kwargs["sessions"] for m in built[0].user_middleware
                      if "sessions" in m.kwargs]
        for body in ('{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', "[]", "{"):
            answer = await http.post(f"{public}/mcp/test", content=body)
            assert answer.status_code >= 400, answer.text
        assert sessions.mcp_owner == {}
        assert sessions.open_count(grant.claims.grant_id) == 0

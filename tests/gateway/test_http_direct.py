"""The HTTP gateway's direct path for a plain ``tools/call`` answers as the MCP SDK's path
does, and takes nothing else.

The same calls go through both paths: plain (the direct path, answered with one JSON
body) and with an empty ``_meta`` (which the direct path leaves to the SDK, answered
as an SSE stream); their answers and audit events are compared. The SDK's SSE answers
(``sse_starlette``) carry ``X-Accel-Buffering``; the direct path's answers do not,
which is how a test tells which path answered. The gateway runs in this process on a
real socket, in front of the tests' server over stdio.

The paths differ in HTTP and MCP, not in the store (both call the same
``Gateway.call_tool``, whose decisions and audit are tested on both backends): the
tests run on SQLite alone, but for revocation, which the gateway hears through the
store's change feed (PostgreSQL's ``LISTEN``/``NOTIFY``)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, search_events
from proctor.clock import SystemClock
from proctor.gateway import GrantAuth, http_direct
from proctor.grants import IssuedGrant
from tests.conftest import sqlite_only
from tests.gateway.conftest import UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import http_gateway

pytestmark = pytest.mark.anyio

ASKING = [*UPSTREAM[:2], "tests.gateway.asking_upstream"]
ACCEPT = "application/json, text/event-stream"
VERSION = "2025-06-18"


class Wire:
    """Raw HTTP to one endpoint with one grant (a bearer and a proof on every POST)."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.session: str | None = None
        self.version = VERSION

    async def open(self) -> None:
        opened = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                  "params": {"protocolVersion": VERSION, "capabilities": {
                                      "elicitation": {}}, "clientInfo": {
                                      "name": "t", "version": "1"}}})
        [answer] = answers(opened)
        self.session = opened.headers["mcp-session-id"]
        self.version = answer["result"]["protocolVersion"]
        done = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202

    def headers(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        headers: dict[str, str | None] = {"Content-Type": "application/json", "Accept": ACCEPT}
        if self.session is not None:
            headers |= {"Mcp-Session-Id": self.session, "MCP-Protocol-Version": self.version}
        headers |= extra or {}
        return {k: v for k, v in headers.items() if v is not None}

    async def post(self, message: Any, *, headers: dict[str, str | None] | None = None
                   ) -> httpx2.Response:
        content = message if isinstance(message, bytes) else json.dumps(message).encode()
        return await self.http.post(self.url, content=content, headers=self.headers(headers))


def answers(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an answer, a JSON body or an SSE stream."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()] if response.content else []
    return [json.loads(line[5:]) for line in response.text.splitlines()
            if line.startswith("data:") and line[5:].strip()]


def took_direct(response: httpx2.Response) -> bool:
    return response.status_code == 200 and "x-accel-buffering" not in response.headers


def call(request_id: Any, name: str, arguments: Any, *, sdk: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if sdk:
        params["_meta"] = {}  # the same call, left to the SDK's path
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def without_ids(value: Any) -> Any:
    """``value`` without the audit event ids of a decision (one per call)."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "event_id"}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def calls_audited(deployment: Deployment, grant: IssuedGrant) -> list[tuple[Any, ...]]:
    """The audit events of ``grant``'s calls to the ``test`` server (refusals aside)."""
    return [e for e in audited(deployment, grant)
            if "test/" in e[1] and e[0] != "gateway.reject" and not e[0].startswith("grant")]


def audited(deployment: Deployment, grant: IssuedGrant) -> list[tuple[Any, ...]]:
    """What the audit log holds for ``grant``'s task, oldest first, ids and times left out."""
    events = search_events(deployment.runtime.store, EventFilter(task=grant.claims.task_id),
                           newest_first=False, limit=1000)
    return [(e.event["action"], e.event["target"], e.event["outcome"],
             json.dumps(e.event.get("decision"), sort_keys=True)) for e in events]


@asynccontextmanager
async def wires(deployment: Deployment, public: str, *grants: IssuedGrant
                ) -> AsyncIterator[list[Wire]]:
    async with AsyncExitStack() as stack:
        opened = []
        for grant in grants:
            http = await stack.enter_async_context(httpx2.AsyncClient(
                auth=GrantAuth(grant.token, deployment.key, SystemClock()), timeout=WAIT))
            wire = Wire(http, f"{public}/mcp/test")
            await wire.open()
            opened.append(wire)
        yield opened


CALLS: list[tuple[str, Any]] = [
    ("echo", {"text": "hello", "count": 2}),
    ("echo", {"text": "a forbidden word"}),      # denied by policy
    ("echo", {}),                                # arguments_invalid
    ("echo", None),                              # arguments null: as {}
    ("echo", {"text": 5}),                       # the wrong type
    ("no_such_tool", {}),                        # tool_unknown
    ("fake_credentials", {}),                    # the output guard redacts
    ("read_env", {"name": "HOME"}),
    ("nested", {"depth": 100}),                  # a result the guard cannot read through
    ("echo", {"text": "x" * 5000, "count": -1}),
]


@sqlite_only
async def test_the_same_calls_get_the_same_answers_and_audit_events_on_both_paths(
        deployment: Deployment) -> None:
    direct_grant, sdk_grant = deployment.grant(), deployment.grant()
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, direct_grant, sdk_grant) as (direct, sdk):
            for n, (name, arguments) in enumerate(CALLS, start=1):
                for request_id in (n, f"call-{n}"):
                    plain = await direct.post(call(request_id, name, arguments))
                    through_sdk = await sdk.post(call(request_id, name, arguments, sdk=True))
                    assert took_direct(plain) and not took_direct(through_sdk)
                    assert plain.headers["content-type"] == "application/json"
                    assert plain.headers["mcp-session-id"] == direct.session
                    [mine], [theirs] = answers(plain), answers(through_sdk)
                    assert mine["id"] == request_id
                    if name == "fake_credentials":  # fresh random values, both redacted
                        text = mine["result"]["content"][0]["text"]
                        assert "ghp_" not in text and "AKIA" not in text
                        assert text.replace("all done", "") != text
                        continue
                    assert without_ids(mine) == without_ids(theirs), (name, arguments)
    assert audited(deployment, direct_grant) == audited(deployment, sdk_grant)
    assert len(audited(deployment, direct_grant)) >= len(CALLS)


@sqlite_only
async def test_the_sdk_client_takes_the_direct_path_for_its_calls(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    seen: list[httpx2.Response] = []

    async def note(response: httpx2.Response) -> None:
        seen.append(response)

    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, httpx2.AsyncClient(
                auth=auth, timeout=WAIT, event_hooks={"response": [note]}) as http, \
                streamable_http_client(f"{public}/mcp/test", http_client=http) as (r, w), \
                ClientSession(r, w) as session:
            await session.initialize()
            seen.clear()
            for text in ("one", "two", "three"):
                echoed = await session.call_tool("echo", {"text": text})
                assert echoed.structured_content == {"text": text, "count": 1}
            with pytest.raises(MCPError, match="policy_forbid"):
                await session.call_tool("echo", {"text": "forbidden"})
    posts = [r for r in seen if r.request.method == "POST"
             and json.loads(r.request.content).get("method") == "tools/call"]
    assert len(posts) == 4 and all(took_direct(r) for r in posts)
    assert all(r.headers["content-type"] == "application/json" for r in posts)


@sqlite_only
async def test_an_upstream_log_and_question_during_a_call_reach_the_agent_on_both_paths(
        deployment: Deployment) -> None:
    direct_grant, sdk_grant = deployment.grant(), deployment.grant()
    seen: dict[str, list[dict[str, Any]]] = {}
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment, ASKING) as public, wires(
                deployment, public, direct_grant, sdk_grant) as (direct, sdk):
            for label, wire, sdk_path in (("direct", direct, False), ("sdk", sdk, True)):
                messages = seen[label] = []
                body = json.dumps(call(7, "echo", {"text": "hi"}, sdk=sdk_path)).encode()
                async with wire.http.stream("POST", wire.url, content=body,
                                            headers=wire.headers()) as streamed:
                    assert streamed.headers["content-type"] == "text/event-stream"
                    assert ("x-accel-buffering" not in streamed.headers) is not sdk_path
                    async for line in streamed.aiter_lines():
                        if not line.startswith("data:") or not line[5:].strip():
                            continue
                        message = json.loads(line[5:])
                        messages.append(message)
                        if message.get("method") == "elicitation/create":
                            said = await wire.post({"jsonrpc": "2.0", "id": message["id"],
                                                    "result": {"action": "accept",
                                                               "content": {"text": "again"}}})
                            assert said.status_code == 202
    for label in ("direct", "sdk"):
        log, asked, done = seen[label]
        assert log["method"] == "notifications/message"
        assert log["params"]["data"] == "asking about hi"
        assert asked["method"] == "elicitation/create"
        assert done["id"] == 7
        assert done["result"]["structuredContent"] == {"text": "again", "count": 1}
    assert without_ids(seen["direct"][2]) == without_ids(seen["sdk"][2])
    assert seen["direct"][1]["params"] == seen["sdk"][1]["params"]
    assert audited(deployment, direct_grant) == audited(deployment, sdk_grant)


@sqlite_only
async def test_a_cancelled_call_is_answered_request_cancelled_on_both_paths(
        deployment: Deployment, tmp_path: Path) -> None:
    grant = deployment.grant()
    answered: dict[str, httpx2.Response] = {}
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, grant) as [wire]:
            for n, sdk_path in enumerate((False, True), start=1):
                started = tmp_path / f"started-{n}"

                async def hang(n: int = n, sdk_path: bool = sdk_path,
                               started: Path = started) -> None:
                    answered[str(n)] = await wire.post(call(
                        n, "hang", {"started": str(started)}, sdk=sdk_path))

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(hang)
                    while not started.exists():  # the upstream has the call
                        await anyio.sleep(0.01)
                    if not sdk_path:  # the same id again while it is in flight: the SDK's
                        again = await wire.post(call(n, "echo", {"text": "twin"}))
                        assert not took_direct(again)
                        assert answers(again)[0]["result"]["structuredContent"]["text"] == "twin"
                    cancelled = await wire.post({"jsonrpc": "2.0",
                                                 "method": "notifications/cancelled",
                                                 "params": {"requestId": n}})
                    assert cancelled.status_code == 202
            assert took_direct(answered["1"]) and not took_direct(answered["2"])
            assert answers(answered["1"]) == [{"jsonrpc": "2.0", "id": 1, "error": {
                "code": -32800, "message": "Request cancelled"}}]
            assert answers(answered["2"]) == [{"jsonrpc": "2.0", "id": 2, "error": {
                "code": -32800, "message": "Request cancelled"}}]
            after = await wire.post(call(3, "echo", {"text": "still here"}))
            assert took_direct(after)


@sqlite_only
async def test_a_call_silent_past_the_keepalive_becomes_a_stream_that_pings(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that waits (for a human's approval: up to two minutes) kept its connection
    silent until the result on the direct path, where the SDK's SSE answer pings every
    15 s: a proxy's idle timeout could cut it. It now turns into a stream that pings."""
    monkeypatch.setattr(http_direct, "KEEPALIVE_SECONDS", 0.05)
    grant = deployment.grant()
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, grant) as [wire]:
            body = json.dumps(call(1, "hang", {})).encode()
            lines: list[str] = []
            async with wire.http.stream("POST", wire.url, content=body,
                                        headers=wire.headers()) as response:
                assert response.headers["content-type"] == "text/event-stream"
                assert "x-accel-buffering" not in response.headers  # the direct path's
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == ": ping" and lines.count(line) == 2:  # then end the call
                        cancelled = await wire.post({
                            "jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 1}})
                        assert cancelled.status_code == 202
            assert lines.count(": ping") >= 2
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
            assert events == [{"jsonrpc": "2.0", "id": 1, "error": {
                "code": -32800, "message": "Request cancelled"}}]


@sqlite_only
async def test_hostile_posts_are_answered_by_the_sdk_or_the_gate_and_change_nothing(
        deployment: Deployment) -> None:
    grant, other = deployment.grant(), deployment.grant()
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, grant, other) as (wire, stranger):
            def decided() -> int:
                """How many calls of ``grant`` were decided (audited), refusals aside."""
                return len(calls_audited(deployment, grant))

            echo = call(1, "echo", {"text": "hostile"})
            refusals: list[tuple[Any, dict[str, str | None], int]] = [
                (echo, {"Mcp-Session-Id": "f" * 32}, 404),  # a session not known here
                (echo, {"Mcp-Session-Id": stranger.session}, 404),  # another grant's
                (echo, {"Accept": "application/json"}, 406),
                (echo, {"Content-Type": "text/plain"}, 400),
                (echo, {"Host": "evil.example"}, 421),
                (echo, {"Origin": "http://evil.example"}, 403),
                (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": '
                 b'"echo", "arguments": {"text": "\xff"}}}', {}, 400),  # not UTF-8
                (call(5, "echo", {"text": "x" * 2_000_000}), {}, 413),
            ]
            for message, headers, status in refusals:
                count = decided()
                refused = await wire.post(message, headers=headers)
                assert refused.status_code == status, (headers, refused.text)
                assert decided() == count
            # a notification shaped like a call is not a call
            count = decided()
            note = await wire.post({"jsonrpc": "2.0", "method": "tools/call",
                                    "params": {"name": "echo", "arguments": {"text": "n"}}})
            assert note.status_code == 202 and not note.content
            assert decided() == count
            # headers that leave the version to the SDK: its path, the same answer
            for version in (None, "2025-03-26", "2099-01-01"):
                left = await wire.post(call(2, "echo", {"text": "v"}),
                                       headers={"MCP-Protocol-Version": version})
                assert not took_direct(left)
            # ids JSON-RPC or MCP do not allow, other shapes, other params, text the SDK's
            # parser reads otherwise than Python's: the SDK or the gate answers each
            for odd in ({**echo, "id": None}, {**echo, "id": True}, {**echo, "id": 1.5},
                        {**echo, "id": {"a": 1}}, [echo], {**echo, "jsonrpc": "1.0"},
                        {**echo, "extra": 1},
                        {**echo, "params": {"name": "echo", "arguments": [1]}},
                        {**echo, "params": {"name": 5, "arguments": {}}},
                        {**echo, "params": {"name": "echo", "arguments": {}, "task": {}}},
                        b'{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": '
                        b'{"name": "echo", "arguments": {"text": "\\ud800"}}}',
                        b"\xef\xbb\xbf" + json.dumps(echo).encode()):
                refused = await wire.post(odd)
                assert not took_direct(refused), odd
            # the same id twice in one session, one after the other: two calls
            for _ in range(2):
                again = await wire.post(call(6, "echo", {"text": "twice"}))
                assert took_direct(again) and answers(again)[0]["id"] == 6
            large = await wire.post(call(2**62, "echo", {"text": "big id"}))
            assert took_direct(large) and answers(large)[0]["id"] == 2**62
            assert "result" in answers(large)[0]


@sqlite_only
async def test_a_call_before_initialize_is_the_sdks_and_is_not_decided(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, httpx2.AsyncClient(
                auth=GrantAuth(grant.token, deployment.key, SystemClock()),
                timeout=WAIT) as http:
            wire = Wire(http, f"{public}/mcp/test")
            early = await wire.post(call(1, "echo", {"text": "early"}))
            assert not took_direct(early)
            assert all("result" not in m for m in answers(early))
            # an initialize the SDK answers with an error opens no direct path either
            failed = await wire.post({"jsonrpc": "2.0", "id": 2, "method": "initialize",
                                      "params": {}})
            session = failed.headers.get("mcp-session-id")
            if session is not None:
                wire.session = session
                refused = await wire.post(call(3, "echo", {"text": "early"}))
                assert not took_direct(refused)
                assert all("result" not in m for m in answers(refused))
    assert not calls_audited(deployment, grant)


async def test_a_revoked_grant_is_refused_by_the_direct_path_as_by_the_sdks(
        deployment: Deployment) -> None:
    direct_grant, sdk_grant = deployment.grant(), deployment.grant()
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, direct_grant, sdk_grant) as (direct, sdk):
            for wire, sdk_path in ((direct, False), (sdk, True)):
                first = await wire.post(call(1, "echo", {"text": "before"}, sdk=sdk_path))
                assert "result" in answers(first)[0]
            for grant in (direct_grant, sdk_grant):
                deployment.runtime.grants.revoke(grant.claims.grant_id, "test")
            plain = await direct.post(call(2, "echo", {"text": "after"}))
            through_sdk = await sdk.post(call(2, "echo", {"text": "after"}, sdk=True))
            if plain.status_code == 200:  # the watch had not closed the session yet
                [mine] = answers(plain)
                assert mine["error"]["data"]["reason"] == "grant_revoked"
            else:
                assert plain.status_code == 401
            if through_sdk.status_code == 200:
                [theirs] = answers(through_sdk)
                assert theirs["error"]["data"]["reason"] == "grant_revoked"
            else:
                assert through_sdk.status_code == 401


@sqlite_only
async def test_an_upstream_question_the_agent_leaves_unanswered_ends_at_the_relay_timeout(
        deployment: Deployment) -> None:
    """An elicitation relayed to an agent that never answers waits
    ``relay_timeout_seconds`` (here 0.5 s, the call's own timeout 60 s): the agent's
    request is cancelled on the call's stream, the upstream is answered a timeout, and
    the call ends with its answer, on both paths."""
    direct_grant, sdk_grant = deployment.grant(), deployment.grant()
    seen: dict[str, list[dict[str, Any]]] = {}
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment, ASKING, {"relay_timeout_seconds": 0.5}) as public, \
                wires(deployment, public, direct_grant, sdk_grant) as (direct, sdk):
            for label, wire, sdk_path in (("direct", direct, False), ("sdk", sdk, True)):
                body = json.dumps(call(7, "echo", {"text": "hi"}, sdk=sdk_path)).encode()
                answered = await wire.http.post(wire.url, content=body, headers=wire.headers())
                seen[label] = answers(answered)
    for label in ("direct", "sdk"):
        log, asked, cancelled, done = seen[label]
        assert log["method"] == "notifications/message"
        assert asked["method"] == "elicitation/create"
        assert cancelled["method"] == "notifications/cancelled"
        assert cancelled["params"]["requestId"] == asked["id"]
        assert done["id"] == 7
        # the upstream's elicitation failed with the gateway's timeout, and it says so
        assert done["error"]["code"] == -32001
        assert "did not answer within 0.5 s" in done["error"]["message"]
    assert without_ids(seen["direct"][3]) == without_ids(seen["sdk"][3])


@sqlite_only
async def test_the_sdk_internals_the_direct_path_reads_are_there_and_a_call_holds_the_idle_timer(
        deployment: Deployment, tmp_path: Path) -> None:
    """The direct path reads the pinned MCP SDK's session manager and server transport
    (a session's transport, its owner, its idle timer): a change of their shape fails
    here, not silently in production (where the direct path would turn itself off). A
    direct call in flight holds the SDK session's idle timer, as the SDK's requests do,
    and its end restarts it."""
    built: list[Any] = []
    grant = deployment.grant()
    started = tmp_path / "started"
    answered: list[httpx2.Response] = []
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment, built=built) as public, wires(
                deployment, public, grant) as [wire]:
            [middleware] = [m for m in built[0].user_middleware if "direct" in m.kwargs]
            direct: http_direct.HttpDirect = middleware.kwargs["direct"]
            manager = direct._managers["/mcp/test"]
            assert http_direct.sdk_shape_missing(manager) == []
            assert direct.enabled
            assert wire.session is not None
            transport = manager._server_instances[wire.session]
            assert transport._requests_in_flight == 0
            assert transport.idle_scope is not None and transport._idle_timeout is not None
            idle_before = transport.idle_scope.deadline
            assert idle_before < math.inf

            async def hang() -> None:
                answered.append(await wire.post(call(1, "hang", {"started": str(started)})))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(hang)
                while not started.exists():  # the upstream has the call
                    await anyio.sleep(0.01)
                assert transport._requests_in_flight == 1
                assert transport.idle_scope.deadline == math.inf
                cancelled = await wire.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                             "params": {"requestId": 1}})
                assert cancelled.status_code == 202
            assert took_direct(answered[0])
            assert transport._requests_in_flight == 0
            assert idle_before <= transport.idle_scope.deadline < math.inf


async def test_a_warm_call_is_decided_on_the_gateways_event_loop(
        deployment: Deployment) -> None:
    # HttpCredentials.decide takes the enforcer's loop entry (decide_call_on_loop): the
    # decision's CPU on the gateway's loop while the views are warm, no worker thread;
    # this process's own writes (the risk fold's new score) keep the agent warm
    grant = deployment.grant()
    enforcer = deployment.runtime.enforcer
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, grant) as (wire,):
            # the first call raises the task's data mark, once: the second reads the task
            for n in (1, 2):
                assert "result" in answers(await wire.post(call(n, "echo", {"text": "w"})))[0]
            on_loop, on_thread = enforcer.decided_on_loop, enforcer.decided_on_thread
            for n in range(3, 9):
                answered = await wire.post(call(n, "echo", {"text": f"call {n}"}))
                assert took_direct(answered)
                [answer] = answers(answered)
                assert answer["result"]["structuredContent"] == {"text": f"call {n}",
                                                                 "count": 1}
    assert enforcer.decided_on_loop > on_loop
    if deployment.runtime.store.backend == "sqlite":  # the feed's news read at each look
        assert (enforcer.decided_on_loop - on_loop, enforcer.decided_on_thread) == (
            6, on_thread)

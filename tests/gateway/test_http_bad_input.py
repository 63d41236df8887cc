"""Bad input to the HTTP gateway gets a JSON-RPC error and the gateway goes on. The
gateway runs in this process on a real socket (the process boundary is not what is
tested here), in front of the tests' server over stdio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.audit import EventFilter, iter_events
from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway
from tests.gateway.test_http_direct import answers, wires

pytestmark = pytest.mark.anyio

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@asynccontextmanager
async def _agent(deployment: Deployment) -> AsyncIterator[tuple[str, httpx2.AsyncClient,
                                                               ClientSession]]:
    """The gateway's URL, an HTTP client with a grant of its own, and an MCP session."""
    auth = GrantAuth(deployment.grant().token, deployment.key, SystemClock())
    async with http_gateway(deployment) as public, httpx2.AsyncClient(
            auth=auth, timeout=WAIT) as http, streamable_http_client(
            f"{public}/mcp/test", http_client=http) as (read, write), ClientSession(
            read, write) as session:
        await session.initialize()
        yield public, http, session


async def test_a_deeply_nested_body_is_refused_and_the_session_goes_on(
        deployment: Deployment) -> None:
    with anyio.fail_after(WAIT):
        async with _agent(deployment) as (public, http, session):
            for depth in (100, 3000):  # past the cap, and past the SDK's parser too
                deep = await http.post(f"{public}/mcp/test", headers=HEADERS, content=(
                    b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": '
                    b'{"name": "echo", "arguments": {"text": ' + b"[" * depth + b"]" * depth
                    + b"}}}"))
                assert deep.status_code == 400, deep.text
                assert deep.json() == {"jsonrpc": "2.0", "id": 7, "error": {
                    "code": -32600, "message": "message_too_deep: a message may nest at "
                    "most 64 levels", "data": {"reason": "message_too_deep",
                                               "max_depth": 64}}}
            echoed = await session.call_tool("echo", {"text": "still here"})
            assert echoed.structured_content == {"text": "still here", "count": 1}


async def test_a_request_with_an_id_of_no_valid_type_is_answered_not_accepted(
        deployment: Deployment) -> None:
    # the SDK's transport read each as a notification (its reader ignores an `id` it cannot
    # take) and answered 202 Accepted: no answer was to come, and none came
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, deployment.grant()) as (wire,):
            for request_id in (b"1.5", b"true", b"null", b'{"a": 1}', b"[7]"):
                for method in (b'"ping"', b'"tools/call", "params": {"name": "echo"}'):
                    refused = await wire.post(b'{"jsonrpc": "2.0", "id": ' + request_id
                                              + b', "method": ' + method + b"}")
                    assert refused.status_code == 400, (request_id, method, refused.text)
                    assert refused.json() == {"jsonrpc": "2.0", "id": None, "error": {
                        "code": -32600, "message": "message_invalid: the message is not a "
                        "valid JSON-RPC request"}}, (request_id, method)
            # a notification is still accepted, and the session goes on
            note = await wire.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert note.status_code == 202
            pong = await wire.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})
            assert answers(pong) == [{"jsonrpc": "2.0", "id": 9, "result": {}}]


async def test_a_message_the_sdk_cannot_validate_is_refused_in_one_line(
        deployment: Deployment) -> None:
    # the SDK's transport answered -32602 with pydantic's text: several lines naming its
    # models and a link to its docs
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, deployment.grant()) as (wire,):
            call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "x"}}}
            for odd, request_id in (([call], None), ({**call, "jsonrpc": "1.0"}, 3),
                                    ({"jsonrpc": "2.0", "id": 4}, 4), ({"id": 5}, 5),
                                    ({"jsonrpc": "2.0", "id": 6, "method": 7}, 6), ("text", None),
                                    ({"jsonrpc": "2.0", "id": 8, "result": 1, "error": {}}, 8)):
                refused = await wire.post(odd)
                assert refused.status_code == 400, (odd, refused.text)
                assert refused.json() == {"jsonrpc": "2.0", "id": request_id, "error": {
                    "code": -32600, "message": "message_invalid: the message is not a "
                    "valid JSON-RPC request"}}, odd
            pong = await wire.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})
            assert answers(pong) == [{"jsonrpc": "2.0", "id": 9, "result": {}}]


@pytest.mark.parametrize("twice", [
    b'"name": "rm_rf", "name": "echo", "arguments": {"text": "x"}',
    b'"name": "echo", "arguments": {"text": "safe", "text": "forbidden"}',
    b'"name": "echo", "arguments": {"text": "x"}, "_meta": {"a": 1, "a": 2}',
])
async def test_a_key_given_twice_is_refused_before_anything_reads_it(
        deployment: Deployment, twice: bytes) -> None:
    """JSON leaves a repeated key to the reader: a call decided on one value and
    forwarded with the other (or audited, or approved, with the other) is never read."""
    with anyio.fail_after(WAIT):
        async with _agent(deployment) as (public, http, session):
            refused = await http.post(f"{public}/mcp/test", headers=HEADERS, content=(
                b'{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {'
                + twice + b"}}"))
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert (refused.json()["id"], error["code"], error["data"]) == (
                8, -32600, {"reason": "message_repeated_key"})
            echoed = await session.call_tool("echo", {"text": "still here"})
            assert echoed.structured_content == {"text": "still here", "count": 1}
    decided = list(iter_events(deployment.runtime.store, EventFilter(action="tool:test/echo")))
    assert len(decided) == 1  # the one call that was served


async def test_a_notification_or_response_giving_a_key_twice_is_dropped_unanswered(
        deployment: Deployment) -> None:
    """JSON-RPC answers neither a notification nor a response: one that gives a key
    twice is dropped as accepted (it was answered an error with a null id; a response's
    error would carry the id of the client's own request); a request's refusal names
    its id wherever it stands."""
    with anyio.fail_after(WAIT):
        async with _agent(deployment) as (public, http, session):
            for body in (b'{"jsonrpc": "2.0", "method": "notifications/progress", "params": '
                         b'{"progressToken": 1, "progress": 1, "progress": 2}}',
                         b'{"jsonrpc": "2.0", "id": 1, "result": {"a": 1, "a": 2}}'):
                dropped = await http.post(f"{public}/mcp/test", headers=HEADERS, content=body)
                assert (dropped.status_code, dropped.content) == (202, b""), dropped.text
            refused = await http.post(f"{public}/mcp/test", headers=HEADERS, content=(
                b'{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", '
                b'"arguments": {"text": "a", "text": "b"}}, "id": 9}'))
            assert refused.status_code == 400, refused.text
            assert (refused.json()["id"], refused.json()["error"]["data"]) == (
                9, {"reason": "message_repeated_key"})
            echoed = await session.call_tool("echo", {"text": "still here"})
            assert echoed.structured_content == {"text": "still here", "count": 1}


async def test_the_key_a_dropped_message_repeats_is_logged_escaped(
        deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    """The key a dropped notification gives twice is the agent's: it was logged raw, so
    an escape sequence, a C1 control or a bidirectional override in it reached the
    operator's terminal; it is logged escaped."""
    key = '\\u001b]0;owned\\u0007\u009b2J\u202e'.encode()
    with anyio.fail_after(WAIT), caplog.at_level("WARNING", logger="proctor.gateway.http"):
        async with _agent(deployment) as (public, http, _session):
            dropped = await http.post(f"{public}/mcp/test", headers=HEADERS, content=(
                b'{"jsonrpc": "2.0", "method": "notifications/progress", "params": '
                b'{"progressToken": 1, "progress": 1, "' + key + b'": 1, "' + key + b'": 2}}'))
            assert dropped.status_code == 202, dropped.text
    [logged] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert not any(c in logged for c in "\x1b\x07\x9b\u202e"), logged
    assert "\\x1b]0;owned\\x07\\x9b2J\\u202e" in logged

"""What an upstream's schemas can make the gateway do: fetch nothing, and check arguments
and results in time linear in them (:mod:`proctor.gateway.schemas`). Told by a real MCP
server listing hostile schemas (``tests/gateway/schema_upstream.py``) behind the real
gateway (``proctor mcp wrap``, in a process of its own: a gateway stalled by a pattern
cannot stall the test, whose every wait is bounded), on both databases.

Before: a ``$ref`` to an HTTP URL was fetched (``urlopen``, on the event loop, unbounded)
at every call of the tool, a ``file:`` one and a ``$ref`` within the schema that does not
resolve raised out of the argument check, and a ``pattern`` was matched by ``re``, which
backtracks (``^([a-z0-9]+\\.?)+$`` against ``"a" * 34 + "!"``: hours)."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, iter_events
from proctor.clock import SystemClock
from proctor.codes import CALL_DENIED, INVALID_PARAMS
from proctor.gateway import GrantAuth
from proctor.grants import IssuedGrant
from tests.gateway.conftest import WAIT, Deployment, connected
from tests.gateway.in_process import gateway_from, listening_socket, url_of
from tests.gateway.schema_upstream import STALLING

pytestmark = pytest.mark.anyio

UPSTREAM = [sys.executable, "-m", "tests.gateway.schema_upstream"]
REFUSED = ["backreference", "file_ref", "remote_ref"]


@pytest.fixture
def fetched() -> Iterator[tuple[str, list[str]]]:
    """A URL whose every fetch is written down (it answers a schema), and those fetches."""
    hits: list[str] = []

    class Schema(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/schema+json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Schema)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/latest/meta-data/iam", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def _upstream(deployment: Deployment, remote: str, name: str = "test") -> list[str]:
    schema = deployment.tmp / "schema.json"
    schema.write_text(json.dumps({"type": "string"}))
    return [*UPSTREAM, name, remote, schema.as_uri()]


def _wrapped(deployment: Deployment, remote: str) -> StdioServerParameters:
    """``proctor mcp wrap`` in front of the schema upstream, for a grant of its tools."""
    return deployment.wrap(deployment.grant([{"tool": "test/*"}]),
                           _upstream(deployment, remote), server="test")


async def _refused(client: Any, tool: str, arguments: dict[str, Any]) -> types.ErrorData:
    with pytest.raises(MCPError) as refused:
        await client.call_tool(tool, arguments)
    return refused.value.error


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_a_tool_whose_schema_refers_outside_it_or_has_no_linear_match_is_refused(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    url, hits = fetched
    params = _wrapped(deployment, url)
    async with connected(params) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert listed.isdisjoint(REFUSED)  # hidden
        assert {"missing_ref", "hostname", "word", "headers", "kind"} <= listed
        for tool in REFUSED:
            error = await _refused(client, tool, {"q": "aa"})
            assert (error.code, error.data["reason"], error.data["tool"]) == (
                CALL_DENIED, "tool_schema_refused", f"test/{tool}")
        assert "outside the schema" in (await _refused(client, "remote_ref", {"q": "x"})).message
        assert "linear-time" in (await _refused(client, "backreference", {"q": "aa"})).message
        # a reference within the schema that does not resolve: refused, never raised
        error = await _refused(client, "missing_ref", {"q": "x"})
        assert (error.code, error.data["reason"]) == (CALL_DENIED, "tool_schema_refused")
        assert "does not resolve" in error.message

        # what is evaluated still is, as ECMA-262 reads it
        assert json.loads(_text(await client.call_tool("kind", {"q": "bug"}))) == {"q": "bug"}
        assert json.loads(_text(await client.call_tool("word", {"q": "abc"}))) == {"q": "abc"}
        assert json.loads(_text(await client.call_tool("headers", {"x-ab": "v"}))) == {
            "x-ab": "v"}
        invalid: list[tuple[str, dict[str, Any]]] = [
            ("kind", {"q": "other"}), ("word", {"q": "abc\n"}), ("headers", {"y": "v"}),
            ("headers", {"x-ab": 1})]
        for tool, arguments in invalid:
            error = await _refused(client, tool, arguments)
            assert (error.code, error.data["reason"]) == (INVALID_PARAMS, "arguments_invalid")
    assert hits == []  # nothing was fetched, ever
    rejected = [(e.event["target"], e.event["detail"]["code"]) for e in iter_events(
        deployment.runtime.store, EventFilter(action="gateway.reject"))]
    assert [r for r in rejected if r[1] == "tool_schema_refused"] == [
        *[(f"test/{tool}", "tool_schema_refused") for tool in REFUSED],
        ("test/remote_ref", "tool_schema_refused"), ("test/backreference", "tool_schema_refused"),
        ("test/missing_ref", "tool_schema_refused")]


async def test_an_argument_that_backtracks_in_re_is_checked_in_linear_time(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    params = _wrapped(deployment, fetched[0])
    async with connected(params) as client:
        with anyio.fail_after(WAIT):  # before: the gateway matched for hours
            error = await _refused(client, "hostname", {"q": STALLING})
        assert (error.code, error.data["reason"]) == (INVALID_PARAMS, "arguments_invalid")
        assert STALLING not in error.message
        answer = await client.call_tool("hostname", {"q": "docs.acme.example"})
        assert json.loads(_text(answer)) == {"q": "docs.acme.example"}


async def test_unique_items_are_checked_in_linear_time(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    params = _wrapped(deployment, fetched[0])
    many = [{"n": n} for n in range(20_000)]  # before: 2,000 took half a minute
    async with connected(params) as client:
        with anyio.fail_after(WAIT):
            error = await _refused(client, "tags", {"tags": [*many, {"n": 1.0}]})
        assert (error.code, error.data["reason"]) == (INVALID_PARAMS, "arguments_invalid")
        for same in ([1, 1.0], [{"a": [None]}, {"a": [None]}]):
            error = await _refused(client, "tags", {"tags": same})
            assert error.data["reason"] == "arguments_invalid"
        answer = await client.call_tool("tags", {"tags": [1, True, "1", [1], {"n": 1}]})
        assert json.loads(_text(answer)) == {"tags": [1, True, "1", [1], {"n": 1}]}


async def test_structured_content_that_backtracks_in_re_is_checked_in_linear_time(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    params = _wrapped(deployment, fetched[0])
    async with connected(params) as client:
        with anyio.fail_after(WAIT):  # before: the gateway matched for hours
            error = await _refused(client, "host_output", {})
        assert error.data["reason"] == "upstream_invalid_result"


async def _agent_on(stack: AsyncExitStack, endpoint: str, grant: IssuedGrant,
                    deployment: Deployment) -> ClientSession:
    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    http = await stack.enter_async_context(httpx2.AsyncClient(auth=auth, timeout=WAIT))
    read, write = await stack.enter_async_context(
        streamable_http_client(endpoint, http_client=http))
    client = await stack.enter_async_context(ClientSession(read, write))
    await client.initialize()
    return client


def _note(result: types.ReadResourceResult) -> str:
    [content] = result.contents
    assert isinstance(content, types.TextResourceContents)
    return content.text


async def test_a_resource_two_upstreams_list_is_read_on_neither_on_the_shared_endpoint(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    """Before: the last upstream to list a URI got its reads on ``/mcp`` (``conf`` took
    ``notes://shared`` from ``test``), decided as its own, answered with its content."""
    sock = listening_socket()
    upstreams = {name: {"command": _upstream(deployment, fetched[0], name)}
                 for name in ("test", "conf")}
    config = deployment.config({
        "gateway": {"public_url": url_of(sock), "listen": url_of(sock)[len("http://"):],
                    "authorization_servers": ["https://proctor.acme.example"]},
        "upstreams": upstreams})
    grant = deployment.grant([{"tool": "test/*"}, {"tool": "conf/*"}])
    template = types.ResourceTemplateReference(type="ref/resource", uri="notes://shared/{page}")
    with anyio.fail_after(WAIT):
        async with gateway_from(deployment, config, sock), AsyncExitStack() as stack:
            shared = await _agent_on(stack, f"{url_of(sock)}/mcp", grant, deployment)
            listed = [str(r.uri) for r in (await shared.list_resources()).resources]
            assert sorted(listed) == sorted(
                ["notes://shared", "notes://test", "notes://shared", "notes://conf"])
            await shared.list_resource_templates()
            for uri in ("notes://shared", "notes://shared/{page}"):
                with pytest.raises(MCPError) as refused:
                    if uri == "notes://shared":
                        await shared.read_resource(uri)
                    else:
                        await shared.complete(template, {"name": "page", "value": "one"})
                error = refused.value.error
                assert (error.code, error.data["reason"]) == (
                    INVALID_PARAMS, "resource_ambiguous")
                assert "/mcp/<server>" in error.message
            # a URI one upstream lists is still its own
            assert _note(await shared.read_resource("notes://test")) == "test's note"
            assert _note(await shared.read_resource("notes://conf")) == "conf's note"
            # and on its server's endpoint, the shared one is that server's
            own = await _agent_on(stack, f"{url_of(sock)}/mcp/test", grant, deployment)
            assert _note(await own.read_resource("notes://shared")) == "test's note"
    rejected = [(e.event["target"], e.event["detail"]["code"]) for e in iter_events(
        deployment.runtime.store, EventFilter(action="gateway.reject"))]
    assert rejected == [("notes://shared", "resource_ambiguous"),
                        ("notes://shared/{page}", "resource_ambiguous")]

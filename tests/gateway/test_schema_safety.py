"""What an upstream's schemas can make the gateway do: fetch nothing, and check arguments
and results in time linear in them (:mod:`proctor.gateway.schemas`). Told by a real MCP
server listing hostile schemas (``tests/gateway/schema_upstream.py``) behind the real
gateway (``proctor mcp wrap``, in a process of its own: a gateway stalled by a pattern
cannot stall the test, whose every wait is bounded), on both databases.

Before: a ``$ref`` to an HTTP URL was fetched (``urlopen``, on the event loop, unbounded)
at every call of the tool, a ``file:`` one and a ``$ref`` within the schema that does not
resolve raised out of the argument check, and a ``pattern`` was matched by ``re``, which
backtracks (``^([a-z0-9]+\\.?)+$`` against ``"a" * 34 + "!"``: hours). Then: a schema
whose references make it exponential (``$defs`` each all of the next twice; arrays whose
items and ``contains`` are both the array's own definition) was evaluated in full, for
seconds or hours, on the event loop every session shares; a reference within the schema
that does not resolve was listed, refused only when called."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack, nullcontext
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
from proctor.errors import GatewayError
from proctor.gateway import GrantAuth, UpstreamConfig
from proctor.gateway.upstream import UpstreamConnection
from proctor.grants import IssuedGrant
from tests.gateway.conftest import WAIT, Deployment, connected
from tests.gateway.heard import sdk_path
from tests.gateway.in_process import gateway_from, listening_socket, url_of
from tests.gateway.schema_upstream import STALLING, deep

pytestmark = pytest.mark.anyio

UPSTREAM = [sys.executable, "-m", "tests.gateway.schema_upstream"]
REFUSED = ["backreference", "exponential", "file_ref", "missing_ref", "remote_ref"]


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
        assert {"hostname", "word", "headers", "kind", "nested"} <= listed
        for tool in REFUSED:
            error = await _refused(client, tool, {"q": "aa"})
            assert (error.code, error.data["reason"], error.data["tool"]) == (
                CALL_DENIED, "tool_schema_refused", f"test/{tool}")
        assert "outside the schema" in (await _refused(client, "remote_ref", {"q": "x"})).message
        assert "linear-time" in (await _refused(client, "backreference", {"q": "aa"})).message
        # a reference within the schema that does not resolve: refused at listing
        assert "does not resolve" in (await _refused(client, "missing_ref", {"q": "x"})).message
        # 2^17 subschemas written out: refused at listing, never evaluated
        with anyio.fail_after(WAIT):  # before: listed, and its calls held the loop seconds
            error = await _refused(client, "exponential", {"q": "x"})
        assert "references written out" in error.message

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
        *[(f"test/{tool}", "tool_schema_refused") for tool in [
            *REFUSED, "remote_ref", "backreference", "missing_ref", "exponential"]]]


async def test_an_argument_whose_check_doubles_at_each_level_is_refused_within_a_budget(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    params = _wrapped(deployment, fetched[0])
    async with connected(params) as client:
        with anyio.fail_after(WAIT):  # before: 2^40 evaluations, on the loop
            error = await _refused(client, "nested", {"q": deep()})
        assert (error.code, error.data["reason"], error.data["tool"]) == (
            CALL_DENIED, "tool_schema_refused", "test/nested")
        assert "budget" in error.message
        # the same schema, an argument it takes in a few steps: checked and served
        shallow_ones: list[list[Any]] = [[], [[]], [[], [[]]]]
        for shallow in shallow_ones:
            answer = await client.call_tool("nested", {"q": shallow})
            assert json.loads(_text(answer)) == {"q": shallow}
        error = await _refused(client, "nested", {"q": [1]})
        assert (error.code, error.data["reason"]) == (INVALID_PARAMS, "arguments_invalid")
    rejected = [(e.event["target"], e.event["detail"]["code"]) for e in iter_events(
        deployment.runtime.store, EventFilter(action="gateway.reject"))]
    assert rejected == [("test/nested", "tool_schema_refused"),
                        ("test/nested", "arguments_invalid")]


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


async def test_structured_content_whose_check_is_exponential_is_refused_on_either_path(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    """The answer's check on the direct path and on the SDK's session (its
    ``validate_tool_result``, which the gateway's session overrides) alike."""
    connection = UpstreamConnection(UpstreamConfig(
        name="test", command=tuple(_upstream(deployment, fetched[0])), pin="off"),
        call_timeout=WAIT)
    async with anyio.create_task_group() as tasks:
        with anyio.fail_after(WAIT):
            await tasks.start(connection.serve)
        try:
            for through_sdk in (False, True):
                for tool, why in (("exponential_output", "invalid"),
                                  ("nested_output", "budget")):
                    with anyio.fail_after(WAIT), pytest.raises(GatewayError) as refused, \
                            sdk_path(connection) if through_sdk else nullcontext():
                        await connection.call_tool(tool, {})
                    assert refused.value.code == "upstream_invalid_result", tool
                    assert (why == "budget") is ("budget" in refused.value.message), tool
                with sdk_path(connection) if through_sdk else nullcontext():
                    answer = await connection.call_tool("kind", {"q": "bug"})
                assert json.loads(_text(answer)) == {"q": "bug"}
        finally:
            connection.close()
    params = _wrapped(deployment, fetched[0])
    async with connected(params) as client:
        for tool in ("exponential_output", "nested_output"):
            with anyio.fail_after(WAIT):  # before: seconds, and hours
                error = await _refused(client, tool, {})
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


async def test_a_sessions_tools_and_refusals_are_those_its_own_listing_made(
        deployment: Deployment, fetched: tuple[str, list[str]]) -> None:
    """Two sessions, each with its upstream, which lists ``flip`` with the schema its file
    holds when it is listed. Before: the registry kept one refusal per tool id, which a
    later session's listing cleared (the first session's calls then found no tool), and
    compared schemas with Python's ``==``: a second session whose upstream listed
    ``{"const": true}`` was checked with the first's ``{"const": 1}``, and allowed ``1``."""
    sock = listening_socket()
    flip = deployment.tmp / "flip.json"
    command = [*_upstream(deployment, fetched[0]), str(flip)]
    config = deployment.config({
        "gateway": {"public_url": url_of(sock), "listen": url_of(sock)[len("http://"):],
                    "authorization_servers": ["https://proctor.acme.example"]},
        "upstreams": {"test": {"command": command, "pin": "off"}}})

    def flip_is(schema: dict[str, Any]) -> None:
        flip.write_text(json.dumps({"type": "object", "properties": {"q": schema}}))

    async def listed(client: ClientSession) -> set[str]:
        return {tool.name for tool in (await client.list_tools()).tools}

    with anyio.fail_after(WAIT):
        async with gateway_from(deployment, config, sock), AsyncExitStack() as stack:
            endpoint = f"{url_of(sock)}/mcp/test"  # its tools by their own names
            flip_is({"type": "string", "pattern": "^(a+)\\1$"})  # refused
            first = await _agent_on(stack, endpoint, deployment.grant([{"tool": "test/*"}]),
                                    deployment)
            assert "flip" not in await listed(first)
            flip_is({"const": 1})
            second = await _agent_on(stack, endpoint, deployment.grant([{"tool": "test/*"}]),
                                     deployment)
            assert "flip" in await listed(second)
            for value in (True, 2):
                error = await _refused(second, "flip", {"q": value})
                assert error.data["reason"] == "arguments_invalid"
            assert json.loads(_text(await second.call_tool("flip", {"q": 1}))) == {"q": 1}
            # the first session's listing still refuses it, as it was refused there
            error = await _refused(first, "flip", {"q": "aa"})
            assert (error.data["reason"], error.data["tool"]) == (
                "tool_schema_refused", "test/flip")
            assert "linear-time" in error.message
            flip_is({"const": True})  # equal to the known schema in Python, not in JSON
            third = await _agent_on(stack, endpoint, deployment.grant([{"tool": "test/*"}]),
                                    deployment)
            assert "flip" not in await listed(third)
            error = await _refused(third, "flip", {"q": 1})
            assert error.data["reason"] == "tool_unknown"
    rejected = [(e.event["target"], e.event["detail"]["code"]) for e in iter_events(
        deployment.runtime.store, EventFilter(action="gateway.reject"))]
    assert rejected == [("test/flip", "arguments_invalid"), ("test/flip", "arguments_invalid"),
                        ("test/flip", "tool_schema_refused"), ("test/flip", "tool_unknown")]

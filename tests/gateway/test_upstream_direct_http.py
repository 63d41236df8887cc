"""A plain ``tools/call`` to a streamable HTTP upstream is posted by the gateway
(proctor.gateway.posts) beside the SDK's session: the same answers as the session's,
the upstream's own messages on the call's stream still reach the session, and what
a broken or hostile server answers is a specific error."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from proctor.errors import GatewayError
from proctor.gateway import UpstreamConfig, keepalive
from proctor.gateway.relay import RelayBoard
from proctor.gateway.upstream import MAX_HANDLING, UpstreamConnection
from tests.gateway.conftest import WAIT
from tests.gateway.heard import Heard, no_guard, sdk_path, steps_heard_in_order
from tests.gateway.in_process import listening_socket, served, url_of
from tests.gateway.upstream_server import create_server

pytestmark = pytest.mark.anyio

SESSION = "hostile-session-1"
TOOLS = ["plain", "wrong_id", "ping_first", "ended", "rpc_error_500", "plain_500", "gone_404",
         "not_json", "text_plain", "accepted", "not_event", "session_checked",
         "lone_surrogate", "byte_order_mark", "sized_json", "sized_event", "endless_json",
         "endless_event", "gzipped", "gzipped_event", "lingering", "flood",
         "progress_elsewhere", "redirected", "redirected_away", "cookie_checked"]
CAP = 1 << 16
_CHUNK = b"x" * (1 << 16)


def _sized(request_id: Any, size: int) -> bytes:
    """A response of ``size`` bytes exactly."""
    head = b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode() + (
        b',"result":{"content":[{"type":"text","text":"')
    tail = b'"}]}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def _endless(head: bytes) -> AsyncIterator[bytes]:
    yield head
    for _ in range(10_000):  # 640 MiB: more than a test could wait for
        yield _CHUNK


class _Hostile:
    """A streamable HTTP MCP server written by hand, answering each tool as named."""

    def __init__(self) -> None:
        self.pinged = anyio.Event()
        self.cancelled: list[Any] = []
        self.cancel_seen = anyio.Event()
        self.released = anyio.Event()  # a lingering stream ends once this is set
        # the GET stream's events (a test's streams); progress_elsewhere answers once
        # its progress is heard
        self.elsewhere: tuple[MemoryObjectSendStream[bytes],
                              MemoryObjectReceiveStream[bytes]] | None = None
        self.progress_heard = anyio.Event()

    async def listen(self, request: Request) -> Response:
        """The GET stream: the events sent to ``elsewhere``."""
        assert self.elsewhere is not None
        receive = self.elsewhere[1]

        async def events() -> AsyncIterator[bytes]:
            yield b": open\n\n"
            async for event in receive:
                yield event
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"mcp-session-id": SESSION})

    async def handle(self, request: Request) -> Response:
        message = json.loads(await request.body())
        method, request_id = message.get("method"), message.get("id")
        if method is None:  # the answer to our ping
            if request_id == "ping-1":
                self.pinged.set()
            return Response(status_code=202)
        if method == "initialize":
            answer = JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"}}},
                headers={"mcp-session-id": SESSION})
            answer.set_cookie("sticky", "node-1")  # a load balancer's, say
            return answer
        if method == "notifications/cancelled":
            self.cancelled.append(message["params"]["requestId"])
            self.cancel_seen.set()
            return Response(status_code=202)
        if method.startswith("notifications/"):
            return Response(status_code=202)
        if method == "resources/read":  # a resource's contents that never end
            return StreamingResponse(_endless(_sized(request_id, 100)[:-5]),
                                     media_type="application/json")
        if method == "tools/list":
            return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": {"tools": [
                {"name": n, "inputSchema": {"type": "object"}} for n in [*TOOLS, "hang"]]}})
        if message["params"]["name"] == "flood":  # 1,000 progress notifications, then its answer
            token = message["params"]["_meta"]["progressToken"]
            return Response("".join(f"event: message\ndata: {json.dumps(note)}\n\n" for note in [
                {"jsonrpc": "2.0", "method": "notifications/progress",
                 "params": {"progressToken": token, "progress": i}} for i in range(1000)] + [
                {"jsonrpc": "2.0", "id": request_id, "result": {"content": [
                    {"type": "text", "text": "answer of flood"}]}}]),
                media_type="text/event-stream")
        if message["params"].get("name") == "progress_elsewhere":  # on the GET stream
            token = message["params"]["_meta"]["progressToken"]
            note = {"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": 1, "message": "elsewhere"}}
            assert self.elsewhere is not None
            await self.elsewhere[0].send(f"event: message\ndata: {json.dumps(note)}\n\n".encode())
            with anyio.fail_after(WAIT):
                await self.progress_heard.wait()
            return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": {
                "content": [{"type": "text", "text": "answer of progress_elsewhere"}]}})
        return await self._call(request, request_id, message["params"]["name"],
                                message["params"].get("arguments") or {})

    async def _call(self, request: Request, request_id: Any, name: str,
                    arguments: dict[str, Any]) -> Response:
        ok = {"jsonrpc": "2.0", "id": request_id,
              "result": {"content": [{"type": "text", "text": f"answer of {name}"}]}}
        if name == "plain" or (name == "redirected" and request.url.path == "/mcp/moved"):
            return JSONResponse(ok)
        if name == "redirected" and request.url.path == "/mcp":  # within its origin
            return Response(status_code=307, headers={"location": "/mcp/moved"})
        if name == "redirected_away":  # to another origin: not followed
            return Response(status_code=307, headers={"location": "http://127.0.0.2:9/mcp"})
        if name == "cookie_checked":
            good = request.cookies.get("sticky") == "node-1"
            return JSONResponse(ok if good else {**ok, "result": {"content": [], "isError": True}})
        if name == "session_checked":
            good = (request.headers.get("mcp-session-id") == SESSION
                    and request.headers.get("mcp-protocol-version") == "2025-11-25")
            return JSONResponse(ok if good else {**ok, "result": {"content": [], "isError": True}})
        if name == "wrong_id":
            return JSONResponse({**ok, "id": "proctor-999999"})
        if name == "ping_first":  # a server request on the call's stream, then the answer
            async def body() -> AsyncIterator[bytes]:
                yield b'event: message\ndata: {"jsonrpc":"2.0","id":"ping-1","method":"ping"}\n\n'
                with anyio.fail_after(WAIT):
                    await self.pinged.wait()
                yield f"event: message\ndata: {json.dumps(ok)}\n\n".encode()
            return StreamingResponse(body(), media_type="text/event-stream")
        if name == "lingering":  # the answer, then the stream stays open
            async def lingering() -> AsyncIterator[bytes]:
                yield f"event: message\ndata: {json.dumps(ok)}\n\n".encode()
                with anyio.move_on_after(WAIT):
                    await self.released.wait()
            return StreamingResponse(lingering(), media_type="text/event-stream")
        if name == "ended":
            note = {"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "info", "data": "bye"}}
            return Response(f"event: message\ndata: {json.dumps(note)}\n\n",
                            media_type="text/event-stream")
        if name == "not_event":
            return Response("event: message\ndata: {oops\n\n", media_type="text/event-stream")
        if name == "rpc_error_500":
            return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": {
                "code": -32001, "message": "the backend said no"}}, status_code=500)
        if name == "plain_500":
            return Response("boom", status_code=500)
        if name == "gone_404":
            return Response("", status_code=404)
        if name == "not_json":
            return Response("{oops", media_type="application/json")
        if name == "lone_surrogate":
            return Response(json.dumps({**ok, "result": {"content": [
                {"type": "text", "text": "\ud800"}]}}), media_type="application/json")
        if name == "byte_order_mark":
            return Response(b"\xef\xbb\xbf" + json.dumps(ok).encode(),
                            media_type="application/json")
        if name == "sized_json":
            return Response(_sized(request_id, arguments["bytes"]),
                            media_type="application/json")
        if name == "sized_event":  # an event of ``bytes`` bytes, its field name included
            data = _sized(request_id, arguments["bytes"] - len(b"data: "))
            return Response(b"data: " + data + b"\n\n", media_type="text/event-stream")
        if name == "endless_json":
            return StreamingResponse(_endless(_sized(request_id, 100)[:-5]),
                                     media_type="application/json")
        if name == "endless_event":
            return StreamingResponse(_endless(b"data: " + _sized(request_id, 100)[:-5]),
                                     media_type="text/event-stream")
        if name == "gzipped":  # 16 times the cap in a body of a few KiB, sent unasked
            document = _sized(request_id, CAP * 16)
            return Response(gzip.compress(document, compresslevel=1),
                            media_type="application/json", headers={"content-encoding": "gzip"})
        if name == "gzipped_event":  # an event of 16 times the cap in a few KiB, unasked
            event = b"event: message\ndata: " + _sized(request_id, CAP * 16) + b"\n\n"
            return Response(gzip.compress(event, compresslevel=1),
                            media_type="text/event-stream", headers={"content-encoding": "gzip"})
        if name == "text_plain":
            return Response("hello", media_type="text/plain")
        if name == "accepted":
            return Response(status_code=202)
        with anyio.fail_after(WAIT):  # hang: until the call is cancelled
            await self.cancel_seen.wait()
        return Response(status_code=500)


@asynccontextmanager
async def _connected(app: Any, *, call_timeout: float = WAIT, max_answer_bytes: int = 4 << 20,
                     relay: RelayBoard | None = None) -> AsyncIterator[UpstreamConnection]:
    sock = listening_socket()
    config = UpstreamConfig(name="up", url=f"{url_of(sock)}/mcp", pin="off")
    async with served(app, sock), anyio.create_task_group() as tasks:
        connection = UpstreamConnection(config, call_timeout=call_timeout,
                                        max_answer_bytes=max_answer_bytes, relay=relay)
        with anyio.fail_after(WAIT):
            await tasks.start(connection.serve)
        try:
            yield connection
        finally:
            connection.close()


def _hostile_app(hostile: _Hostile, *, listening: bool = False) -> Starlette:
    """``listening``: it serves a GET stream (else 405, as a server without one)."""
    return Starlette(routes=[Route("/mcp", hostile.handle, methods=["POST"]),
                             Route("/mcp/moved", hostile.handle, methods=["POST"]),
                             *([Route("/mcp", hostile.listen, methods=["GET"])]
                               if listening else []),
                             Route("/mcp", lambda r: Response(status_code=405),
                                   methods=["GET", "DELETE"])])


async def _answer(connection: UpstreamConnection, name: str, arguments: dict[str, Any], *,
                  sdk: bool = False, progress: ProgressFnT | None = None) -> Any:
    """The call's result as JSON, or its error's code (and message): posted by the
    gateway, or through the SDK's session (``sdk``)."""
    try:
        with anyio.fail_after(WAIT), sdk_path(connection) if sdk else nullcontext():
            result = await connection.call_tool(name, arguments, progress=progress)
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    except GatewayError as exc:
        return ("gateway", exc.code)
    except MCPError as exc:
        return ("rpc", exc.code, exc.message)


async def test_a_posted_call_answers_as_the_sdk_session_answers() -> None:
    async with _connected(create_server().streamable_http_app()) as connection:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("echo", {"text": "héllo \u2028", "count": 2}), ("env_digest", {"name": "PATH"}),
            ("nested", {"depth": 4}), ("echo", {"text": 3})]
        for name, arguments in calls:
            direct = await _answer(connection, name, arguments)
            through_sdk = await _answer(connection, name, arguments, sdk=True)
            assert direct == through_sdk, name


@pytest.mark.parametrize("name", ["plain", "session_checked", "ping_first", "rpc_error_500",
                                  "plain_500", "gone_404", "redirected", "cookie_checked"])
async def test_a_hostile_servers_answer_is_the_same_posted_or_through_the_sdk(
        name: str) -> None:
    hostile = _Hostile()
    async with _connected(_hostile_app(hostile)) as connection:
        direct = await _answer(connection, name, {})
        hostile.pinged = anyio.Event()
        through_sdk = await _answer(connection, name, {}, sdk=True)
        assert direct == through_sdk
        if name in ("plain", "session_checked", "ping_first", "redirected", "cookie_checked"):
            assert direct["content"][0]["text"] == f"answer of {name}"


async def test_a_posted_call_redirected_off_its_upstreams_origin_is_not_followed() -> None:
    async with _connected(_hostile_app(_Hostile())) as connection:
        assert await _answer(connection, "redirected_away", {}) == (
            "gateway", "upstream_invalid_result")
        # and the connection serves on
        assert (await _answer(connection, "plain", {}))["content"][0]["text"] == "answer of plain"


@pytest.mark.parametrize("name", ["wrong_id", "ended", "not_event", "not_json", "text_plain",
                                  "accepted", "lone_surrogate", "byte_order_mark"])
async def test_an_answer_that_is_not_the_calls_response_is_refused(name: str) -> None:
    async with _connected(_hostile_app(_Hostile())) as connection:
        assert await _answer(connection, name, {}) == (
            "gateway", "upstream_invalid_result")
        answer = await _answer(connection, "plain", {})
        assert answer["content"][0]["text"] == "answer of plain"


async def test_a_posted_call_that_times_out_is_cancelled_at_the_upstream() -> None:
    hostile = _Hostile()
    async with _connected(_hostile_app(hostile), call_timeout=0.5) as connection:
        assert await _answer(connection, "hang", {}) == ("gateway", "upstream_timeout")
        with anyio.fail_after(WAIT):
            await hostile.cancel_seen.wait()
        assert str(hostile.cancelled[0]).startswith("proctor-")


@pytest.mark.parametrize("name", ["sized_json", "sized_event"])
async def test_an_answer_over_the_cap_is_refused_and_the_connection_serves_on(
        name: str) -> None:
    async with _connected(_hostile_app(_Hostile()), max_answer_bytes=CAP) as connection:
        answer = await _answer(connection, name, {"bytes": CAP})
        assert len(answer["content"][0]["text"]) > CAP - 100
        assert await _answer(connection, name, {"bytes": CAP + 1}) == (
            "gateway", "upstream_result_too_large")
        answer = await _answer(connection, "plain", {})
        assert answer["content"][0]["text"] == "answer of plain"


@pytest.mark.parametrize("name", ["endless_json", "endless_event"])
async def test_an_answer_that_never_ends_is_refused_at_the_cap(name: str) -> None:
    # 640 MiB in one body or event: only a read that stops at the cap answers in time
    async with _connected(_hostile_app(_Hostile()), max_answer_bytes=CAP) as connection:
        assert await _answer(connection, name, {}) == (
            "gateway", "upstream_result_too_large")
        answer = await _answer(connection, "plain", {})
        assert answer["content"][0]["text"] == "answer of plain"


@pytest.mark.parametrize("name", ["sized_json", "sized_event"])
async def test_the_sdks_transport_reads_bodies_and_events_under_the_same_cap(name: str) -> None:
    async with _connected(_hostile_app(_Hostile()), max_answer_bytes=CAP) as connection:
        answer = await _answer(connection, name, {"bytes": CAP}, sdk=True)
        assert len(answer["content"][0]["text"]) > CAP - 100
        # under the SDK's own 1 MiB event limit (and its unbounded JSON read), over the
        # gateway's cap: the call is refused, the SDK's connection serves on
        assert await _answer(connection, name, {"bytes": CAP + 1}, sdk=True) == (
            "gateway", "upstream_result_too_large")
        assert connection.is_open
        answer = await _answer(connection, "plain", {}, sdk=True)
        assert answer["content"][0]["text"] == "answer of plain"


async def test_the_sdks_reads_of_a_body_that_never_ends_stop_at_the_cap() -> None:
    # 640 MiB in a call's answer, and in a resource's: read whole by the SDK before
    async with _connected(_hostile_app(_Hostile()), max_answer_bytes=CAP) as connection:
        assert await _answer(connection, "endless_json", {}, sdk=True) == (
            "gateway", "upstream_result_too_large")
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as refused:
            await connection.read_resource("notes://endless")
        assert refused.value.code == "upstream_result_too_large"
        answer = await _answer(connection, "plain", {}, sdk=True)
        assert answer["content"][0]["text"] == "answer of plain"


@pytest.mark.parametrize("sdk", [False, True], ids=["posted", "sdk"])
async def test_a_body_encoded_unasked_is_refused_unread(sdk: bool) -> None:
    """The gateway asks for bodies as they are; a compressed one (16 times the cap in a
    few KiB) is refused before it is decoded, posted or through the SDK."""
    async with _connected(_hostile_app(_Hostile()), max_answer_bytes=CAP) as connection:
        assert await _answer(connection, "gzipped", {}, sdk=sdk) == (
            "gateway", "upstream_invalid_result")
        answer = await _answer(connection, "plain", {}, sdk=sdk)
        assert answer["content"][0]["text"] == "answer of plain"


async def test_a_calls_log_messages_reach_the_agent_in_order_before_its_answer() -> None:
    """A server that logs during a call (the tests' upstream, which does not declare
    logging): every log line on the call's stream is relayed to the call's agent, in
    order, before the call returns, with no timing assumption (the relay hops to a
    thread for each line)."""
    board = no_guard()
    async with _connected(create_server().streamable_http_app(), relay=board) as connection:
        posts = connection._posts
        assert posts is not None
        for count in (1, 40):
            heard = Heard()
            with board.during(heard, "up"), anyio.fail_after(WAIT):
                result = await connection.call_tool("chatty", {"count": count})
                lines = list(heard.lines)  # as the call returns, before anything else runs
            assert result.content[0].model_dump()["text"] == f"logged {count} lines"
            assert lines == [f"line {n}" for n in range(count)]
        assert next(posts._ids) == 3  # both calls were posted by the gateway


@pytest.mark.parametrize("count", [1, 300])
async def test_a_calls_progress_reaches_it_in_order_before_its_answer(count: int) -> None:
    """A call that asks for progress (a real SDK server reporting ``count`` steps right
    before it answers, on the call's stream): every report is relayed in order before
    the answer is read, with no timing assumption (the callback hops to a thread for
    each); a report under a token the call did not give is dropped."""
    async with _connected(create_server().streamable_http_app()) as connection:
        posts = connection._posts
        assert posts is not None
        await steps_heard_in_order(connection, count)
        assert next(posts._ids) == 3  # both calls were posted by the gateway


async def test_a_posted_calls_progress_on_the_get_stream_reaches_it() -> None:
    """An upstream that reports a posted call's progress on its GET stream rather than
    the call's: the report is relayed to the call (the SDK's session would drop it, its
    token the call's own id); the upstream answers only once it is heard."""
    hostile = _Hostile()
    send, receive = anyio.create_memory_object_stream[bytes](10)
    hostile.elsewhere = (send, receive)
    with send, receive:
        await _progress_elsewhere(hostile)


async def _progress_elsewhere(hostile: _Hostile) -> None:
    async with _connected(_hostile_app(hostile, listening=True)) as connection:
        heard: list[tuple[float, float | None, str | None]] = []

        async def reports(progress: float, total: float | None, message: str | None) -> None:
            heard.append((progress, total, message))
            hostile.progress_heard.set()

        with anyio.fail_after(WAIT):
            result = await connection.call_tool("progress_elsewhere", {}, progress=reports)
        assert result.content[0].model_dump()["text"] == "answer of progress_elsewhere"
        assert heard == [(1.0, None, "elsewhere")]


async def test_a_posted_calls_answer_does_not_wait_for_its_stream_to_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream may keep a call's event stream open after its answer: the posted
    call returns with the answer, and what is left of the stream is read after it (for
    the connection's reuse), as the SDK's transport does. The drain's bound is set past
    the test's wait here, so a call that waited for the stream's end would not return;
    the next call is sent once it has ended."""
    monkeypatch.setattr(keepalive, "DRAIN_SECONDS", WAIT * 2)
    hostile = _Hostile()
    async with _connected(_hostile_app(hostile)) as connection:
        answer = await _answer(connection, "lingering", {})
        assert answer["content"][0]["text"] == "answer of lingering"
        hostile.released.set()
        answer = await _answer(connection, "plain", {})
        assert answer["content"][0]["text"] == "answer of plain"


async def test_an_event_stream_encoded_unasked_is_refused_unread() -> None:
    """An event stream's cap counts decoded lines, after a whole chunk is decoded: one
    that comes compressed all the same (16 times the cap in a few KiB) is refused before
    it is decoded, posted or through the SDK's transport: the call is
    upstream_invalid_result and the session serves on (through the SDK's transport it
    was upstream_unavailable, the session's connection lost)."""
    async with _connected(_hostile_app(_Hostile()), max_answer_bytes=CAP) as connection:
        assert await _answer(connection, "gzipped_event", {}) == (
            "gateway", "upstream_invalid_result")
        answer = await _answer(connection, "plain", {})
        assert answer["content"][0]["text"] == "answer of plain"
        assert await _answer(connection, "gzipped_event", {}, sdk=True) == (
            "gateway", "upstream_invalid_result")
        assert connection.is_open
        answer = await _answer(connection, "plain", {}, sdk=True)
        assert answer["content"][0]["text"] == "answer of plain"


async def test_an_upstreams_flood_of_notifications_holds_a_bounded_number_of_tasks() -> None:
    """The SDK's session hands each notification to its handler in a task of its own:
    1,000 progress notifications an agent is slow to take held 1,000 tasks (a flood
    without end, memory without end). At most MAX_HANDLING are handled at once, the
    others dropped; the call is answered. (A posted call's progress is relayed as it
    is read, one report at a time: the slow agent holds the stream, not tasks.)"""
    release = anyio.Event()
    started: list[float] = []

    async def slow_agent(progress: float, total: float | None, message: str | None) -> None:
        started.append(progress)
        await release.wait()

    async with _connected(_hostile_app(_Hostile())) as connection:
        answer = await _answer(connection, "flood", {}, sdk=True, progress=slow_agent)
        assert answer["content"][0]["text"] == "answer of flood"
        await anyio.wait_all_tasks_blocked()
        assert 0 < len(started) <= MAX_HANDLING
        release.set()
        answer = await _answer(connection, "plain", {}, sdk=True)
        assert answer["content"][0]["text"] == "answer of plain"


async def test_an_answered_event_streams_reader_is_read_to_its_end_not_left_to_the_collector(
        ) -> None:
    """httpx2's reader of an event stream is three async generators (the events, the
    text, the bytes); a posted call returns at its answer, mid-stream. Left suspended,
    each was closed by the garbage collector's asyncio hook, which starts a task for
    it through the loop's self-pipe: three tasks and wake-ups a call. They are read to
    their end where the stream's rest is read (after the answer), and end there."""
    firstiter, finalizer = sys.get_asyncgen_hooks()
    left: list[str] = []

    def collected(generator: Any) -> None:
        if "httpx2" in generator.ag_code.co_filename:
            left.append(generator.ag_code.co_qualname)
        assert finalizer is not None
        finalizer(generator)

    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=collected)
    try:
        async with _connected(create_server().streamable_http_app()) as connection:
            await anyio.wait_all_tasks_blocked()
            left.clear()  # the SDK's session's (its handshake and listing)
            for count in range(1, 6):
                answer = await _answer(connection, "echo", {"text": "ping", "count": count})
                assert answer["structuredContent"] == {"text": "ping", "count": count}
            await anyio.wait_all_tasks_blocked()
            assert left == []
    finally:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)

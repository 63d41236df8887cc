"""The agent-facing stdio transport over real pipes: a size cap that never holds an
oversized line whole, answers for lines that are not JSON-RPC, and a stop that lets the
last answers out first; each with calls through the SDK's server and on the direct path
(``calls``), which must answer as the SDK's server does."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.lowlevel.server import Server
from pydantic import BaseModel

from proctor.gateway.relay import Relay
from proctor.gateway.rpc import rpc_error
from proctor.gateway.stdio import DirectCalls, PipeReader, PipeWriter, StdioTransport

pytestmark = pytest.mark.anyio

WAIT = 10
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Agent:
    """The other end of the pipes."""

    def __init__(self, to_gateway: PipeWriter, from_gateway: PipeReader) -> None:
        self.writer, self.reader = to_gateway, from_gateway
        self.buffer = b""

    async def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        await self.writer.send(data + b"\n")

    async def answer(self) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while b"\n" not in self.buffer:
                self.buffer += await self.reader.receive()
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer


@asynccontextmanager
async def serving(server: Server[Any], *, max_bytes: int, stop: anyio.Event | None = None,
                  calls: DirectCalls | None = None, init: bool = True) -> AsyncIterator[Agent]:
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    transport = StdioTransport(PipeReader(in_read), PipeWriter(out_write),
                               max_message_bytes=max_bytes, calls=calls)
    agent = Agent(PipeWriter(in_write), PipeReader(out_read))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: transport.serve(server, stop=stop))
        if init:
            await agent.send(INIT)
            assert "result" in await agent.answer()
        yield agent
        await agent.writer.aclose()
    await agent.reader.aclose()


async def _echo(name: str, arguments: dict[str, Any] | None, release: anyio.Event | None,
                entered: anyio.Event | None) -> types.CallToolResult:
    if entered is not None:
        entered.set()
    if release is not None:
        await release.wait()
    if name == "refused":
        raise rpc_error("policy_forbid", "no", tool="t/refused")
    if name == "broken":
        raise RuntimeError("broken tool")
    if name == "unwritable":
        return types.CallToolResult(content=[types.TextContent(type="text", text="\ud800")])
    text = json.dumps(arguments or {})  # the gateway's handler passes `arguments or {}`
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def _server(release: anyio.Event | None = None, entered: anyio.Event | None = None,
            seen: list[str] | None = None) -> Server[Any]:
    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if seen is not None:
            seen.append(f"sdk:{params.name}")
        return await _echo(params.name, params.arguments, release, entered)
    return Server("t", on_call_tool=call_tool)


def _direct(direct: bool, release: anyio.Event | None = None,
            entered: anyio.Event | None = None, seen: list[str] | None = None
            ) -> DirectCalls | None:
    """The same tool on the direct path (or None: calls go through the SDK's server)."""
    async def call(name: str, arguments: dict[str, Any], relay: Relay) -> BaseModel:
        if seen is not None:
            seen.append(f"direct:{name}")
        return await _echo(name, arguments, release, entered)
    return call if direct else None


@pytest.mark.parametrize("direct", [False, True])
async def test_an_oversized_line_is_refused_with_its_id_and_the_next_one_is_served(
        direct: bool) -> None:
    async with serving(_server(), max_bytes=2048, calls=_direct(direct)) as agent:
        big = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"text": "x" * 1_000_000}}}
        await agent.send(big)
        refused = await agent.answer()
        assert (refused["id"], refused["error"]["code"]) == (2, -32600)
        assert refused["error"]["message"].startswith("message_too_large")
        await agent.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "small"}}})
        served = await agent.answer()
        assert served["id"] == 3 and "small" in served["result"]["content"][0]["text"]


@pytest.mark.parametrize("direct", [False, True])
async def test_lines_that_are_not_json_rpc_are_answered_not_dropped(direct: bool) -> None:
    async with serving(_server(), max_bytes=4096, calls=_direct(direct)) as agent:
        await agent.send(b"{not json")
        assert (await agent.answer())["error"] == {
            "code": -32700, "message": "parse_error: the message is not JSON"}
        await agent.send(b'{"jsonrpc": "2.0", "id": "a-1", "params": {}}')
        answer = await agent.answer()
        assert (answer["id"], answer["error"]["code"]) == ("a-1", -32600)
        await agent.send(b"[1, 2, 3]")
        answer = await agent.answer()
        assert (answer["id"], answer["error"]["code"]) == (None, -32600)


@pytest.mark.parametrize("direct", [False, True])
async def test_a_request_with_an_id_of_no_valid_type_is_answered_not_dropped(
        direct: bool) -> None:
    # the SDK's reader took each for a notification (it ignores an `id` it cannot
    # take) and dropped it: the agent waited for an answer that never came
    async with serving(_server(), max_bytes=4096, calls=_direct(direct)) as agent:
        for request_id in (b"1.5", b"true", b"null", b'{"a": 1}', b"[7]"):
            for method in (b'"ping"', b'"tools/call", "params": {"name": "echo"}'):
                await agent.send(b'{"jsonrpc": "2.0", "id": ' + request_id
                                 + b', "method": ' + method + b"}")
                answer = await agent.answer()
                assert answer == {"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32600, "message": "message_invalid: the message is not a "
                    "valid JSON-RPC request"}}, (request_id, method)
        # a notification is still not answered: the next answer is the next request's
        await agent.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        await agent.send({"jsonrpc": "2.0", "id": 9, "method": "ping"})
        assert (await agent.answer()) == {"jsonrpc": "2.0", "id": 9, "result": {}}


@pytest.mark.parametrize("direct", [False, True])
async def test_nested_lines_and_unwritable_ids_are_answered_and_the_next_line_served(
        direct: bool) -> None:
    async with serving(_server(), max_bytes=1 << 20, calls=_direct(direct)) as agent:
        ids = []
        for line in (b'{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": '
                     + b"[" * 6000 + b"]" * 6000 + b"}",
                     b"[" * 6000):
            await agent.send(line)
            answer = await agent.answer()
            assert answer["error"]["data"] == {"reason": "message_too_deep", "max_depth": 64}
            ids.append(answer["id"])
        assert ids == [4, None]
        # a lone surrogate: JSON text can carry it, JSON output cannot (the writer died)
        await agent.send(b'{"jsonrpc": "2.0", "id": "\\ud800", "method": 5}')
        answer = await agent.answer()
        assert (answer["id"], answer["error"]["code"]) == (None, -32600)
        await agent.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "still here"}}})
        served = await agent.answer()
        assert served["id"] == 5 and "still here" in served["result"]["content"][0]["text"]


@pytest.mark.parametrize("direct", [False, True])
async def test_a_stop_answers_the_requests_in_flight_before_the_wire_closes(
        direct: bool) -> None:
    release, entered, stop = anyio.Event(), anyio.Event(), anyio.Event()
    async with serving(_server(release, entered), max_bytes=4096, stop=stop,
                       calls=_direct(direct, release, entered)) as agent:
        await agent.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                          "params": {"name": "slow", "arguments": {"n": 1}}})
        with anyio.fail_after(WAIT):
            await entered.wait()
        stop.set()  # as a closing session does, while the call is still running
        release.set()
        answer = await agent.answer()
        assert answer["id"] == 9 and "result" in answer
        with anyio.fail_after(WAIT), pytest.raises(anyio.EndOfStream):
            while True:  # then the gateway closes its end
                agent.buffer += await agent.reader.receive()


CALLS: list[dict[str, Any]] = [  # each answered the same on both paths
    {"jsonrpc": "2.0", "id": 20, "method": "tools/call",
     "params": {"name": "echo", "arguments": {"text": "caf\u00e9"}}},
    {"jsonrpc": "2.0", "id": "s-21", "method": "tools/call", "params": {"name": "echo"}},
    {"jsonrpc": "2.0", "id": 22, "method": "tools/call",
     "params": {"name": "refused", "arguments": {}}},
    {"jsonrpc": "2.0", "id": 23, "method": "tools/call",
     "params": {"name": "broken", "arguments": {}}},
    {"jsonrpc": "2.0", "id": 24, "method": "tools/call",
     "params": {"name": "unwritable", "arguments": {}}},
]


async def test_the_direct_path_answers_as_the_sdks_server_does() -> None:
    answers: dict[bool, list[dict[str, Any]]] = {}
    for direct in (False, True):
        seen: list[str] = []
        async with serving(_server(seen=seen), max_bytes=4096,
                           calls=_direct(direct, seen=seen)) as agent:
            answers[direct] = []
            for call in CALLS:
                await agent.send(call)
                answers[direct].append(await agent.answer())
        side = "direct" if direct else "sdk"
        assert seen == [f"{side}:{c['params']['name']}" for c in CALLS]
    assert answers[True] == answers[False]
    assert answers[True][2]["error"]["data"]["reason"] == "policy_forbid"
    assert answers[True][4]["error"]["code"] == -32603  # the SDK's: a lone surrogate


UNREADABLE = [  # refused by the SDK's parser: never a call, on either path
    b'{"jsonrpc":"2.0","id":50,"method":"tools/call","params":{"name":"echo\\ud800"}}',
    b'{"jsonrpc":"2.0","id":51,"method":"tools/call",'
    b'"params":{"name":"echo","arguments":{"text":"a\\udc00"}}}',
    b'{"jsonrpc":"2.0","id":52,"method":"tools/call",'
    b'"params":{"name":"echo","arguments":{"text":"\xed\xa0\x80"}}}',  # one, as UTF-8
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":53,"method":"tools/call","params":{"name":"echo"}}',
]


async def test_a_call_the_sdks_parser_refuses_is_refused_on_the_direct_path_too() -> None:
    """A lone surrogate (escaped, or encoded as UTF-8 cannot) and a byte-order mark: the
    SDK's parser refuses the line, Python's json module reads it; the direct path handed
    the gateway a tool name it could not encode (an error with code 0 and Python's
    message, nothing audited) and an upstream arguments it could not encode."""
    answers: dict[bool, list[dict[str, Any]]] = {}
    for direct in (False, True):
        seen: list[str] = []
        async with serving(_server(seen=seen), max_bytes=4096,
                           calls=_direct(direct, seen=seen)) as agent:
            answers[direct] = []
            for line in UNREADABLE:
                await agent.send(line)
                answers[direct].append(await agent.answer())
            # a pair is an emoji: read, and served on the path it takes
            await agent.send(b'{"jsonrpc":"2.0","id":54,"method":"tools/call",'
                             b'"params":{"name":"echo","arguments":{"t":"\\ud83d\\ude00"}}}')
            served = await agent.answer()
            assert served["id"] == 54 and "\\ud83d\\ude00" in served["result"]["content"][0]["text"]
        assert seen == ["direct:echo" if direct else "sdk:echo"]
    assert answers[True] == answers[False]
    assert [(a["id"], a["error"]["code"]) for a in answers[True]] == [
        (50, -32600), (51, -32600), (52, -32600), (53, -32600)]


async def test_calls_the_direct_path_does_not_take_go_through_the_sdks_server() -> None:
    seen: list[str] = []
    async with serving(_server(seen=seen), max_bytes=4096, calls=_direct(True, seen=seen),
                       init=False) as agent:
        # before initialize: the SDK's server answers (it refuses the call)
        await agent.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "early", "arguments": {}}})
        assert "error" in await agent.answer()
        await agent.send(INIT)
        assert "result" in await agent.answer()
        for n, params in enumerate([
                {"name": "meta", "arguments": {}, "_meta": {"progressToken": 7}},
                {"name": "task", "arguments": {}, "task": {"ttl": 1000}},
                {"name": "plain", "arguments": {"a": 1}}], start=2):
            await agent.send({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                              "params": params})
            assert (await agent.answer())["id"] == n
    assert seen[0] == "sdk:meta" and seen[-1] == "direct:plain"
    assert "direct:meta" not in seen and "direct:task" not in seen


async def test_a_cancelled_direct_call_is_not_answered() -> None:
    release, entered = anyio.Event(), anyio.Event()
    async with serving(_server(), max_bytes=4096,
                       calls=_direct(True, release, entered)) as agent:
        await agent.send({"jsonrpc": "2.0", "id": 30, "method": "tools/call",
                          "params": {"name": "slow", "arguments": {}}})
        with anyio.fail_after(WAIT):
            await entered.wait()
        await agent.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": 30, "reason": "no longer needed"}})
        await agent.send({"jsonrpc": "2.0", "id": 31, "method": "ping"})
        assert await agent.answer() == {"jsonrpc": "2.0", "id": 31, "result": {}}
        release.set()
        await agent.send({"jsonrpc": "2.0", "id": 32, "method": "ping"})
        assert (await agent.answer())["id"] == 32  # and never an answer for 30


async def test_a_direct_call_relays_an_upstream_request_to_the_agent_and_back() -> None:
    answers: list[Any] = []

    async def call(name: str, arguments: dict[str, Any], relay: Relay) -> BaseModel:
        request = types.ElicitRequest(params=types.ElicitRequestFormParams(
            message="which?", requested_schema={"type": "object", "properties": {}}))
        answers.append(await relay.request(request, types.ElicitResult))
        try:
            await relay.request(request, types.ElicitResult)
        except Exception as exc:  # the agent's error, as the SDK raises it
            answers.append(exc)
        return types.CallToolResult(content=[types.TextContent(type="text", text="done")])

    async with serving(_server(), max_bytes=4096, calls=call) as agent:
        await agent.send({"jsonrpc": "2.0", "id": 40, "method": "tools/call",
                          "params": {"name": "asks", "arguments": {}}})
        asked = await agent.answer()
        assert asked["method"] == "elicitation/create"
        assert asked["params"]["message"] == "which?"
        await agent.send({"jsonrpc": "2.0", "id": asked["id"],
                          "result": {"action": "accept", "content": {}}})
        asked_again = await agent.answer()
        assert asked_again["id"] != asked["id"]
        await agent.send({"jsonrpc": "2.0", "id": asked_again["id"],
                          "error": {"code": -1, "message": "declined"}})
        done = await agent.answer()
        assert done["id"] == 40 and done["result"]["content"][0]["text"] == "done"
    assert isinstance(answers[0], types.ElicitResult) and answers[0].action == "accept"
    assert getattr(answers[1], "code", None) == -1


async def test_an_answer_or_cancellation_naming_tools_call_reaches_the_direct_path() -> None:
    """The agent's answer to a request of the transport's whose content is the text
    "tools/call" settled nothing (the line was taken for a call, then left to the SDK's
    server): the call waited for ever. A cancellation whose reason is that text cancels."""
    release, entered = anyio.Event(), anyio.Event()

    async def call(name: str, arguments: dict[str, Any], relay: Relay) -> BaseModel:
        if name == "slow":
            return await _echo(name, arguments, release, entered)
        request = types.ElicitRequest(params=types.ElicitRequestFormParams(
            message="which?", requested_schema={"type": "object", "properties": {}}))
        answer = await relay.request(request, types.ElicitResult)
        return types.CallToolResult(content=[types.TextContent(
            type="text", text=json.dumps(answer.content))])

    async with serving(_server(), max_bytes=4096, calls=call) as agent:
        await agent.send({"jsonrpc": "2.0", "id": 60, "method": "tools/call",
                          "params": {"name": "asks", "arguments": {}}})
        asked = await agent.answer()
        await agent.send({"jsonrpc": "2.0", "id": asked["id"],
                          "result": {"action": "accept", "content": {"next": "tools/call"}}})
        done = await agent.answer()
        assert done["id"] == 60 and "tools/call" in done["result"]["content"][0]["text"]

        await agent.send({"jsonrpc": "2.0", "id": 61, "method": "tools/call",
                          "params": {"name": "slow", "arguments": {}}})
        with anyio.fail_after(WAIT):
            await entered.wait()
        await agent.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": 61, "reason": "tools/call"}})
        await agent.send({"jsonrpc": "2.0", "id": 62, "method": "ping"})
        assert (await agent.answer())["id"] == 62
        release.set()
        await agent.send({"jsonrpc": "2.0", "id": 63, "method": "ping"})
        assert (await agent.answer())["id"] == 63  # and never an answer for 61


async def test_a_transport_that_stopped_reading_starts_no_more_calls_from_the_pipe() -> None:
    """Once its reading ends (a revocation's stop), the transport takes no line from the
    agent's pipe: the pipe stayed watched with the direct path's callback set, which
    went on starting the calls of lines the agent sent, in a transport that was ending,
    until the pipe was closed (here a call still running keeps it open)."""
    release, entered, stop = anyio.Event(), anyio.Event(), anyio.Event()
    seen: list[str] = []

    async def call(name: str, arguments: dict[str, Any], relay: Relay) -> BaseModel:
        seen.append(name)
        if name == "slow":
            entered.set()
            with anyio.CancelScope(shield=True):  # a call that goes on when cancelled
                await release.wait()
        return types.CallToolResult(content=[])

    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    reader = PipeReader(in_read)
    transport = StdioTransport(reader, PipeWriter(out_write), max_message_bytes=4096,
                               calls=call)
    agent = Agent(PipeWriter(in_write), PipeReader(out_read))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: transport.serve(_server(), stop=stop))
            await agent.send(INIT)
            assert "result" in await agent.answer()
            await agent.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                              "params": {"name": "slow", "arguments": {}}})
            await entered.wait()
            await agent.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": 9}})
            await agent.send({"jsonrpc": "2.0", "id": 11, "method": "ping"})
            assert (await agent.answer())["id"] == 11  # the cancellation was taken
            stop.set()  # nothing outstanding: the reading ends, the slow call runs on
            try:
                while reader.quick is not None:  # the reading task's end
                    await anyio.sleep(0)
                await agent.send({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                                  "params": {"name": "echo", "arguments": {}}})
            finally:
                release.set()
            with pytest.raises(anyio.EndOfStream):
                while True:  # the gateway closes its end, having answered nothing more
                    agent.buffer += await agent.reader.receive()
            await agent.writer.aclose()
        await agent.reader.aclose()
    assert (seen, agent.buffer) == (["slow"], b"")

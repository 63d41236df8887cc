"""The agent-facing stdio transport over real pipes: a size cap that never holds an
oversized line whole, answers for lines that are not JSON-RPC, and a stop that lets the
last answers out first."""

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

from proctor.gateway.stdio import PipeReader, PipeWriter, StdioTransport

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
async def serving(server: Server[Any], *, max_bytes: int, stop: anyio.Event | None = None
                  ) -> AsyncIterator[Agent]:
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    transport = StdioTransport(PipeReader(in_read), PipeWriter(out_write),
                               max_message_bytes=max_bytes)
    agent = Agent(PipeWriter(in_write), PipeReader(out_read))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: transport.serve(server, stop=stop))
        await agent.send(INIT)
        assert "result" in await agent.answer()
        yield agent
        await agent.writer.aclose()
    await agent.reader.aclose()


def _server(release: anyio.Event | None = None, entered: anyio.Event | None = None
            ) -> Server[Any]:
    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if entered is not None:
            entered.set()
        if release is not None:
            await release.wait()
        text = json.dumps(params.arguments)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    return Server("t", on_call_tool=call_tool)


async def test_an_oversized_line_is_refused_with_its_id_and_the_next_one_is_served() -> None:
    async with serving(_server(), max_bytes=2048) as agent:
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


async def test_lines_that_are_not_json_rpc_are_answered_not_dropped() -> None:
    async with serving(_server(), max_bytes=4096) as agent:
        await agent.send(b"{not json")
        assert (await agent.answer())["error"] == {
            "code": -32700, "message": "parse_error: the message is not JSON"}
        await agent.send(b'{"jsonrpc": "2.0", "id": "a-1", "params": {}}')
        answer = await agent.answer()
        assert (answer["id"], answer["error"]["code"]) == ("a-1", -32600)
        await agent.send(b"[1, 2, 3]")
        answer = await agent.answer()
        assert (answer["id"], answer["error"]["code"]) == (None, -32600)


async def test_nested_lines_and_unwritable_ids_are_answered_and_the_next_line_served() -> None:
    async with serving(_server(), max_bytes=1 << 20) as agent:
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


async def test_a_stop_answers_the_requests_in_flight_before_the_wire_closes() -> None:
    release, entered, stop = anyio.Event(), anyio.Event(), anyio.Event()
    async with serving(_server(release, entered), max_bytes=4096, stop=stop) as agent:
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

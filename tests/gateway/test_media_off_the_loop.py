"""A large answer's media is guarded in a worker thread: the HTTP gateway's loop serves
another agent's call meanwhile (the guard reads ~150-190 ms of CPU a MiB of media)."""

from __future__ import annotations

import base64
import threading
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp.server import Server

from proctor.clock import FrozenClock, SystemClock
from proctor.gateway.results import MEDIA_ON_THE_LOOP
from proctor.oversight import OutputGuard
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import agent, http_app_before, listening_socket, served, tools_listed

pytestmark = pytest.mark.anyio

HELD = 10  # seconds the guard holds a large answer at most (only ever reached before)
_IMAGE = base64.b64encode(bytes(range(256)) * (MEDIA_ON_THE_LOOP // 256 + 1)).decode()


class _HeldGuard(OutputGuard):
    """The output guard, holding a large answer's media until another call was served
    (on the loop, where the guard ran it before, the loop could serve nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.served = threading.Event(), threading.Event()
        self.waited: list[bool] = []

    def redact_media(self, encoded: str) -> tuple[str, int]:
        if len(encoded) > MEDIA_ON_THE_LOOP:
            self.entered.set()
            self.waited.append(self.served.wait(HELD))
        return super().redact_media(encoded)


def _upstream() -> Server[Any]:
    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name == "image":
            return types.CallToolResult(content=[types.ImageContent(
                type="image", mime_type="image/png", data=_IMAGE)])
        return types.CallToolResult(content=[types.TextContent(type="text", text="small")])

    return Server("proctor-large-media", version="1.0.0",
                  on_list_tools=tools_listed("image", "text"), on_call_tool=call_tool)


async def test_the_loop_serves_another_session_while_a_large_answer_is_guarded(
        deployment: Deployment) -> None:
    guard = _HeldGuard()
    upstream = listening_socket()
    app, gateway, public = http_app_before(deployment, "test", upstream, guard=guard)
    clock = FrozenClock(SystemClock().now())
    with anyio.fail_after(WAIT):
        async with served(_upstream().streamable_http_app(), upstream), \
                served(app, gateway), \
                agent(f"{public}/mcp/test", deployment.grant([{"tool": "test/*"}]),
                      deployment, clock) as first, \
                agent(f"{public}/mcp/test", deployment.grant([{"tool": "test/*"}]),
                      deployment, clock) as second:
            images: list[types.CallToolResult] = []

            async def image() -> None:
                images.append(await first.call_tool("image", {}))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(image)
                await anyio.to_thread.run_sync(guard.entered.wait, WAIT)
                text = await second.call_tool("text", {})  # the loop serves on
                guard.served.set()
            assert [c.text for c in text.content if isinstance(c, types.TextContent)] == [
                "small"]
    assert guard.waited == [True]  # the other call was served while the image was held
    [result] = images
    assert [c.data for c in result.content if isinstance(c, types.ImageContent)] == [_IMAGE]

"""An agent's MCP session through ``proctor mcp wrap``, as an MCP client holds it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from proctor.demo.world import DemoAgent, DemoWorld

__all__ = ["CallResult", "open_session"]

CONNECT_SECONDS = 60


@dataclass(frozen=True)
class CallResult:
    """What the agent saw: a result, or an error with the gateway's reason code."""

    allowed: bool
    code: str
    message: str
    content: Any = None
    data: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return str(self.content)


class AgentSession:
    def __init__(self, session: ClientSession) -> None:
        self._session = session

    async def call(self, tool: str, args: dict[str, Any], *, timeout: float = 60) -> CallResult:
        try:
            with anyio.fail_after(timeout):
                result = await self._session.call_tool(tool, args)
        except MCPError as exc:
            data = exc.error.data if isinstance(exc.error.data, dict) else {}
            return CallResult(False, str(data.get("reason") or exc.error.code), exc.error.message,
                              data=data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                ConnectionError) as exc:
            return CallResult(False, "session_closed", f"the session is closed "
                              f"({type(exc).__name__})")
        content = result.structured_content
        if content is None:
            content = " ".join(getattr(block, "text", "") for block in result.content)
        if result.is_error:
            return CallResult(False, "tool_error", str(content), content)
        return CallResult(True, "allow", "", content)


@asynccontextmanager
async def open_session(world: DemoWorld, agent: DemoAgent, token: str,
                       server: str) -> AsyncIterator[AgentSession]:
    """Start ``proctor mcp wrap`` for ``agent`` with ``token`` in front of ``server``.

    Its start is bounded by ``CONNECT_SECONDS``, each call by its own timeout.
    """
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "proctor.cli", "mcp", "wrap", "--agent", agent.name,
              "--config", str(world.gateway_config), "--server", server,
              "--key-file", str(agent.key_file)],
        env={**world.env, "PROCTOR_GRANT": token})
    log = world.settings.home / f"gateway-{agent.name}-{server}.log"
    with log.open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            with anyio.fail_after(CONNECT_SECONDS):
                await session.initialize()
            yield AgentSession(session)

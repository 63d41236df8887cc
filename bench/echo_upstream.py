"""The gateway benchmark's upstream and its bare pass-through, as processes of their own.

    python bench/echo_upstream.py --serve-upstream stdio|http:PORT
    python bench/echo_upstream.py --serve-relay

The upstream is a small MCP server (``echo``) on the MCP SDK; the relay is a server
whose ``echo`` calls the upstream's over stdio, deciding nothing. This file imports
the SDK alone (not proctor, not the bench's harness), so that each of these processes
starts in about half the CPU ``bench/gateway.py`` takes to import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

WAIT = 120.0
RELAY_MARKER = "--serve-relay"


def upstream_command(http_port: int | None = None) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-upstream"]
    return command + ([f"http:{http_port}"] if http_port else ["stdio"])


def relay_command() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), RELAY_MARKER]


@asynccontextmanager
async def client(streams: Any) -> AsyncIterator[ClientSession]:
    async with streams as (read, write), ClientSession(read, write) as session:
        with anyio.fail_after(WAIT):
            await session.initialize()
        yield session


def serve_upstream(http_port: int | None) -> None:
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-upstream", version="1.0.0", subscriptions=False)

    @server.tool(name="echo", description="Return the text")
    def echo(text: str) -> str:
        return text

    if http_port is None:
        server.run("stdio")
    else:
        # h11 and asyncio named, as before httptools and uvloop were installed (uvicorn's
        # "auto" picks them): the upstream's cost stays what the earlier runs measured
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=http_port,
                    log_level="warning", http="h11", loop="asyncio")


def serve_relay() -> None:
    """A bare pass-through built with the MCP SDK (a server over stdio whose ``echo``
    calls the upstream's over stdio, deciding nothing): the floor of any stdio proxy."""
    from mcp.server.mcpserver import MCPServer

    upstream: dict[str, ClientSession] = {}

    @asynccontextmanager
    async def connected(_: object) -> AsyncIterator[None]:
        params = StdioServerParameters(command=sys.executable, args=upstream_command()[1:])
        async with client(stdio_client(params)) as session:
            upstream["session"] = session
            yield None

    server = MCPServer("bench-relay", version="1.0.0", subscriptions=False, lifespan=connected)

    @server.tool(name="echo", description="Return the text")
    async def echo(text: str) -> str:
        result = await upstream["session"].call_tool("echo", {"text": text})
        return str(getattr(result.content[0], "text", ""))

    server.run("stdio")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--serve-upstream", metavar="stdio|http:PORT")
    what.add_argument(RELAY_MARKER, action="store_true")
    args = parser.parse_args(argv)
    if args.serve_relay:
        serve_relay()
    else:
        kind, _, port = args.serve_upstream.partition(":")
        serve_upstream(int(port) if kind == "http" else None)


if __name__ == "__main__":
    main()

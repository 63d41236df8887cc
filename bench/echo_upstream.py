"""The gateway benchmark's upstream and its bare pass-through, as processes of their own.

    python bench/echo_upstream.py --serve-upstream stdio|http:PORT
    python bench/echo_upstream.py --serve-relay
    python bench/echo_upstream.py --serve-http-relay PORT --upstream URL

The upstream is a small MCP server (``echo``) on the MCP SDK; the relay is a server
whose ``echo`` calls the upstream's (over stdio; with ``--serve-http-relay``, served on
``PORT`` and calling the upstream at ``URL`` over streamable HTTP), deciding nothing.
This file imports the SDK alone (not proctor, not the bench's harness), so that each
of these processes starts in about half the CPU ``bench/gateway.py`` takes to import.
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


def relay_command(http_port: int | None = None, upstream_url: str = "") -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve())]
    if http_port is None:
        return [*command, RELAY_MARKER]
    return [*command, "--serve-http-relay", str(http_port), "--upstream", upstream_url]


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


def serve_relay(http_port: int | None = None, upstream_url: str = "") -> None:
    """A bare pass-through built with the MCP SDK (a server whose ``echo`` calls the
    upstream's, deciding nothing): the floor of any proxy. Over stdio to a stdio
    upstream of its own; with ``http_port``, served over streamable HTTP (h11 and
    asyncio, as the upstream) to the HTTP upstream at ``upstream_url``, one upstream
    session for all its agents' sessions."""
    from mcp.server.mcpserver import MCPServer

    upstream: dict[str, ClientSession] = {}

    @asynccontextmanager
    async def connected(_: object) -> AsyncIterator[None]:
        if http_port is None:
            params = StdioServerParameters(command=sys.executable, args=upstream_command()[1:])
            streams: Any = stdio_client(params)
        else:
            from mcp.client.streamable_http import streamable_http_client
            streams = streamable_http_client(upstream_url)
        async with client(streams) as session:
            upstream["session"] = session
            yield None

    server = MCPServer("bench-relay", version="1.0.0", subscriptions=False, lifespan=connected)

    @server.tool(name="echo", description="Return the text")
    async def echo(text: str) -> str:
        result = await upstream["session"].call_tool("echo", {"text": text})
        return str(getattr(result.content[0], "text", ""))

    if http_port is None:
        server.run("stdio")
        return
    import uvicorn
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=http_port,
                log_level="warning", http="h11", loop="asyncio")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--serve-upstream", metavar="stdio|http:PORT")
    what.add_argument(RELAY_MARKER, action="store_true")
    what.add_argument("--serve-http-relay", metavar="PORT", type=int)
    parser.add_argument("--upstream", metavar="URL", default="",
                        help="the HTTP upstream of --serve-http-relay")
    args = parser.parse_args(argv)
    if args.serve_relay:
        serve_relay()
    elif args.serve_http_relay:
        serve_relay(args.serve_http_relay, args.upstream)
    else:
        kind, _, port = args.serve_upstream.partition(":")
        serve_upstream(int(port) if kind == "http" else None)


if __name__ == "__main__":
    main()

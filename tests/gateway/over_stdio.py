"""A test upstream's ``__main__``: its server over this process's stdio."""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server import Server
from mcp.server.stdio import stdio_server


def run_over_stdio(server: Server[Any]) -> None:
    """Serve ``server`` on stdin and stdout until the client closes them."""
    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)

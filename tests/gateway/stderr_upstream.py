"""An MCP server (stdio) that prints the environment variable ``UPSTREAM_TOKEN`` (an
injected secret) to its stderr before it serves: in a line written whole, in a line
written in two pieces cut inside the secret, after bytes that are not UTF-8, in a
line longer than the gateway's cap with the secret where the cap cuts it, and in a
last piece with no newline. Tools: ``echo``, ``flood`` (prints ``lines`` lines, then
answers) and ``die`` (prints the secret with no newline, then exits mid-call)."""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer

from proctor.gateway.stderr import MAX_LINE_BYTES


def _print(data: bytes) -> None:
    os.write(2, data)


def print_secret(token: bytes) -> None:
    _print(b"starting with token " + token + b"\n")
    half = len(token) // 2
    _print(b"split " + token[:half])
    time.sleep(0.05)  # two writes the gateway likely reads apart; either way one line
    _print(token[half:] + b" done\n")
    _print(b"\xff\xfe not utf-8 " + token + b"\n")
    pad = b"p " * ((MAX_LINE_BYTES - 4) // 2)  # the cap falls inside the secret
    _print(pad + token + b" tail " + b"q" * MAX_LINE_BYTES + b"\n")
    _print(b"after the long line\n")
    _print(b"last " + token)


def create_server() -> MCPServer:
    server = MCPServer("proctor-stderr-upstream", version="1.0.0", subscriptions=False)

    @server.tool(name="echo", description="Return the text")
    def echo(text: str) -> str:
        return text

    @server.tool(name="flood", description="Print `lines` lines to stderr, then answer")
    def flood(lines: int) -> str:
        for _ in range(lines // 1000):
            _print(b"flood line of the stderr upstream\n" * 1000)
        return "flooded"

    @server.tool(name="die", description="Print the secret to stderr, then exit")
    def die() -> str:
        _print(b"\ndying with " + os.environ.get("UPSTREAM_TOKEN", "").encode())
        os._exit(3)

    return server


if __name__ == "__main__":
    print_secret(os.environ.get("UPSTREAM_TOKEN", "").encode())
    create_server().run("stdio")

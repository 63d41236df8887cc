"""An MCP server written for the gateway tests (stdio, or streamable HTTP with ``--http PORT``).

Tools: ``echo`` (returns its arguments), ``fake_credentials`` (a string with
credential-shaped values, freshly random), ``read_env`` / ``env_digest`` (an
environment variable's value, or its SHA-256, to show a secret was injected),
``read_file`` (a file's text), ``request_headers`` (HTTP mode: the header names
the server received and the SHA-256 of ``Authorization``), ``nested`` (a result
nested ``depth`` levels deep), ``chatty`` (logs ``count`` lines, and the value of
the environment variable ``env`` if given, then answers: the server does not declare
the ``logging`` capability), ``steps`` (reports progress ``count`` times, each
step ``n`` as ``step n``, after a report under a token the call did not give, then
answers at once), ``hang`` (never answers) and
``crash`` (the process exits mid-call). A resource ``notes://readme``
and a prompt ``greet``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning


def create_server() -> MCPServer:
    server = MCPServer("proctor-test-upstream", version="1.0.0", subscriptions=False)

    @server.tool(name="echo", description="Return the arguments")
    def echo(text: str, count: int = 1) -> dict[str, Any]:
        return {"text": text, "count": count}

    @server.tool(name="fake_credentials", description="Text with credential-shaped values")
    def fake_credentials() -> str:
        github = "ghp_" + secrets.token_hex(18)
        aws = "AKIA" + secrets.token_hex(8).upper()
        return f"deploy with token {github} and key id {aws}; all done"

    @server.tool(name="read_env", description="An environment variable's value")
    def read_env(name: str) -> str:
        return os.environ.get(name, "")

    @server.tool(name="env_digest", description="SHA-256 of an environment variable")
    def env_digest(name: str) -> str:
        return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()

    @server.tool(name="read_file", description="A file's text")
    def read_file(path: str) -> str:
        return Path(path).read_text(encoding="utf-8")

    @server.tool(name="request_headers", description="The HTTP headers this call came with")
    def request_headers(ctx: Context) -> dict[str, Any]:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        auth = headers.get("authorization", "")
        return {"names": sorted(headers),
                "authorization_sha256": hashlib.sha256(auth.encode()).hexdigest()}

    @server.tool(name="hang", description="Never answers (after touching `started`, if given)")
    async def hang(started: str = "") -> str:
        if started:
            Path(started).touch()
        await anyio.sleep_forever()
        return "unreachable"

    @server.tool(name="nested", description="A result nested `depth` levels deep")
    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": True}
        for _ in range(depth):
            value = {"inner": value}
        return value

    @server.tool(name="chatty", description="Logs `count` lines, then answers")
    async def chatty(count: int, ctx: Context, env: str = "") -> str:
        with warnings.catch_warnings():  # a server that logs without declaring logging
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            for n in range(count):
                await ctx.log("info", f"line {n}")
            if env:  # an environment variable's value (an injected secret), logged
                await ctx.log("info", f"{env}={os.environ.get(env, '')}",
                              logger_name=os.environ.get(env, ""))
        return f"logged {count} lines"

    @server.tool(name="steps", description="Reports progress `count` times, then answers")
    async def steps(count: int, ctx: Context) -> str:
        # a token the call did not give: the client drops it
        await ctx.session.send_progress_notification(
            "not-asked", 0.5, message="stray", related_request_id=ctx.request_id)
        for n in range(count):
            await ctx.report_progress(n, count, f"step {n}")
        return f"reported {count} steps"

    @server.tool(name="crash", description="The server process exits")
    def crash() -> str:
        os._exit(3)

    @server.resource("notes://readme", name="readme", description="A note")
    def readme() -> str:
        return "the readme of the test upstream"

    @server.prompt(name="greet", description="A greeting")
    def greet(name: str) -> str:
        return f"Say hello to {name}."

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP here")
    args = parser.parse_args()
    server = create_server()
    if args.http is None:
        server.run("stdio")
    else:
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=args.http,
                    log_level="warning")


if __name__ == "__main__":
    main()

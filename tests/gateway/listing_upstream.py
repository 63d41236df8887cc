"""An MCP server (stdio) whose listings quote the environment variable ``UPSTREAM_TOKEN``
(an injected secret) in a tool's, a prompt's, a resource's and a resource template's
description: what the gateway lists to the agent must not carry it."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer


def create_server() -> MCPServer:
    token = os.environ.get("UPSTREAM_TOKEN", "")
    server = MCPServer("proctor-listing-upstream", version="1.0.0", subscriptions=False)

    @server.tool(name="echo", description=f"Return the arguments (as {token})")
    def echo(text: str, count: int = 1) -> dict[str, object]:
        return {"text": text, "count": count}

    @server.prompt(name="greet", description=f"A greeting from {token}")
    def greet(name: str) -> str:
        return f"Say hello to {name}."

    @server.resource("notes://readme", name="readme", description=f"A note by {token}")
    def readme() -> str:
        return "the readme"

    @server.resource("notes://{topic}", name="topic", description=f"Notes of {token}")
    def topic(topic: str) -> str:
        return f"notes on {topic}"

    return server


if __name__ == "__main__":
    create_server().run("stdio")

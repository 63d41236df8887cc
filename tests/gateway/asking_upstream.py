"""An MCP server (stdio) whose ``echo`` logs and asks its client before it answers: the
tests' ``echo`` (same name and arguments), with an upstream's log line and elicitation
in the middle of the call, for the gateway's relay of both."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel


class Again(BaseModel):
    text: str


def create_server() -> MCPServer:
    server = MCPServer("proctor-asking-upstream", version="1.0.0", subscriptions=False)

    @server.tool(name="echo", description="Return the arguments, as the client says them again")
    async def echo(text: str, ctx: Context, count: int = 1) -> dict[str, Any]:
        await ctx.info(f"asking about {text}")
        again = await ctx.elicit(f"say `{text}` again", Again)
        said = again.data.text if again.action == "accept" and again.data else f"({again.action})"
        return {"text": said, "count": count}

    return server


if __name__ == "__main__":
    create_server().run("stdio")

"""An MCP server that writes down every completion, subscription and unsubscription it
is sent, and every answer its client gave to its sampling and elicitation requests, one
JSON line each, to the file named on its command line (stdio) or given to
:func:`create_server` (streamable HTTP, with ``streamable_http_app()``): what reached
the upstream, for the tests that show what the gateway refuses never gets there.

A resource ``notes://readme``, a template ``notes://{name}``, a prompt ``greet`` (its
argument ``name`` completes to the value given plus ``-ly``), and two tools that ask
the client during the call: ``ask_model`` (``sampling/createMessage`` with the
``question``) and ``ask_user`` (``elicitation/create`` for a form with a ``text``);
with ``copies``, that many requests at once."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

ASKING_TOOLS = [types.Tool(name=name, input_schema={
    "type": "object", "properties": {"question": {"type": "string"},
                                     "copies": {"type": "integer"}},
    "required": ["question"]})
    for name in ("ask_model", "ask_user")]


def heard(record: Path) -> list[dict[str, Any]]:
    """What the server at ``record`` was sent, in order."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def create_server(record: Path) -> Server[Any]:
    def write(entry: dict[str, Any]) -> None:
        with record.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=ASKING_TOOLS)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        question = str((params.arguments or {}).get("question", ""))
        copies = int((params.arguments or {}).get("copies", 1))
        if copies > 1:  # that many of the request at once
            async with anyio.create_task_group() as tasks:
                for _ in range(copies):
                    tasks.start_soon(ask, ctx, params.name, question)
            return types.CallToolResult(content=[types.TextContent(type="text",
                                                                   text="asked")])
        return await ask(ctx, params.name, question)

    async def ask(ctx: Any, name: str, question: str) -> types.CallToolResult:
        method = "sampling/createMessage" if name == "ask_model" else "elicitation/create"
        try:
            if name == "ask_model":
                with warnings.catch_warnings():  # deprecated for servers; still MCP
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    answer: Any = await ctx.session.create_message(
                        [types.SamplingMessage(role="user", content=types.TextContent(
                            type="text", text=question))], max_tokens=100,
                        related_request_id=ctx.request_id)
            else:
                answer = await ctx.session.elicit_form(question, {
                    "type": "object", "properties": {"text": {"type": "string"}}},
                    related_request_id=ctx.request_id)
        except MCPError as exc:
            reason = exc.error.data.get("reason") if isinstance(exc.error.data, dict) else None
            write({"method": method, "error": {"code": exc.code, "reason": reason}})
            return types.CallToolResult(content=[types.TextContent(
                type="text", text=f"not answered ({exc.code})")])
        got = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
        write({"method": method, "answer": got})
        return types.CallToolResult(content=[types.TextContent(type="text", text="answered")])

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(
            uri="notes://readme", name="readme")])

    async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template="notes://{name}", name="note")])

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[types.Prompt(
            name="greet", arguments=[types.PromptArgument(name="name", required=True)])])

    async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        write({"method": "completion/complete",
               "ref": params.ref.model_dump(mode="json", exclude_none=True),
               "argument": params.argument.model_dump(mode="json", exclude_none=True),
               "context": params.context.arguments if params.context else None})
        return types.CompleteResult(completion=types.Completion(
            values=[f"{params.argument.value}-ly"], total=1, has_more=False))

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        write({"method": "resources/subscribe", "uri": str(params.uri)})
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams
                          ) -> types.EmptyResult:
        write({"method": "resources/unsubscribe", "uri": str(params.uri)})
        return types.EmptyResult()

    return Server("proctor-recording-upstream", version="1.0.0",
                  on_list_tools=list_tools, on_call_tool=call_tool,
                  on_list_resources=list_resources,
                  on_list_resource_templates=list_templates, on_list_prompts=list_prompts,
                  on_completion=complete, on_subscribe_resource=subscribe,
                  on_unsubscribe_resource=unsubscribe)


async def main() -> None:
    server = create_server(Path(sys.argv[1]))
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)

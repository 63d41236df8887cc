"""The OpenAI Agents SDK, guarded: a support agent's function tools behind proctor's
tool input guardrail, driven by the SDK's own scripted test model (no network, no
LLM): the "model" asks for four tool calls, proctor decides each.

    PROCTOR_URL=http://127.0.0.1:8600 PROCTOR_ADMIN_TOKEN=ptk_… \\
        python -m examples.frameworks.openai_agents
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from agents import Agent, RunConfig, Runner, function_tool
from agents.items import ToolCallOutputItem
from agents.testing import ScriptedModel, assistant_message, function_call

from examples.frameworks import support as agent
from examples.frameworks.support import async_support_agent, issued, play_steps
from proctor.client import Guard
from proctor.client.openai_agents import guard_tools

__all__ = ["issued", "run", "run_agent"]

issue_refund = function_tool(agent.issue_refund)
send_email = function_tool(agent.send_email)


async def run_agent(guard: Guard, name: str, arguments: dict[str, Any]) -> str:
    """One turn: the scripted model calls ``name``; the tool's output as the model saw it."""
    model = ScriptedModel([[function_call(name, arguments, call_id="call-1")],
                           [assistant_message("done")]])
    agent = Agent(name="support", instructions="help the customer",
                  tools=guard_tools([issue_refund, send_email], guard, names={
                      "issue_refund": "crm/issue_refund", "send_email": "email/send_email"}))
    result = await Runner.run(agent, "refund c-1001",
                              run_config=RunConfig(model=model, tracing_disabled=True))
    outputs = [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    return str(outputs[0])


def code_of(output: str) -> str:
    """``allow`` for a tool that ran, else proctor's code from its refusal message."""
    if output.startswith("proctor refused"):
        return output.split("(", 1)[1].split(")", 1)[0]
    return "allow"


async def run_async(base_url: str, admin_token: str) -> dict[str, str]:
    async with async_support_agent(base_url, admin_token) as support:
        guard = Guard(support.client, support.grant)

        async def attempt(name: str, arguments: dict[str, Any]) -> str:
            return code_of(await run_agent(guard, name, arguments))

        await play_steps(support, attempt)
    return support.outcomes.steps


def run(base_url: str, admin_token: str) -> dict[str, str]:
    result: dict[str, str] = anyio.run(run_async, base_url, admin_token)
    return result


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])

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

from examples.frameworks.operator import OWNER, Operator, Outcomes
from examples.frameworks.plain_decorator import SCOPE
from proctor.client import AsyncProctorClient, Guard
from proctor.client.openai_agents import guard_tools

__all__ = ["run", "run_agent"]

issued: list[dict[str, Any]] = []


@function_tool
def issue_refund(customer_id: str, amount_cents: int) -> str:
    """Refund a customer, in cents."""
    issued.append({"customer_id": customer_id, "amount_cents": amount_cents})
    return f"refunded {amount_cents} cents to {customer_id}"


@function_tool
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


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
    operator = Operator(base_url, admin_token)
    outcomes = Outcomes()
    agent_id, key = operator.register_agent("support")
    async with AsyncProctorClient(base_url, agent_id, key, approval_timeout_seconds=30,
                                  on_approval=operator.approve_when_asked) as client:
        task = await client.start_task("refund a lost parcel", on_behalf_of=OWNER)
        grant = await client.issue_grant(task, SCOPE)
        guard = Guard(client, grant)
        small = {"customer_id": "c-1001", "amount_cents": 2500}
        outcomes.record("allowed", code_of(await run_agent(guard, "issue_refund", small)))
        email = {"to": "a@example.org", "subject": "refund", "body": "done"}
        outcomes.record("denied", code_of(await run_agent(guard, "send_email", email)))
        large = {"customer_id": "c-1001", "amount_cents": 25000}
        outcomes.record("approved", code_of(await run_agent(guard, "issue_refund", large)))
        await anyio.to_thread.run_sync(operator.revoke, grant.accessor)
        outcomes.record("revoked", code_of(await run_agent(guard, "issue_refund", small)))
    operator.close()
    outcomes.record("approvals", str(len(operator.approved)))
    return outcomes.steps


def run(base_url: str, admin_token: str) -> dict[str, str]:
    result: dict[str, str] = anyio.run(run_async, base_url, admin_token)
    return result


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])

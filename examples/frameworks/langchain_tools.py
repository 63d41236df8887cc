"""LangChain and LangGraph, guarded: a support agent's tools in LangGraph's prebuilt
``ToolNode``, each call decided by proctor, driven directly with the tool calls a model
would emit (no network, no LLM). Sync, with the blocking client.

    PROCTOR_URL=http://127.0.0.1:8600 PROCTOR_ADMIN_TOKEN=ptk_… \\
        python -m examples.frameworks.langchain_tools
"""

from __future__ import annotations

import os
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from examples.frameworks.operator import OWNER, Operator, Outcomes
from examples.frameworks.plain_decorator import SCOPE
from proctor.client import Guard, ProctorClient
from proctor.client.langchain import proctor_tool_node

__all__ = ["NAMES", "call", "issued", "run", "run_node"]

issued: list[dict[str, Any]] = []
NAMES = {"issue_refund": "crm/issue_refund", "send_email": "email/send_email"}


@tool
def issue_refund(customer_id: str, amount_cents: int) -> str:
    """Refund a customer, in cents."""
    issued.append({"customer_id": customer_id, "amount_cents": amount_cents})
    return f"refunded {amount_cents} cents to {customer_id}"


@tool
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


def call(guard: Guard, name: str, args: dict[str, Any]) -> ToolMessage:
    """The ``ToolNode`` run on one tool call, as a model's message would carry it."""
    return run_node(proctor_tool_node([issue_refund, send_email], guard, names=NAMES),
                    name, args)


def run_node(node: ToolNode, name: str, args: dict[str, Any]) -> ToolMessage:
    """A graph of the one node, given the AI message that asks for the call."""
    graph = StateGraph(MessagesState)
    graph.add_node("tools", node)
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    asked = AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": "call-1"}])
    answer = graph.compile().invoke({"messages": [asked]})
    message: ToolMessage = answer["messages"][-1]
    return message


def code_of(message: ToolMessage) -> str:
    return "allow" if message.status == "success" else str(message.artifact["code"])


def run(base_url: str, admin_token: str) -> dict[str, str]:
    operator = Operator(base_url, admin_token)
    outcomes = Outcomes()
    agent_id, key = operator.register_agent("support")
    with ProctorClient(base_url, agent_id, key, approval_timeout_seconds=30,
                       on_approval=operator.approve_when_asked) as client:
        task = client.start_task("refund a lost parcel", on_behalf_of=OWNER)
        grant = client.issue_grant(task, SCOPE)
        guard = Guard(client, grant)
        small = {"customer_id": "c-1001", "amount_cents": 2500}
        outcomes.record("allowed", code_of(call(guard, "issue_refund", small)))
        email = {"to": "a@example.org", "subject": "refund", "body": "done"}
        outcomes.record("denied", code_of(call(guard, "send_email", email)))
        large = {"customer_id": "c-1001", "amount_cents": 25000}
        outcomes.record("approved", code_of(call(guard, "issue_refund", large)))
        operator.revoke(grant.accessor)
        outcomes.record("revoked", code_of(call(guard, "issue_refund", small)))
    operator.close()
    outcomes.record("approvals", str(len(operator.approved)))
    return outcomes.steps


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])

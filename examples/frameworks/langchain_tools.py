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

from examples.frameworks import support as agent
from examples.frameworks.support import EMAIL, LARGE_REFUND, SMALL_REFUND, issued, support_agent
from proctor.client import Guard
from proctor.client.langchain import proctor_tool_node

__all__ = ["NAMES", "call", "issued", "run", "run_node"]

NAMES = {"issue_refund": "crm/issue_refund", "send_email": "email/send_email"}
issue_refund = tool(agent.issue_refund)
send_email = tool(agent.send_email)


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
    with support_agent(base_url, admin_token) as support:
        guard, outcomes = Guard(support.client, support.grant), support.outcomes
        outcomes.record("allowed", code_of(call(guard, "issue_refund", SMALL_REFUND)))
        outcomes.record("denied", code_of(call(guard, "send_email", EMAIL)))
        outcomes.record("approved", code_of(call(guard, "issue_refund", LARGE_REFUND)))
        support.operator.revoke(support.grant.accessor)
        outcomes.record("revoked", code_of(call(guard, "issue_refund", SMALL_REFUND)))
    return outcomes.steps


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])

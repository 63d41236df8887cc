"""LangChain and LangGraph, guarded: a wrapper for any tool, and the prebuilt
``ToolNode`` with proctor deciding each call.

>>> refund = guard_tool(issue_refund, guard, name="crm/issue_refund")   # doctest: +SKIP
>>> node = proctor_tool_node([issue_refund, send_email], guard, names={...})

A refusal is LangChain's own: a ``ToolMessage`` with ``status="error"`` whose content is
``proctor refused `crm/issue_refund` (code): reason`` and whose ``artifact`` carries
proctor's code, reasons, policy ids, event id (and the approval, when no human decided
in time). The wrapped tool does not run. (``guard_tool`` raises ``ToolException``,
which the tool turns into that message: ``handle_tool_error`` is set on the wrapper.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from proctor.client.errors import ApprovalTimeoutError, CallRefusedError
from proctor.client.guard import Guard

__all__ = ["GuardedTool", "guard_tool", "proctor_tool_node", "refusal_message"]


def refusal_artifact(refused: CallRefusedError) -> dict[str, Any]:
    info: dict[str, Any] = (refused.verdict.as_json() if refused.verdict is not None
                            else {"tool": refused.tool, "decision": "deny"})
    info["code"] = refused.code
    info["reason"] = refused.reason
    if isinstance(refused, ApprovalTimeoutError):
        info["approval"] = refused.approval_id
    return info


def refusal_text(refused: CallRefusedError) -> str:
    return f"proctor refused `{refused.tool}` ({refused.code}): {refused.reason}"


def refusal_message(refused: CallRefusedError, tool_call_id: str, name: str) -> ToolMessage:
    """``refused`` as the message the model reads in place of the tool's output."""
    return ToolMessage(content=refusal_text(refused), tool_call_id=tool_call_id, name=name,
                       status="error", artifact=refusal_artifact(refused))


class GuardedTool(BaseTool):
    """``tool``, decided by proctor as ``proctor_name`` before each run."""

    tool: BaseTool
    guard: Any  # a Guard (pydantic cannot validate the class)
    proctor_name: str
    handle_tool_error: bool = True

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_manager", None)
        try:
            self.guard.check(self.proctor_name, kwargs)
        except CallRefusedError as refused:
            raise ToolException(refusal_text(refused)) from refused
        return self.tool.invoke(kwargs)

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_manager", None)
        try:
            await self.guard.acheck(self.proctor_name, kwargs)
        except CallRefusedError as refused:
            raise ToolException(refusal_text(refused)) from refused
        return await self.tool.ainvoke(kwargs)


def guard_tool(tool: BaseTool, guard: Guard, *, name: str) -> GuardedTool:
    """``tool`` under its own name, schema and description, decided as ``name``."""
    if "/" not in name:
        raise ValueError(f"tool `{name}` is not `server/tool`")
    return GuardedTool(name=tool.name, description=tool.description,
                       args_schema=tool.args_schema, tool=tool, guard=guard,
                       proctor_name=name)


def proctor_tool_node(tools: Sequence[BaseTool | Callable[..., Any]], guard: Guard, *,
                      server: str | None = None, names: Mapping[str, str] | None = None,
                      **options: Any) -> ToolNode:
    """LangGraph's prebuilt ``ToolNode`` over ``tools``, every call decided first."""
    mapping = dict(names or {})

    def proctor_name(request: ToolCallRequest) -> str:
        name = request.tool_call["name"]
        return mapping.get(name) or (f"{server}/{name}" if server else name)

    def refused_or_none(request: ToolCallRequest, decide: Callable[[], object]) \
            -> ToolMessage | None:
        tool = proctor_name(request)
        try:
            if "/" not in tool:
                raise CallRefusedError(tool, "tool_unmapped", (
                    f"tool `{tool}` has no `server/tool` name: give server= or names="))
            decide()
        except CallRefusedError as refused:
            return refusal_message(refused, request.tool_call["id"] or "",
                                   request.tool_call["name"])
        return None

    def wrap(request: ToolCallRequest,
             execute: Callable[[ToolCallRequest], ToolMessage | Command[Any]]) \
            -> ToolMessage | Command[Any]:
        refused = refused_or_none(request, lambda: guard.check(
            proctor_name(request), request.tool_call["args"]))
        return refused if refused is not None else execute(request)

    async def awrap(request: ToolCallRequest,
                    execute: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]) \
            -> ToolMessage | Command[Any]:
        tool = proctor_name(request)
        try:
            if "/" not in tool:
                raise CallRefusedError(tool, "tool_unmapped", (
                    f"tool `{tool}` has no `server/tool` name: give server= or names="))
            await guard.acheck(tool, request.tool_call["args"])
        except CallRefusedError as refused:
            return refusal_message(refused, request.tool_call["id"] or "",
                                   request.tool_call["name"])
        return await execute(request)

    return ToolNode(tools, wrap_tool_call=wrap, awrap_tool_call=awrap, **options)

"""The OpenAI Agents SDK, guarded: a tool input guardrail that asks proctor before each
function tool runs.

>>> tools = guard_tools([issue_refund, send_email], guard, server="crm")   # doctest: +SKIP
>>> agent = Agent(name="support", tools=tools)

``guard_tools`` attaches :func:`proctor_guardrail` to each function tool (or make one
and list it in a tool's ``tool_input_guardrails`` yourself). The tool is named to
proctor as ``<server>/<tool name>``, or as ``names`` maps it. A refusal is the SDK's own:
``ToolGuardrailFunctionOutput.reject_content`` — the tool does not run and the model
reads ``proctor refused `crm/issue_refund` (code): reason`` as the tool's output; the
guardrail result's ``output_info`` carries proctor's code, reasons, policy ids, event id
and, when no human decided in time, the approval's id.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from agents import FunctionTool, Tool, ToolGuardrailFunctionOutput, ToolInputGuardrail
from agents.tool_guardrails import ToolInputGuardrailData

from proctor.client.errors import ApprovalTimeoutError, CallRefusedError
from proctor.client.guard import Guard

__all__ = ["guard_tools", "proctor_guardrail"]


def proctor_guardrail(guard: Guard, *, server: str | None = None,
                      names: Mapping[str, str] | None = None) -> ToolInputGuardrail[Any]:
    """A tool input guardrail deciding each call with ``guard``."""
    mapping = dict(names or {})

    async def decide(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        name = data.context.tool_name
        tool = mapping.get(name) or (f"{server}/{name}" if server else name)
        try:
            if "/" not in tool:
                raise CallRefusedError(tool, "tool_unmapped", (
                    f"tool `{name}` has no `server/tool` name: give guard_tools a server= "
                    "or names="))
            try:
                args = json.loads(data.context.tool_arguments or "{}")
            except ValueError:
                raise CallRefusedError(tool, "arguments_invalid",
                                       "the arguments are not JSON") from None
            if not isinstance(args, dict):
                raise CallRefusedError(tool, "arguments_invalid",
                                       "the arguments are not a JSON object")
            verdict = await guard.acheck(tool, args)
        except CallRefusedError as refused:
            info: dict[str, Any] = (refused.verdict.as_json() if refused.verdict is not None
                                    else {"tool": tool, "decision": "deny"})
            info["code"] = refused.code
            info["reason"] = refused.reason
            if isinstance(refused, ApprovalTimeoutError):
                info["approval"] = refused.approval_id
            return ToolGuardrailFunctionOutput.reject_content(
                f"proctor refused `{tool}` ({refused.code}): {refused.reason}", output_info=info)
        return ToolGuardrailFunctionOutput.allow(output_info=verdict.as_json())

    return ToolInputGuardrail(guardrail_function=decide, name="proctor")


def guard_tools(tools: Sequence[FunctionTool], guard: Guard, *, server: str | None = None,
                names: Mapping[str, str] | None = None) -> list[Tool]:
    """Copies of ``tools`` with proctor's guardrail first among their input guardrails."""
    guardrail = proctor_guardrail(guard, server=server, names=names)
    guarded: list[Tool] = []
    for tool in tools:
        if not isinstance(tool, FunctionTool):
            raise TypeError(f"`{tool!r}` is not a function tool: only those take guardrails")
        guarded.append(dataclasses.replace(
            tool, tool_input_guardrails=[guardrail, *(tool.tool_input_guardrails or [])]))
    return guarded

"""The MCP Python SDK's client, guarded: every ``call_tool`` is decided by proctor first.

>>> async with ClientSession(read, write) as session:             # doctest: +SKIP
...     guarded = GuardedSession(session, guard, server="crm")
...     await guarded.initialize()
...     await guarded.call_tool("issue_refund", {"customer_id": "c-1001", "amount_cents": 2500})

The tool is named to proctor as ``<server>/<tool>`` (the catalog's name). A refusal is
raised as the MCP SDK's own :class:`~mcp.shared.exceptions.MCPError`, with the codes
proctor's gateway answers (``docs/gateway.md``): ``-32010`` with ``data.reason`` =
proctor's code, ``data.reasons``, ``data.policy_ids``, ``data.event_id``; ``-32011``
``approval_pending`` with ``data.approval_id`` when no human decided in time. The
upstream is never called for a refused call. Everything else is the session's own.
"""

from __future__ import annotations

from typing import Any

from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from proctor.client.errors import ApprovalTimeoutError, CallRefusedError
from proctor.client.guard import Guard

__all__ = ["APPROVAL_PENDING", "CALL_DENIED", "GuardedSession", "refusal_error"]

CALL_DENIED = -32010
APPROVAL_PENDING = -32011


def refusal_error(refused: CallRefusedError) -> MCPError:
    """``refused`` as the JSON-RPC error proctor's gateway would have answered."""
    data: dict[str, Any] = {"reason": refused.code, "reasons": [refused.reason]}
    if refused.verdict is not None:
        data["reasons"] = list(refused.verdict.reasons) or [refused.reason]
        data["policy_ids"] = list(refused.verdict.policy_ids)
        data["event_id"] = refused.verdict.event_id
    if isinstance(refused, ApprovalTimeoutError):
        data["approval_id"] = refused.approval_id
        return MCPError(APPROVAL_PENDING, f"approval_pending: {refused.reason}", data=data)
    return MCPError(CALL_DENIED, f"{refused.code}: {refused.reason}", data=data)


class GuardedSession:
    """A :class:`~mcp.ClientSession` whose ``call_tool`` asks proctor first."""

    def __init__(self, session: ClientSession, guard: Guard, *, server: str) -> None:
        if not server or "/" in server:
            raise ValueError(f"server `{server}` is a catalog server name, without `/`")
        self.session = session
        self.guard = guard
        self.server = server

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                        *args: Any, **kwargs: Any) -> CallToolResult:
        try:
            await self.guard.acheck(f"{self.server}/{name}", arguments or {})
        except CallRefusedError as refused:
            raise refusal_error(refused) from refused
        result: CallToolResult = await self.session.call_tool(name, arguments, *args, **kwargs)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

"""The JSON-RPC errors the gateway answers with: a code, a message naming the reason,
and ``data`` a machine can read (``{"reason": "policy_forbid", ...}``).

Codes below -32000 that the MCP SDK does not use (it takes -32000 for a closed
connection and -32001 for a request timeout)::

    -32010  call_denied        the grant, the agent or policy said no (data.reason says which)
    -32011  approval_pending   a human has not decided yet (data.approval_id)
    -32012  upstream_failed    the upstream crashed, hung or is unreachable
    -32013  session_closed     the session's grant was revoked or expired
    -32602  invalid params     an unknown tool, arguments that do not match inputSchema
    -32600  invalid request    a message over the size cap
    -32700  parse error        a message that is not JSON-RPC
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR

__all__ = ["APPROVAL_PENDING", "CALL_DENIED", "INVALID_PARAMS", "INVALID_REQUEST",
           "PARSE_ERROR", "SESSION_CLOSED", "UPSTREAM_FAILED", "rpc_error"]

CALL_DENIED = -32010
APPROVAL_PENDING = -32011
UPSTREAM_FAILED = -32012
SESSION_CLOSED = -32013


def rpc_error(code: int, reason: str, message: str, *, reasons: Sequence[str] = (),
              **data: Any) -> MCPError:
    """An error for the agent: ``message`` is prefixed with the reason code."""
    body: dict[str, Any] = {"reason": reason}
    if reasons:
        body["reasons"] = list(reasons)
    body.update({k: v for k, v in data.items() if v is not None and v != ()})
    return MCPError(code, f"{reason}: {message}", data=body)

"""A ``tools/call`` answer kept as the plain dict it was parsed into, for the direct paths.

When both sides of a call are direct (the agent's call read off the wrapper's pipe or
the HTTP door, the upstream's answer read by :class:`~proctor.gateway.pipes.UpstreamPipes`
or :class:`~proctor.gateway.posts.UpstreamPosts`), the answer is never made into the
SDK's ``CallToolResult``: it is parsed once, checked against the negotiated version's
result shape (which drops the fields that version does not have,
:func:`mcp_types.methods.serialize_server_result`), guarded as that dict
(:meth:`proctor.gateway.results.ResultGuard.redact_answer`) and written once. Building
the SDK's model and dumping it twice cost ~4 times the rest of the answer's path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from mcp_types import methods as surfaces
from pydantic import BaseModel

__all__ = ["ShapedAnswer", "shaped_result"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShapedAnswer:
    """A ``tools/call`` result as a JSON dict; ``version``: the protocol version whose
    result shape it already has (its surface's dump), or None if it must be shaped
    (checked) again before it goes out (the guard changed it)."""

    document: dict[str, Any]
    version: str | None


def shaped_result(result: BaseModel | ShapedAnswer, version: str) -> dict[str, Any]:
    """``result`` as the SDK's server sends it at ``version``: a model dumped and shaped;
    an answer shaped unless it already has that version's shape."""
    if isinstance(result, ShapedAnswer):
        if result.version == version:
            return result.document
        dumped = result.document
    else:
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        shaped: dict[str, Any] = surfaces.serialize_server_result("tools/call", version, dumped)
    except ValueError:  # pydantic's ValidationError is one
        log.error("a call's result does not fit the protocol version")
        raise MCPError(code=INTERNAL_ERROR,
                       message="Handler returned an invalid result") from None
    return shaped

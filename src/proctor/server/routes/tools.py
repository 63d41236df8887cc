"""Tool pins: each upstream tool's reviewed definition and every definition seen since,
and a human's verdict on one of them, named by its digest (see
:mod:`proctor.oversight.pinning`): a review accepts it, a rejection keeps it denied.

A verdict is a human's: the domain refuses an agent or the system (``reviewer_invalid``),
whatever the control-plane policy allows, and audits it with actor type ``human``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from proctor.codes import Code
from proctor.oversight.pinning import PinRecord, ToolPins
from proctor.server.bodies import RequestBody
from proctor.server.control import service
from proctor.server.deps import Call
from proctor.server.parameters import Flag
from proctor.server.problems import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["tools"])

_DECIDE: tuple[Code, ...] = ("not_found", "request_invalid", "review_digest_missing",
                             "tool_review_stale", "tool_definition_rejected",
                             "reviewer_invalid")


class Verdict(RequestBody):
    """The digest of the definition the human looked at (``pending[].digest``)."""

    expected_digest: Annotated[str, Field(max_length=64)] = ""


class ToolPinList(BaseModel):
    tools: list[dict[str, Any]]


def _pins(call: Call) -> ToolPins:
    runtime = call.runtime
    return ToolPins(runtime.store, runtime.clock, runtime.audit)


def _view(record: PinRecord) -> dict[str, Any]:
    return record.as_json()


@router.get("/v1/tools", responses=problem_responses())
def list_tools(call: Call, pending: Flag = False) -> ToolPinList:
    """Every pinned tool (``pending=true``: those with a definition waiting for a human),
    with what its last listing showed, its pending and its rejected definitions."""
    call.require("api:tool.list", service("tools"))
    return ToolPinList(tools=[_view(r) for r in _pins(call).records(pending_only=pending)])


@router.get("/v1/tools/{tool_id:path}", responses=problem_responses("not_found"))
def read_tool(tool_id: str, call: Call) -> dict[str, Any]:
    """One tool's pin: the reviewed definition and each definition seen since."""
    call.require("api:tool.list", service("tools"))
    return _view(_pins(call).record(tool_id))


@router.post("/v1/tools/{tool_id:path}/review", responses=problem_responses(*_DECIDE))
def review_tool(tool_id: str, body: Verdict, call: Call) -> dict[str, Any]:
    """Accept the pending definition with ``expected_digest`` as the reviewed one."""
    call.require("api:tool.review", service("tools"))
    return _view(_pins(call).review(tool_id, by=call.principal.id,
                                    expected_digest=body.expected_digest))


@router.post("/v1/tools/{tool_id:path}/reject", responses=problem_responses(*_DECIDE))
def reject_tool(tool_id: str, body: Verdict, call: Call) -> dict[str, Any]:
    """Reject the pending definition with ``expected_digest``: denied (``tool_rejected``)
    whenever an upstream lists it; final."""
    call.require("api:tool.review", service("tools"))
    return _view(_pins(call).reject(tool_id, by=call.principal.id,
                                    expected_digest=body.expected_digest))

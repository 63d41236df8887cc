"""The audit log: search it, verify its chain, export it as a stream (JSON Lines or
OCSF). Agent and human activity can always be told apart (``actor_type``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from proctor import __version__
from proctor.audit import ActorType, EventFilter, export_lines, search_events, verify_store
from proctor.errors import RequestError
from proctor.server.control import service
from proctor.server.deps import Call
from proctor.server.parameters import Flag
from proctor.server.problems import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["audit"])

NDJSON = "application/x-ndjson"
Short = Annotated[str | None, Query(max_length=512)]


class EventList(BaseModel):
    events: list[dict[str, Any]]


class Verification(BaseModel):
    valid: bool
    events: int
    first_seq: int | None
    last_seq: int
    last_hash: str
    checkpoints: int
    unsigned_tail: int
    problem: dict[str, Any] | None
    notes: list[str]


# a time is ISO 8601 text with its zone: a number would be read as seconds since 1970
# (`since=-1` as 1969), the lax reading of a datetime a query parameter gets by default
Time = Annotated[str | None, Query(max_length=64)]


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(f"`{name}` is not an ISO 8601 time (e.g. "
                           "`2026-12-01T09:00:00Z`)") from None
    if parsed.tzinfo is None:
        raise RequestError(f"`{name}` needs a time zone (e.g. `Z`)")
    return parsed


def _filter(actor_type: ActorType | None, actor: str | None, task: str | None,
            decision: str | None, action: str | None, since: str | None,
            until: str | None) -> EventFilter:
    return EventFilter(actor_type=actor_type, actor_id=actor, task=task, decision=decision,
                       action=action, since=_time("since", since), until=_time("until", until))


Decision = Annotated[Literal["allow", "deny", "approval_required"] | None, Query()]


@router.get("/v1/audit/events", responses=problem_responses())
def search(call: Call, actor_type: Annotated[ActorType | None, Query()] = None,
           actor: Short = None, task: Short = None, decision: Decision = None,
           action: Short = None, since: Time = None, until: Time = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100,
           newest_first: Flag = True) -> EventList:
    """Events matching every filter given, newest first unless told otherwise."""
    call.require("api:audit.search", service("audit"))
    where = _filter(actor_type, actor, task, decision, action, since, until)
    found = search_events(call.runtime.store, where, limit=limit, newest_first=newest_first)
    return EventList(events=[stored.as_json() for stored in found])


@router.get("/v1/audit/verify", responses=problem_responses())
def verify(call: Call) -> Verification:
    """Walk the hash chain and the signed checkpoints; ``problem`` names the first
    broken link (``valid`` false), if any."""
    call.require("api:audit.verify", service("audit"))
    report = verify_store(call.runtime.store, call.state.keyring.checkpoint_verifiers())
    return Verification(**report.as_json())


@router.get("/v1/audit/export", response_class=StreamingResponse, responses={
    200: {"content": {NDJSON: {"schema": {"type": "string"}}},
          "description": "One JSON document per line, in chain order"},
    **problem_responses()})
def export(call: Call, format: Literal["jsonl", "ocsf"] = "jsonl",
           actor_type: Annotated[ActorType | None, Query()] = None, actor: Short = None,
           task: Short = None, decision: Decision = None, action: Short = None,
           since: Time = None, until: Time = None) -> StreamingResponse:
    """Every matching event as a stream: ``jsonl`` lines (``seq``, ``prev_hash``,
    ``hash``, ``event``; an unfiltered export re-verifies offline) or OCSF 1.3.0."""
    call.require("api:audit.export", service("audit"))
    where = _filter(actor_type, actor, task, decision, action, since, until)
    lines = export_lines(call.runtime.store, format, where, product_version=__version__)

    def stream() -> Iterator[bytes]:
        for line in lines:
            yield (line + "\n").encode("utf-8")

    return StreamingResponse(stream(), media_type=NDJSON)

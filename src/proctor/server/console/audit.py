"""The live audit stream: newest first, agent and human actions set apart, with filters.

The page shows the latest events; ``console.js`` then polls
``/console/audit/feed?after=<seq>`` with the same filters and puts new rows on
top. The rows are rendered here (autoescaped), so an agent-supplied value in
an event is text wherever it appears.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from proctor.audit import ActorType, EventFilter, StoredEvent, iter_events, search_events
from proctor.server.console.queries import pending_count
from proctor.server.console.web import Console, ConsoleCall, ConsoleRoute, render
from proctor.server.control import service

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_PAGE = 100
_FEED_MAX = 200
_MAX_SEQ = 2**63 - 1  # what a BIGINT holds: a cursor past it is past every event
DECISIONS = ("allow", "deny", "approval_required")


def _filters(console: Console) -> tuple[EventFilter, dict[str, str]]:
    """The filter from the query string; unknown values are ignored, never echoed raw."""
    params = console.request.query_params
    chosen = {k: params.get(k, "")[:300].strip() for k in ("actor", "decision", "action",
                                                           "who", "task")}
    actor = chosen["actor"] if chosen["actor"] in {a.value for a in ActorType} else ""
    decision = chosen["decision"] if chosen["decision"] in DECISIONS else ""
    chosen.update(actor=actor, decision=decision)
    where = EventFilter(actor_type=ActorType(actor) if actor else None,
                        decision=decision or None, action=chosen["action"] or None,
                        actor_id=chosen["who"] or None, task=chosen["task"] or None)
    return where, chosen


def _rows(events: list[StoredEvent]) -> list[dict[str, Any]]:
    return [{"seq": e.seq, **e.event} for e in events]


@router.get("/console/audit")
def audit_page(console: ConsoleCall) -> Response:
    console.require("api:audit.search", service("audit"))
    where, chosen = _filters(console)
    events = search_events(console.runtime.store, where, limit=_PAGE)
    after = max((e.seq for e in events), default=_last_seq(console))
    return render(console, "audit.html", "audit", rows=_rows(events), after=after,
                  chosen=chosen, decisions=DECISIONS,
                  pending=pending_count(console.runtime.store, console.now))


@router.get("/console/audit/feed")
def audit_feed(console: ConsoleCall) -> Response:
    """Events after ``after``, newest first, as table rows; ``X-Last-Seq`` says where
    the next poll starts."""
    console.require("api:audit.search", service("audit"))
    where, _ = _filters(console)
    try:
        after = min(max(0, int(console.request.query_params.get("after", "0"))), _MAX_SEQ)
    except ValueError:
        after = 0
    events: list[StoredEvent] = []
    for stored in iter_events(console.runtime.store, where, after_seq=after, page=_FEED_MAX):
        events.append(stored)
        if len(events) >= _FEED_MAX:
            break
    last = events[-1].seq if events else after
    response = render(console, "_audit_rows.html", "audit", rows=_rows(events[::-1]))
    response.headers["X-Last-Seq"] = str(last)
    return response


def _last_seq(console: Console) -> int:
    newest = search_events(console.runtime.store, None, limit=1)
    return newest[0].seq if newest else 0

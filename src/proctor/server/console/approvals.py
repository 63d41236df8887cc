"""The approvals queue: every waiting call with its full context, decided in one click.

The queue region refreshes itself (``/console/approvals/queue``, polled by
``console.js``), so a new request appears without reloading. Deciding posts a
form with the session's CSRF token; the approver is the signed-in human.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import RedirectResponse, Response

from proctor.approvals import Approval, ApprovalStatus, SimilarTerms
from proctor.errors import RequestError
from proctor.server.console.queries import pending_count
from proctor.server.console.web import Console, ConsoleCall, ConsoleRoute, check_csrf, render
from proctor.server.control import service
from proctor.server.routes.approvals import approval_resource, desk_for

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

ApprovalId = Annotated[str, Path(min_length=1, max_length=64)]
_ID = re.compile(r"apr_[0-9a-f]{1,40}")


def _cards(console: Console, found: list[Approval]) -> list[dict[str, Any]]:
    desk = desk_for(console)
    may_decide = console.state.control.decide(
        console.principal, "api:approval.decide",
        approval_resource(found[0])).is_allowed if found else False
    cards = []
    for approval in found:
        blocked = ""
        if not may_decide:
            blocked = "your roles do not include deciding approvals"
        elif not desk.may_decide(approval, console.principal.id):
            blocked = ("you are the human this agent acts for, or an owner of it or of its "
                       "grant's line: separation of duties asks another approver to "
                       "approve (you may deny)")
        cards.append({"a": approval, "shown": approval.request, "blocked": blocked,
                      "may_deny": may_decide and approval.is_pending,
                      "expires_epoch": int(approval.expires_at.timestamp())})
    return cards


def _queue(console: Console) -> dict[str, Any]:
    runtime = console.runtime
    pending = runtime.approvals.list(status=ApprovalStatus.PENDING, limit=200)
    ids = ",".join(a.id for a in pending)
    return {"cards": _cards(console, pending), "pending": len(pending),
            "queue_digest": hashlib.sha256(ids.encode()).hexdigest()[:32]}


@router.get("/console")
@router.get("/console/")
def home(console: ConsoleCall) -> Response:
    return RedirectResponse("/console/approvals", status_code=303)


@router.get("/console/approvals")
def approvals_page(console: ConsoleCall) -> Response:
    console.require("api:approval.read", service("approvals"))
    decided = [a for a in console.runtime.approvals.list(limit=60) if not a.is_pending][:25]
    return render(console, "approvals.html", "approvals", decided=decided,
                  notice=_notice(console), **_queue(console))


def _notice(console: Console) -> str:
    """What the last decision did, from fixed words: nothing from the URL is echoed."""
    done, approval_id = (console.request.query_params.get(k, "") for k in ("done", "id"))
    if done not in ("approved", "denied") or not _ID.fullmatch(approval_id):
        return ""
    text = f"{done.capitalize()} {approval_id}."
    for grant in desk_for(console).similar.for_approval(approval_id):
        text += (f" Similar calls of this task are pre-approved: {grant.max_uses} uses "
                 f"until {grant.expires_at:%H:%M:%S} UTC, grant {grant.accessor}.")
    return text


@router.get("/console/approvals/queue")
def approvals_queue(console: ConsoleCall) -> Response:
    """The pending requests only: what the page polls."""
    console.require("api:approval.read", service("approvals"))
    queue = _queue(console)
    response = render(console, "_queue.html", "approvals", **queue)
    response.headers["X-Queue-Digest"] = queue["queue_digest"]
    response.headers["X-Queue-Size"] = str(queue["pending"])
    return response


@router.get("/console/approvals/{approval_id}")
def approval_page(approval_id: ApprovalId, console: ConsoleCall) -> Response:
    approval = console.runtime.approvals.get(approval_id)
    console.require("api:approval.read", approval_resource(approval))
    [card] = _cards(console, [approval])
    return render(console, "approval.html", "approvals", card=card,
                  pending=pending_count(console.runtime.store, console.now))


@router.post("/console/approvals/{approval_id}/decide")
async def decide(approval_id: ApprovalId, request: Request, console: ConsoleCall) -> Response:
    form = await check_csrf(request, console)
    verdict = form.get("decision", "")
    if verdict not in ("approve", "deny"):
        raise RequestError("the decision is `approve` or `deny`")
    approval = console.runtime.approvals.get(approval_id)
    console.require("api:approval.decide", approval_resource(approval))
    similar = None
    if verdict == "approve" and form.get("similar") == "on":
        vary = tuple(v.strip() for v in form.get("vary", "").split(",") if v.strip())
        similar = SimilarTerms(vary=vary)
    decided = desk_for(console).decide(
        approval.id, approver=console.principal.id, approve=verdict == "approve",
        comment=form.get("comment", "")[:2000], similar=similar, source=console.source)
    word = "approved" if verdict == "approve" else "denied"
    return RedirectResponse(f"/console/approvals?done={word}&id={decided.approval.id}",
                            status_code=303)

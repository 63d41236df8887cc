"""A human's verdict on one pending definition of a tool, named by its digest: review
(it becomes the reviewed definition) or reject (it stays denied wherever it is listed).

Both check, in order: the verdict names a digest (``review_digest_missing``); ``by`` is a
human (``reviewer_invalid``: an agent or the system never reviews a tool); the tool is
pinned (``not_found``); the digest is not rejected (``tool_definition_rejected``: a
rejection is final for that definition); it is pending (else ``tool_review_stale``, or
``request_invalid`` when nothing is pending): a verdict applies to exactly the definition
its reviewer looked at, never to another seen before or since. Nothing is changed on a
refusal; a verdict is audited as the human's (``tool.review`` / ``tool.reject``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import delete, insert, select, update

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id, record_change
from proctor.errors import (
    NotFoundError,
    RequestError,
    ReviewStaleError,
    ReviewUnnamedError,
    ToolRejectedError,
)
from proctor.oversight.pinning import definition_digest
from proctor.store import Store
from proctor.store.tables import tool_catalog, tool_definitions

__all__ = ["decide"]


def decide(store: Store, audit: AuditLog, now: datetime, tool_id: str, *, by: str,
           digest: str, verdict: Literal["reviewed", "rejected"]) -> None:
    """Record ``by``'s ``verdict`` on the pending definition of ``tool_id`` with
    ``digest``, and audit it; raise (nothing changed) on any refusal above."""
    from proctor.identity.people import check_human

    verb = "review" if verdict == "reviewed" else "rejection"
    if not digest:
        raise ReviewUnnamedError(
            f"a {verb} of tool `{tool_id}` names the digest of the definition it decides "
            "(`proctor tool show` gives it)")
    by = check_human(by, "reviewer")
    with store.transaction() as conn:
        row = conn.execute(select(tool_catalog).where(
            tool_catalog.c.tool_id == tool_id).with_for_update()).first()
        if row is None or row.pin_state is None:
            raise NotFoundError(f"tool `{tool_id}` has no pin")
        seen = {s.digest: s for s in conn.execute(select(tool_definitions).where(
            tool_definitions.c.tool_id == tool_id)).all()}
        chosen = seen.get(digest)
        if chosen is not None and chosen.verdict == "rejected":
            raise ToolRejectedError(
                f"definition `{digest}` of tool `{tool_id}` was rejected by "
                f"`{chosen.decided_by}`; a rejection is final")
        if chosen is None:
            if not any(s.verdict == "pending" for s in seen.values()):
                raise RequestError(f"tool `{tool_id}` has no change to review")
            raise ReviewStaleError(
                f"no definition of tool `{tool_id}` with digest `{digest}` waits for a "
                "human; look at it again (`proctor tool show`)")
        listed = definition_digest(row.seen_definition) if row.seen_definition else None
        if verdict == "rejected":
            conn.execute(update(tool_definitions).where(
                tool_definitions.c.tool_id == tool_id, tool_definitions.c.digest == digest)
                .values(verdict="rejected", decided_at=now, decided_by=by))
            if listed == digest:
                conn.execute(update(tool_catalog).where(tool_catalog.c.tool_id == tool_id)
                             .values(pin_state="rejected"))
        else:
            conn.execute(delete(tool_definitions).where(
                tool_definitions.c.tool_id == tool_id, tool_definitions.c.digest == digest))
            values: dict[str, object] = {
                "definition": chosen.definition, "reviewed_digest": digest,
                "reviewed_at": now, "reviewed_by": by}
            if listed == digest:
                values.update(pin_state="reviewed", seen_definition=None)
            elif listed is None and row.definition is not None:
                # the last listing showed the definition reviewed until now: that is a
                # definition no human reviewed any longer, and it waits for one
                values.update(pin_state="unreviewed", seen_definition=row.definition,
                              pin_change="changed", changed_at=now)
                conn.execute(insert(tool_definitions).values(
                    tool_id=tool_id, digest=row.reviewed_digest, server=row.server,
                    definition=row.definition, verdict="pending", change="changed",
                    renamed_from=None, seen_at=now, listed_at=now))
            conn.execute(update(tool_catalog).where(tool_catalog.c.tool_id == tool_id)
                         .values(**values))
        before = row.reviewed_digest
    record_change(audit, AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.HUMAN, by),
        action="tool.review" if verdict == "reviewed" else "tool.reject", target=tool_id,
        outcome=verdict, detail={"change": chosen.change, "renamed_from": chosen.renamed_from,
                                 "digest": digest, "previous_digest": before}))

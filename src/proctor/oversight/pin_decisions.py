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

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.errors import (
    NotFoundError,
    ProctorError,
    RequestError,
    ReviewStaleError,
    ReviewUnnamedError,
    ToolRejectedError,
)
from proctor.oversight.audited import commit_with_event, insert_row, read_rows, update_rows
from proctor.oversight.pinning import definition_digest
from proctor.store.tables import tool_catalog, tool_definitions

__all__ = ["decide"]

_TOOL = "tool_id = {p}"
_DEFINITION = "tool_id = {p} AND digest = {p}"
_FORGET = "DELETE FROM tool_definitions WHERE tool_id = {p} AND digest = {p}"


def decide(audit: AuditLog, now: datetime, tool_id: str, *, by: str,
           digest: str, verdict: Literal["reviewed", "rejected"]) -> None:
    """Record ``by``'s ``verdict`` on the pending definition of ``tool_id`` with
    ``digest``, with its event, in one transaction (the audit writer's: the log holds the
    event if and only if the verdict was recorded); raise (nothing changed) on any
    refusal above. If the log cannot be written nothing is recorded
    (:class:`~proctor.errors.AuditUnavailableError`): a review gives access, and a
    rejection waits for the log as well (the definition stays pending, denied)."""
    from proctor.identity.people import check_human

    verb = "review" if verdict == "reviewed" else "rejection"
    if not digest:
        raise ReviewUnnamedError(
            f"a {verb} of tool `{tool_id}` names the digest of the definition it decides "
            "(`proctor tool show` gives it)")
    by = check_human(by, "reviewer")
    event = AuditEvent(id=new_event_id(now), time=now, actor=Actor(ActorType.HUMAN, by),
                       action="tool.review" if verdict == "reviewed" else "tool.reject",
                       target=tool_id, outcome=verdict)
    commit_with_event(audit, event, _Verdict(tool_id, by, digest, verdict, now, event))


@dataclass(slots=True)
class _Verdict:
    """The verdict, decided on the tool's rows as the writer's transaction reads them."""

    tool_id: str
    by: str
    digest: str
    verdict: Literal["reviewed", "rejected"]
    now: datetime
    event: AuditEvent
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        try:
            detail = self._decide(tx)
        except ProctorError as refused:  # checked before anything was written
            self.refusal = refused
            return WITHDRAWN
        return replace(self.event, detail=detail)

    def _decide(self, tx: WriteCursor) -> dict[str, Any]:
        tool_id, digest, now, by = self.tool_id, self.digest, self.now, self.by
        found = read_rows(tx, tool_catalog, _TOOL, [tool_id], lock=True)
        if not found or found[0].pin_state is None:
            raise NotFoundError(f"tool `{tool_id}` has no pin")
        row = found[0]
        seen = {s.digest: s for s in read_rows(tx, tool_definitions, _TOOL, [tool_id])}
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
        if self.verdict == "rejected":
            update_rows(tx, tool_definitions, {"verdict": "rejected", "decided_at": now,
                                               "decided_by": by}, _DEFINITION, [tool_id, digest])
            if listed == digest:
                update_rows(tx, tool_catalog, {"pin_state": "rejected"}, _TOOL, [tool_id])
        else:
            tx.execute(_FORGET, [tool_id, digest])
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
                insert_row(tx, tool_definitions, {
                    "tool_id": tool_id, "digest": row.reviewed_digest, "server": row.server,
                    "definition": row.definition, "verdict": "pending", "change": "changed",
                    "renamed_from": None, "seen_at": now, "listed_at": now})
            update_rows(tx, tool_catalog, values, _TOOL, [tool_id])
        return {"change": chosen.change, "renamed_from": chosen.renamed_from,
                "digest": digest, "previous_digest": row.reviewed_digest}

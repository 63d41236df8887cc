"""A human's change and its audit event, committed in one transaction.

A change a human makes (an agent registered, reviewed, suspended, retired...) is the
effects of its own audit event, applied in the audit writer's transaction
(:meth:`~proctor.audit.AuditLog.record_with`): the log holds the event if and only if
the change took effect. Written after the change had committed, the event was lost to a
process that died between the two, and the change stood with nothing in the log saying
who made it.

A change's effects (:class:`Change`) check what they find in that transaction; a check
that fails writes nothing and leaves its refusal in :attr:`Change.refusal`, which
:func:`commit_with_event` raises once the transaction is over.

If the audit log cannot write the transaction, nothing of it was made. A change that
gives access (a registration, a review that trusts a manifest) is then refused: fail
closed, :class:`~proctor.errors.AuditUnavailableError` says it was not made. A change
that takes access away gives ``alone``, which makes it in a transaction of its own (an
audit outage never keeps an agent from being stopped), and the error says it took effect
unaudited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from proctor.audit import AuditEvent, AuditLog, WriteCursor
from proctor.errors import AuditError, AuditUnavailableError, ProctorError

__all__ = ["Change", "commit_with_event"]

log = logging.getLogger(__name__)


class Change(Protocol):
    """A human's change as the effects of its event (:class:`~proctor.audit.writer.Effects`)."""

    refusal: ProctorError | None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        """Make the change in ``tx``; as :meth:`Effects.apply <proctor.audit.writer.
        Effects.apply>`. A check that fails sets :attr:`refusal` and writes nothing."""


def commit_with_event(audit: AuditLog, event: AuditEvent, change: Change, *,
                      alone: Callable[[], object] | None = None) -> None:
    """Make ``change`` with ``event`` in one transaction of the audit writer, or raise
    its refusal. If the log cannot be written: ``alone`` (a change that takes access
    away) makes the change without its event; without it (a change that gives access)
    nothing is made. Either way :class:`~proctor.errors.AuditUnavailableError` says
    which."""
    try:
        audit.record_with(event, change)
    except AuditError as exc:
        what = f"`{event.action}` of `{event.target}`"
        if alone is None:
            log.error("%s could not be audited; it was not made", what)
            raise AuditUnavailableError(
                f"{what} could not be audited, so it was not made") from exc
        log.error("%s could not be audited; it is made all the same", what)
        alone()
        raise AuditUnavailableError(f"{what} took effect but could not be audited") from exc
    if change.refusal is not None:
        raise change.refusal

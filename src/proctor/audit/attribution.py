"""Attributing a process's human events: which channel and which account acted.

A CLI command acts for one human, the operator. Some of its actions are
audited by the part that performs them (a revocation, a secret change, an
approval), with the operator as the actor; only the CLI knows the rest: the
operating-system account that ran the command and the channel. An
:class:`Attribution` given to the :class:`~proctor.audit.AuditLog` adds those to
every event of that actor, whoever builds it, and keeps the events of that
actor that could not be written, so that the command fails even where the
part that tried to write one carried on (a revocation stands when its event
cannot be written; the command that asked for it must still say so).

>>> from datetime import datetime
>>> from proctor.audit import Actor, ActorType, human_event
>>> who = Attribution(Actor(ActorType.HUMAN, "erin"), {"os_user": "erin"}, source="cli")
>>> event = who.apply(human_event("erin", "agent.suspend", 'Agent::"a"', "suspended",
...                               now=datetime.fromisoformat("2026-01-01T00:00:00+00:00")))
>>> event.detail["os_user"], event.source
('erin', 'cli')
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from proctor.audit.events import Actor, AuditEvent

__all__ = ["Attribution"]


class Attribution:
    """What to record beside every event of ``actor``, and which of them failed.

    ``detail`` entries are added to the event's detail (the event's own entries
    win); ``source`` fills an event's empty ``source``. Only events whose actor
    has the type and id of ``actor`` are touched.
    """

    def __init__(self, actor: Actor, detail: Mapping[str, Any], *,
                 source: str | None = None) -> None:
        self.actor = actor
        self.detail = dict(detail)
        self.source = source
        self._lock = threading.Lock()
        self._unrecorded: list[AuditEvent] = []

    def concerns(self, event: AuditEvent) -> bool:
        """True if ``event`` is an action of this attribution's actor."""
        return (event.actor.type, event.actor.id) == (self.actor.type, self.actor.id)

    def apply(self, event: AuditEvent) -> AuditEvent:
        """``event`` with the detail and source added, if it is the actor's."""
        if not self.concerns(event):
            return event
        return dataclasses.replace(event, detail={**self.detail, **event.detail},
                                   source=event.source or self.source)

    def note_failed(self, event: AuditEvent) -> None:
        """Remember that ``event`` (if it is the actor's) could not be written."""
        if self.concerns(event):
            with self._lock:
                self._unrecorded.append(event)

    @property
    def unrecorded(self) -> list[AuditEvent]:
        """The actor's events that could not be written, oldest first."""
        with self._lock:
            return list(self._unrecorded)

"""What the gateway hands an agent unasked (an upstream's log lines, progress, resource
updates): handed on within a time bound, or dropped.

An agent that stops reading its stream (an SSE response, a stdio pipe) lets its
buffers fill: the SDK's streams, the socket's and the pipe's, each bounded, so memory
stays bounded, but the hand-off would then wait without end. It waits in the
upstream's reader (a stdio upstream's next line is read only once its log is relayed,
in order), so every call of the grant on that upstream would wait with it, and a
resource update would wait for each follower in turn.

So each hand-off has ``relay_send_timeout_seconds`` (the gateway config's, 10 by
default). The first that times out marks its recipient (a call's relay, or an agent
session following resource updates) stalled: what follows for it is dropped at once,
without waiting or scanning, and the stall is logged (a warning) and audited
(``gateway.relay``, outcome ``dropped``) once. Nothing else waits for a stalled
agent: the other sessions' messages go on.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["DEFAULT_SEND_TIMEOUT", "Delivery"]

log = logging.getLogger(__name__)

DEFAULT_SEND_TIMEOUT = 10.0  # as the gateway config's ``relay_send_timeout_seconds``
OnStall = Callable[[str, float], Awaitable[None]]  # what was dropped, the time waited


class Delivery:
    """Bounded hand-offs to agents, and the recipients that stalled (held weakly)."""

    def __init__(self, timeout: float = DEFAULT_SEND_TIMEOUT,
                 on_stall: OnStall | None = None) -> None:
        self.timeout = timeout
        self._on_stall = on_stall
        self._stalled: weakref.WeakSet[Any] = weakref.WeakSet()
        self.dropped = 0  # messages not handed on, over the board's life

    def is_stalled(self, recipient: object) -> bool:
        """Whether ``recipient`` stalled: what is meant for it is dropped (counted)."""
        if recipient in self._stalled:
            self.dropped += 1
            return True
        return False

    def forgive(self, recipient: object) -> None:
        """``recipient`` shows it is back (it subscribed again): hand it messages again."""
        self._stalled.discard(recipient)

    async def send(self, recipient: object, what: str,
                   send: Callable[[], Awaitable[object]]) -> bool:
        """Run ``send`` (the hand-off of ``what`` to ``recipient``) unless ``recipient``
        stalled, within the time bound; whether it was handed on. An error of the
        transport (the agent gone) is the caller's."""
        if self.is_stalled(recipient):
            return False
        with anyio.move_on_after(self.timeout) as waited:
            await send()
        if not waited.cancelled_caught:
            return True
        self._stalled.add(recipient)
        self.dropped += 1
        log.warning("an agent did not take %s within %g s; what the gateway relays to it "
                    "there is dropped from now on", what, self.timeout)
        if self._on_stall is not None:
            await self._on_stall(what, self.timeout)
        return False

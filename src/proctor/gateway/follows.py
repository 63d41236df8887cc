"""Which agent sessions follow which upstream resource, for one gateway session.

A grant's MCP sessions (up to 64 over HTTP, on ``/mcp`` and on each ``/mcp/<server>``)
share its gateway session and so its upstream connections, and an upstream keeps one
subscription per connection. The gateway therefore keeps who follows what: the
upstream is asked to subscribe when the first agent session follows a resource on
that connection, and to unsubscribe only when the last one stops; an unsubscribe of
what a session does not follow ends nothing. An update goes to the sessions that
follow that resource *of that upstream* (two servers may name the same URI).

Followers are held weakly: a session that ends is forgotten with it. A subscription
nobody follows any more (its sessions ended, or stalled and were dropped, without
unsubscribing) is ended upstream when the next update finds nobody to hand it to
(:meth:`Follows.unfollowed`): the upstream does not stream updates to nobody, nor
to whoever follows the URI later without having asked. The changes of one resource of
one upstream are made one at a time, each with its upstream request; those of others
go on meanwhile (:meth:`Follows.holding`): an upstream that does not answer a
subscribe holds up only who follows that resource of it. While a session follows
something, the grant's gateway session is in use: it is not closed as idle (which
would stop the upstream, and the subscription with it, under the follower).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

__all__ = ["Follows"]

log = logging.getLogger(__name__)

_Key = tuple[str, str]  # (upstream name, resource URI)


class Follows:
    """The followers of each ``(upstream, uri)``, and the connection subscribed for them.
    Hold :meth:`holding` that ``(upstream, uri)`` across a change of it and the upstream
    request it takes: changes of one resource of one upstream are made one at a time (a
    subscribe never overtakes the unsubscribe before it), and one that waits for an
    upstream that does not answer holds up nothing else."""

    def __init__(self) -> None:
        self._followers: dict[_Key, weakref.WeakSet[Any]] = {}
        self._subscribed: dict[_Key, Any] = {}  # the upstream connection subscribed on
        self._locks: dict[_Key, tuple[anyio.Lock, list[int]]] = {}  # held or awaited

    @asynccontextmanager
    async def holding(self, server: str, uri: str) -> AsyncIterator[None]:
        """The lock of ``uri`` of ``server``: kept while someone holds or awaits it."""
        key = (server, uri)
        lock, users = self._locks.setdefault(key, (anyio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def is_subscribed(self, server: str, uri: str, connection: object) -> bool:
        """Whether ``connection`` (the upstream's, now) is subscribed to ``uri`` already:
        a new connection (the upstream restarted) has no subscriptions."""
        return self._subscribed.get((server, uri)) is connection

    def subscribed(self, server: str, uri: str, connection: object) -> None:
        self._subscribed[(server, uri)] = connection

    def unsubscribed(self, server: str, uri: str) -> None:
        self._subscribed.pop((server, uri), None)

    def add(self, server: str, uri: str, session: object) -> None:
        """``session`` follows ``uri`` of ``server`` (once, however often it asks)."""
        self._followers.setdefault((server, uri), weakref.WeakSet()).add(session)

    def remove(self, server: str, uri: str, session: object) -> bool:
        """``session`` stops following; whether it did follow."""
        followers = self._followers.get((server, uri))
        if followers is None or session not in followers:
            return False
        followers.discard(session)
        if not followers:
            del self._followers[(server, uri)]
        return True

    def is_followed(self, server: str, uri: str) -> bool:
        return bool(self._followers.get((server, uri)))

    def is_following(self) -> bool:
        """Whether any agent session follows anything here."""
        return any(self._followers.values())

    async def unfollowed(self, server: str, uri: str) -> None:
        """Nobody may follow ``uri`` of ``server`` any more: if nobody does, the upstream
        connection subscribed for them is asked to unsubscribe (the gateway's own
        housekeeping, not an agent's request: it ends access, and decides nothing)."""
        async with self.holding(server, uri):
            if self.is_followed(server, uri):
                return
            self._followers.pop((server, uri), None)
            connection = self._subscribed.pop((server, uri), None)
            if connection is None:
                return
            try:
                await connection.subscribe(uri, on=False)
            except Exception as exc:  # it stays subscribed: its updates find nobody again
                log.info("upstream `%s` could not be unsubscribed from a resource nobody "
                         "follows: %s", server[:200], type(exc).__name__)

    def followers(self, server: str, uri: str) -> list[Any]:
        return list(self._followers.get((server, uri), ()))

    def drop(self, session: object) -> None:
        """``session`` follows nothing any more (it stalled, or is gone). The upstream
        stays subscribed: its updates are dropped until someone follows again."""
        for key in list(self._followers):
            self.remove(*key, session)

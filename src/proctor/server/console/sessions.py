"""Console sessions: a random cookie, only its hash stored, ended by logout or expiry.

A session is opened with a human's credential (an API token such as the
admin token, or an OIDC token) and lasts at most eight hours — no longer than
the OIDC token it was opened with. A session opened with an API token ends
when that token is revoked or expires. Its human is held to today's sign-in rules
at each request, as the API holds them (``web._signed_in``): one they refuse is
ended there. The CSRF token of a session is derived
from the cookie (HMAC), so it needs no storage and changes with every session.

A sign-in or sign-out with an audit log is the effects of its own ``console.login`` /
``console.logout`` event, in the audit writer's transaction
(:mod:`proctor.oversight.audited`): the event used to be written after the session was
opened, and a failure only logged, so a sign-in the log could not hold still opened a
session. Now a sign-in the log cannot hold opens none (503 ``audit_unavailable``); a
sign-out ends the session all the same, and says it could not be audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, update

from proctor.audit import AuditEvent, AuditLog, WriteCursor
from proctor.clock import Clock
from proctor.errors import ProctorError
from proctor.oversight.audited import commit_with_event, insert_row, update_rows
from proctor.store import Store, as_utc
from proctor.store.tables import api_tokens, console_sessions

__all__ = ["COOKIE", "MAX_SESSION_SECONDS", "ConsoleSession", "ConsoleSessions", "csrf_for"]

COOKIE = "proctor_session"
MAX_SESSION_SECONDS = 8 * 3600
_MAX_COOKIE = 128


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def csrf_for(cookie: str) -> str:
    """The CSRF token forms of this session carry."""
    return hmac.new(cookie.encode(), b"proctor-console-csrf", hashlib.sha256).hexdigest()


@dataclass(slots=True)
class _Opened:
    """The session's row, in the writer's transaction."""

    values: dict[str, Any]
    refusal: ProctorError | None = None  # none: the human was authenticated before

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        insert_row(tx, console_sessions, self.values)
        return None


@dataclass(slots=True)
class _Ended:
    """The session of a cookie's hash ended, if it is live."""

    token_hash: str
    now: datetime
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        update_rows(tx, console_sessions, {"revoked_at": self.now},
                    "token_hash = {p} AND revoked_at IS NULL", [self.token_hash])
        return None


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id: str
    human_id: str
    roles: frozenset[str]
    method: str
    credential: str
    created_at: datetime
    expires_at: datetime


class ConsoleSessions:
    """Opening, finding and ending console sessions in the store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def open(self, human_id: str, roles: frozenset[str], *, method: str, credential: str = "",
             expires_at: datetime | None = None, audit: AuditLog | None = None,
             event: AuditEvent | None = None) -> tuple[str, ConsoleSession]:
        """A new session; returns the cookie value (shown to the browser only) and it.
        With ``audit``: opened with ``event`` (its ``console.login``) in one transaction,
        or not at all (:class:`~proctor.errors.AuditUnavailableError`)."""
        now = self._clock.now()
        latest = now + timedelta(seconds=MAX_SESSION_SECONDS)
        ends = min(expires_at, latest) if expires_at is not None else latest
        cookie = secrets.token_urlsafe(32)
        session = ConsoleSession(f"ses_{secrets.token_hex(8)}", human_id, roles, method,
                                 credential, now, ends)
        values = {"id": session.id, "token_hash": _hash(cookie), "human_id": human_id,
                  "roles": sorted(roles), "method": method, "credential": credential,
                  "created_at": now, "expires_at": ends}
        if audit is not None and event is not None:
            commit_with_event(audit, event, _Opened(values))
        else:
            with self._store.transaction() as conn:
                conn.execute(insert(console_sessions).values(**values))
        return cookie, session

    def find(self, cookie: str) -> ConsoleSession | None:
        """The live session of ``cookie``, or None (unknown, ended, expired, or its API
        token revoked)."""
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        now = self._clock.now()
        t = console_sessions.c
        with self._store.reading() as conn:
            row = conn.execute(select(console_sessions).where(and_(
                t.token_hash == _hash(cookie), t.revoked_at.is_(None),
                t.expires_at > now))).first()
            if row is None:
                return None
            if row.credential:
                token = conn.execute(select(api_tokens.c.revoked_at, api_tokens.c.expires_at)
                                     .where(api_tokens.c.id == row.credential)).first()
                if token is None or token.revoked_at is not None or (
                        token.expires_at is not None and as_utc(token.expires_at) <= now):
                    return None
        return ConsoleSession(row.id, row.human_id, frozenset(row.roles), row.method,
                              row.credential, as_utc(row.created_at), as_utc(row.expires_at))

    def end(self, cookie: str, *, audit: AuditLog | None = None,
            event: AuditEvent | None = None) -> None:
        """End the session of ``cookie``. With ``audit``: with ``event`` (its
        ``console.logout``) in one transaction; if the log cannot be written, ended all
        the same and :class:`~proctor.errors.AuditUnavailableError` says so."""
        if audit is not None and event is not None:
            commit_with_event(audit, event, _Ended(_hash(cookie), self._clock.now()),
                              alone=lambda: self.end(cookie))
            return
        with self._store.transaction() as conn:
            conn.execute(update(console_sessions).where(and_(
                console_sessions.c.token_hash == _hash(cookie),
                console_sessions.c.revoked_at.is_(None))).values(revoked_at=self._clock.now()))

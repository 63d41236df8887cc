"""API tokens: bearer tokens for humans where no OIDC provider is configured.

The admin token ``proctor init`` prints once is one of these. A token is
``ptk_`` and 43 random URL-safe characters (256 bits); only its SHA-256 is
stored, and the token is named everywhere else by its accessor ``tok_…``.
Looking a token up by its hash is safe against timing: an attacker cannot
steer the hash of a guess towards a stored one.

A human's token made or revoked (``proctor token create``/``revoke``, the admin token
``proctor init`` and ``proctor serve`` make) is the effects of its own ``token.create``
or ``token.revoke`` event, in the audit writer's transaction
(:mod:`proctor.oversight.audited`): the log holds the event if and only if the token
was made or revoked. The event used to be written after the change had committed, so a
process that died between the two left a token in force with nothing in the log saying
who made it. If the log cannot be written a token is not made (fail closed; it used to
be made, then revoked), and a revocation is made all the same, the caller told.

>>> tokens = ApiTokens(store, clock)                                # doctest: +SKIP
>>> minted = tokens.create("erin@acme.example", {"admin"}, issuers=())  # doctest: +SKIP
>>> tokens.verify(minted.token).human_id                            # doctest: +SKIP
'erin@acme.example'
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from proctor.audit import AuditEvent, AuditLog, WriteCursor
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import NotFoundError, ProctorError, RequestError
from proctor.human_ids import canonical_human_id
from proctor.identity.humans import BOOTSTRAP_ADMIN, HumanIssuer, domains_refusal
from proctor.identity.people import check_human
from proctor.oversight.audited import commit_with_event, insert_row, read_rows, update_rows
from proctor.server.principals import HUMAN_ROLES
from proctor.store import Store, as_utc
from proctor.store.tables import api_tokens

__all__ = ["ADMIN_ID", "TOKEN_PREFIX", "ApiToken", "ApiTokens", "MintedToken", "token_target"]

TOKEN_PREFIX = "ptk_"  # noqa: S105 (a prefix, not a secret)
ADMIN_ID = BOOTSTRAP_ADMIN
_LOOKUP = ("SELECT id, human_id, roles, created_at, expires_at, revoked_at FROM api_tokens "
           "WHERE token_hash = {p}")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored token, without its secret."""

    id: str
    human_id: str
    roles: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "human": self.human_id, "roles": sorted(self.roles),
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A new token: ``token`` is shown once and never stored."""

    token: str
    record: ApiToken


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_target(token_id: str) -> str:
    """A token as its audit events name it."""
    return f'ApiToken::"{token_id}"'


@dataclass(slots=True)
class _Created:
    """The new token's row, in the writer's transaction."""

    values: dict[str, Any]
    refusal: ProctorError | None = None  # none: the token was checked before

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        insert_row(tx, api_tokens, self.values)
        return None


@dataclass(slots=True)
class _Revoked:
    """The token revoked now, unless it was already; its event names its human."""

    token_id: str
    now: datetime
    event: AuditEvent
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        found = read_rows(tx, api_tokens, "id = {p}", [self.token_id], lock=True)
        if not found:
            self.refusal = NotFoundError(f"API token `{self.token_id[:80]}` does not exist")
            return WITHDRAWN
        detail = {**self.event.detail, "human": canonical_human_id(found[0].human_id)}
        if found[0].revoked_at is not None:
            detail["unchanged"] = True
        else:
            update_rows(tx, api_tokens, {"revoked_at": self.now}, "id = {p}", [self.token_id])
        return replace(self.event, detail=detail)


class ApiTokens:
    """Creating, verifying, listing and revoking API tokens in the store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create(self, human_id: str, roles: Iterable[str], *, issuers: Iterable[HumanIssuer],
               ttl_seconds: int | None = None, audit: AuditLog | None = None,
               event: AuditEvent | None = None) -> MintedToken:
        """A token for ``human_id`` with ``roles``; the human must be an address in the
        ``id_domains`` of the deployment's human ``issuers`` (``server.toml``; required,
        so that no caller skips the check by leaving them out) where they declare some
        (:func:`~proctor.identity.humans.domains_refusal`). The server checks it again at
        each use (:meth:`~proctor.identity.humans.HumanVerifier.token_refusal`): a token
        made before the domains were declared stops signing in then.

        With ``audit``: the token is stored with ``event`` (a human's ``token.create``,
        its target and detail filled in here) in one transaction, or not at all
        (:class:`~proctor.errors.AuditUnavailableError`)."""
        human_id = check_human(human_id, "human")
        refusal = domains_refusal(human_id, issuers)
        if refusal is not None:
            raise RequestError(f"{refusal}: an API token names one of the people they sign "
                               "in, so that one id is one person")
        wanted = frozenset(roles)
        unknown = sorted(wanted - set(HUMAN_ROLES))
        if unknown or not wanted:
            raise RequestError(f"roles are some of {', '.join(HUMAN_ROLES)}"
                               + (f"; `{unknown[0]}` is not one" if unknown else ""))
        if ttl_seconds is not None and not 60 <= ttl_seconds <= 366 * 86400:
            raise RequestError("a token lives between 60 seconds and 366 days")
        now = self._clock.now()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = ApiToken(f"tok_{secrets.token_hex(8)}", human_id, wanted, now,
                          now + timedelta(seconds=ttl_seconds) if ttl_seconds else None, None)
        values = {"id": record.id, "token_hash": _hash(token), "human_id": human_id,
                  "roles": sorted(wanted), "created_at": now, "expires_at": record.expires_at}
        if audit is not None and event is not None:  # with its event, or not at all
            commit_with_event(audit, replace(
                event, target=token_target(record.id),
                detail={**event.detail, "human": human_id, "roles": sorted(wanted)}),
                _Created(values))
        else:
            with self._store.transaction() as conn:
                conn.execute(insert(api_tokens).values(**values))
        return MintedToken(token, record)

    def ensure_admin(self, *, audit: AuditLog | None = None,
                     event: AuditEvent | None = None) -> MintedToken | None:
        """Create the local admin token if no admin token exists yet; None if one does
        (``audit``, ``event``: as :meth:`create`)."""
        if any("admin" in t.roles and t.revoked_at is None for t in self.list()):
            return None
        # the bootstrap admin is no provider's person: no issuer's domains apply to it
        return self.create(ADMIN_ID, {"admin"}, issuers=(), audit=audit, event=event)

    def verify(self, token: str) -> ApiToken | None:
        """The live token ``token`` is, or None (unknown, revoked or expired)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        rows = self._store.fetch(_LOOKUP, [_hash(token)])
        if not rows:
            return None
        token_id, human_id, roles, created_at, expires_at, revoked_at = rows[0]
        if revoked_at is not None:
            return None
        expires = _time(expires_at)
        if expires is not None and expires <= self._clock.now():
            return None
        if isinstance(roles, str):  # SQLite hands JSON back as text on the raw connection
            roles = json.loads(roles)
        return ApiToken(token_id, canonical_human_id(human_id), frozenset(roles),
                        _required(created_at), expires, None)

    def list(self) -> list[ApiToken]:
        with self._store.reading() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at)).all()
        return [ApiToken(r.id, canonical_human_id(r.human_id), frozenset(r.roles),
                         _required(r.created_at), _time(r.expires_at), _time(r.revoked_at))
                for r in rows]

    def revoke(self, token_id: str, *, audit: AuditLog | None = None,
               event: AuditEvent | None = None) -> ApiToken:
        """Revoke the token (it stays revoked). With ``audit``: in one transaction with
        ``event`` (a human's ``token.revoke``, its target and detail filled in here); if
        the log cannot be written the token is revoked all the same and
        :class:`~proctor.errors.AuditUnavailableError` says so."""
        if audit is not None and event is not None:
            event = replace(event, target=token_target(token_id))
            commit_with_event(audit, event, _Revoked(token_id, self._clock.now(), event),
                              alone=lambda: self._revoke(token_id))
        else:
            self._revoke(token_id)
        found = [t for t in self.list() if t.id == token_id]
        if not found:
            raise NotFoundError(f"API token `{token_id[:80]}` does not exist")
        return found[0]

    def _revoke(self, token_id: str) -> None:
        with self._store.transaction() as conn:
            conn.execute(update(api_tokens).where(
                api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self._clock.now()))


def _time(value: Any) -> datetime | None:
    return None if value is None else _required(value)


def _required(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite's raw driver returns text
        value = datetime.fromisoformat(value)
    return as_utc(value)

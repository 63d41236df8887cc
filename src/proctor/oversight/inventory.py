"""The inventory of connectors: upstream MCP servers, the SaaS behind them, OAuth apps.

A connector is a stored record, not only a Cedar label: its kind, owner, the MCP
servers whose tools it backs (and the tools labelled with it), the OAuth app it
holds (client id, scopes, redirect URIs, where the credential lives) and the names
of the secrets it uses. Records come from an operator (``proctor connector add``),
from discovery (``proctor discover --register``) or from a gateway config.

For each connector :meth:`Inventory.report` tells who can reach it now — the access
paths to its tools (:mod:`proctor.oversight.paths`: Cedar's partial evaluation and
the live grants) — when it was last used (the newest allowed call on one of its
tools in the audit log), and its findings, each with its reason:

- ``no_owner``: nobody is accountable for it;
- ``unused``: no allowed call in 30 days (or ever, once it is 30 days old);
- ``over_broad_scopes``: OAuth scopes a well-known provider documents as broad
  (:data:`BROAD_SCOPES`);
- ``plaintext_secret``: ``proctor discover`` saw one of its secrets in plaintext.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, insert, select, update

from proctor.audit import Actor, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import NotFoundError, ProctorError, RequestError
from proctor.oversight.audited import commit_with_event, insert_row, read_rows, update_rows
from proctor.oversight.paths import AccessPath, LiveGrant, access_paths
from proctor.policy import PolicyEngine
from proctor.store import Store
from proctor.store.tables import audit_events, connectors

__all__ = ["BROAD_SCOPES", "KINDS", "UNUSED_AFTER", "Connector", "ConnectorReport", "Finding",
           "Inventory"]

KINDS = ("mcp_server", "saas", "oauth_app")
UNUSED_AFTER = timedelta(days=30)
_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]){0,63}\Z")
_LAST_USE_SCAN = 20_000  # allowed decisions read, newest first, to find a last use

# Scopes each provider's documentation describes as granting broad access (whole
# accounts, every repository or mailbox, administration); a connector holding one
# is reported so that a human narrows it.
BROAD_SCOPES: dict[str, frozenset[str]] = {
    # docs.github.com: "Scopes for OAuth apps"
    "github": frozenset({"repo", "admin:org", "admin:repo_hook", "admin:org_hook",
                         "delete_repo", "write:org", "admin:enterprise", "user",
                         "admin:public_key", "admin:gpg_key", "workflow"}),
    # developers.google.com: "OAuth 2.0 Scopes for Google APIs" (restricted scopes)
    "google": frozenset({"https://mail.google.com/",
                         "https://www.googleapis.com/auth/gmail.modify",
                         "https://www.googleapis.com/auth/drive",
                         "https://www.googleapis.com/auth/cloud-platform",
                         "https://www.googleapis.com/auth/admin.directory.user"}),
    # learn.microsoft.com: Microsoft Graph permissions reference
    "microsoft": frozenset({"Directory.ReadWrite.All", "Mail.ReadWrite", "Mail.Send",
                            "Files.ReadWrite.All", "Sites.FullControl.All",
                            "User.ReadWrite.All", "Application.ReadWrite.All"}),
    # api.slack.com: scopes
    "slack": frozenset({"admin", "channels:history", "groups:history", "im:history",
                        "files:read", "chat:write.customize"}),
    # help.salesforce.com: OAuth tokens and scopes
    "salesforce": frozenset({"full", "refresh_token", "web"}),
}


@dataclass(frozen=True, slots=True)
class Connector:
    id: str
    kind: str
    name: str
    owner: str | None = None
    provider: str | None = None
    client_id: str | None = None
    scopes: tuple[str, ...] = ()
    redirect_uris: tuple[str, ...] = ()
    credential: str | None = None  # where the credential lives (never the credential)
    secrets: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    source: str = "registered"
    plaintext_seen_at: datetime | None = None
    created_at: datetime | None = None
    retired_at: datetime | None = None
    retired_by: str | None = None

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "owner": self.owner,
                "provider": self.provider,
                "oauth": {"client_id": self.client_id, "scopes": list(self.scopes),
                          "redirect_uris": list(self.redirect_uris),
                          "credential": self.credential} if self.client_id or self.scopes
                else None,
                "secrets": list(self.secrets), "servers": list(self.servers),
                "source": self.source, "created_at": self.created_at,
                "retired_at": self.retired_at, "retired_by": self.retired_by}


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # no_owner | unused | over_broad_scopes | plaintext_secret
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectorReport:
    connector: Connector
    paths: tuple[AccessPath, ...]
    last_used_at: datetime | None
    findings: tuple[Finding, ...] = field(default=())

    @property
    def agents(self) -> list[str]:
        return sorted({p.agent_id for p in self.paths})

    def as_json(self) -> dict[str, Any]:
        return {**self.connector.as_json(), "last_used_at": self.last_used_at,
                "reachable_by": [{"agent": a, "tools": sorted(
                    p.tool.tool_id for p in self.paths if p.agent_id == a),
                    "policies": sorted({i for p in self.paths if p.agent_id == a
                                        for i in p.policy_ids}),
                    "grants": sorted({g.grant_id for p in self.paths if p.agent_id == a
                                      for g in p.grants})} for a in self.agents],
                "findings": [{"code": f.code, "reason": f.reason} for f in self.findings]}


class Inventory:
    """Connector records in the store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def add(self, connector: Connector) -> Connector:
        """Record ``connector``; refused if its id is taken or a field is not valid."""
        _check(connector)
        now = self._clock.now()
        with self._store.transaction() as conn:
            if conn.execute(select(connectors.c.id).where(
                    connectors.c.id == connector.id)).first() is not None:
                raise RequestError(f"connector `{connector.id}` already exists")
            conn.execute(insert(connectors).values(**_columns(connector),
                                                   created_at=now, updated_at=now))
        return self.get(connector.id)

    def add_with_event(self, connector: Connector, audit: AuditLog, by: Actor, *,
                       source: str | None = None,
                       detail: dict[str, Any] | None = None) -> Connector:
        """:meth:`add` with its ``connector.add`` event by ``by``, in one transaction (the
        audit writer's, :mod:`proctor.oversight.audited`): a connector is access, so if
        the log cannot be written it is not added
        (:class:`~proctor.errors.AuditUnavailableError`). ``detail``: the event's
        (default: the kind, the owner, the scopes)."""
        _check(connector)
        now = self._clock.now()
        event = AuditEvent(
            id=new_event_id(now), time=now, actor=by, action="connector.add",
            target=f"Connector::{connector.id}", outcome="added", source=source,
            detail=detail if detail is not None else {
                "kind": connector.kind, "owner": connector.owner or None,
                "scopes": list(connector.scopes)})
        commit_with_event(audit, event, _Added(
            {**_columns(connector), "created_at": now, "updated_at": now}))
        return self.get(connector.id)

    def retire_with_event(self, connector_id: str, audit: AuditLog, by: Actor, *,
                          source: str | None = None) -> Connector:
        """:meth:`retire` with its ``connector.retire`` event by ``by``, in one
        transaction; if the log cannot be written it is retired all the same (it takes
        access away) and :class:`~proctor.errors.AuditUnavailableError` says so."""
        now = self._clock.now()
        event = AuditEvent(id=new_event_id(now), time=now, actor=by, action="connector.retire",
                           target=f"Connector::{connector_id}", outcome="retired",
                           source=source)
        commit_with_event(audit, event, _Retired(connector_id, by.id, now),
                          alone=lambda: self.retire(connector_id, by=by.id))
        return self.get(connector_id)

    def note_plaintext(self, connector_id: str) -> None:
        """Mark that discovery saw one of the connector's secrets in plaintext."""
        now = self._clock.now()
        with self._store.transaction() as conn:
            conn.execute(update(connectors).where(connectors.c.id == connector_id).values(
                plaintext_seen_at=now, updated_at=now))

    def get(self, connector_id: str) -> Connector:
        with self._store.reading() as conn:
            row = conn.execute(select(connectors).where(
                connectors.c.id == connector_id)).first()
        if row is None:
            raise NotFoundError(f"connector `{connector_id}` does not exist")
        return _connector(row)

    def find(self, connector_id: str) -> Connector | None:
        try:
            return self.get(connector_id)
        except NotFoundError:
            return None

    def list(self, *, include_retired: bool = False) -> list[Connector]:
        query = select(connectors).order_by(connectors.c.id)
        if not include_retired:
            query = query.where(connectors.c.retired_at.is_(None))
        with self._store.reading() as conn:
            return [_connector(r) for r in conn.execute(query).all()]

    def retire(self, connector_id: str, *, by: str) -> Connector:
        now = self._clock.now()
        with self._store.transaction() as conn:
            row = conn.execute(select(connectors.c.retired_at).where(
                connectors.c.id == connector_id)).first()
            if row is None:
                raise NotFoundError(f"connector `{connector_id}` does not exist")
            if row.retired_at is not None:
                raise RequestError(f"connector `{connector_id}` is already retired")
            conn.execute(update(connectors).where(connectors.c.id == connector_id).values(
                retired_at=now, retired_by=by, updated_at=now))
        return self.get(connector_id)

    def report(self, connector: Connector, engine: PolicyEngine, agent_ids: Sequence[str],
               grants_live: Sequence[LiveGrant]) -> ConnectorReport:
        """Who can reach ``connector`` now, when it was last used, and its findings."""
        paths = [p for p in access_paths(engine, agent_ids, grants_live=grants_live)
                 if p.tool.connector == connector.id or p.tool.server in connector.servers]
        tools = {t.tool_id for t in engine.catalog
                 if t.connector == connector.id or t.server in connector.servers}
        last = self._last_use(tools)
        return ConnectorReport(connector, tuple(paths), last,
                               tuple(findings(connector, last, self._clock.now())))

    def _last_use(self, tools: Iterable[str]) -> datetime | None:
        wanted = set(tools)
        if not wanted:
            return None
        with self._store.reading() as conn:
            rows = conn.execute(
                select(audit_events.c.time, audit_events.c.body)
                .where(audit_events.c.decision == "allow")
                .order_by(audit_events.c.seq.desc()).limit(_LAST_USE_SCAN)).all()
        for row in rows:
            try:
                target = json.loads(row.body).get("target")
            except (ValueError, AttributeError):
                continue
            if target in wanted:
                return _aware(row.time)
        return None


def findings(connector: Connector, last_used_at: datetime | None,
             now: datetime) -> list[Finding]:
    """The findings of ``connector``, each with its reason."""
    found = []
    if not connector.owner:
        found.append(Finding("no_owner", "no accountable owner is recorded"))
    since = last_used_at or connector.created_at
    if since is not None and now - since > UNUSED_AFTER:
        found.append(Finding("unused", "no allowed call in 30 days" if last_used_at
                             else "never used, and registered over 30 days ago"))
    broad = sorted(set(connector.scopes) & BROAD_SCOPES.get(connector.provider or "",
                                                             frozenset()))
    if broad:
        found.append(Finding("over_broad_scopes", f"{connector.provider} documents "
                             f"{', '.join(broad)} as broad: ask for narrower scopes"))
    if connector.plaintext_seen_at is not None:
        found.append(Finding("plaintext_secret", "proctor discover saw its secret in a "
                             "client config in plaintext: move it with discover --wrap"))
    return found


def _check(connector: Connector) -> None:
    if not _ID.match(connector.id):
        raise RequestError(f"connector id `{connector.id[:64]}` must be lowercase letters, "
                           "digits, `.`, `_` and `-` (at most 64)")
    if connector.kind not in KINDS:
        raise RequestError(f"connector kind `{connector.kind[:32]}` is one of "
                           f"{', '.join(KINDS)}")
    if not connector.name.strip():
        raise RequestError("a connector needs a name")
    for uri in connector.redirect_uris:
        if not uri.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise RequestError(f"redirect URI `{uri[:200]}` must be https (or loopback)")


@dataclass(slots=True)
class _Added:
    """The connector's row, inserted unless its id is taken."""

    values: dict[str, Any]
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        if not insert_row(tx, connectors, self.values, unless_taken=True):
            self.refusal = RequestError(f"connector `{self.values['id']}` already exists")
            return WITHDRAWN
        return None


@dataclass(slots=True)
class _Retired:
    """The connector retired, unless it is unknown or retired already."""

    connector_id: str
    by: str
    now: datetime
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        found = read_rows(tx, connectors, "id = {p}", [self.connector_id], lock=True)
        if not found:
            self.refusal = NotFoundError(f"connector `{self.connector_id}` does not exist")
        elif found[0].retired_at is not None:
            self.refusal = RequestError(f"connector `{self.connector_id}` is already retired")
        else:
            update_rows(tx, connectors, {"retired_at": self.now, "retired_by": self.by,
                                         "updated_at": self.now}, "id = {p}",
                        [self.connector_id])
            return None
        return WITHDRAWN


def _columns(c: Connector) -> dict[str, Any]:
    oauth = {"client_id": c.client_id, "scopes": list(c.scopes),
             "redirect_uris": list(c.redirect_uris), "credential": c.credential} \
        if (c.client_id or c.scopes or c.redirect_uris or c.credential) else None
    return {"id": c.id, "kind": c.kind, "name": c.name, "owner": c.owner or None,
            "provider": c.provider, "oauth": oauth, "secrets": list(c.secrets),
            "servers": list(c.servers), "source": c.source,
            "plaintext_seen_at": c.plaintext_seen_at}


def _connector(row: Row[Any]) -> Connector:
    oauth = row.oauth or {}
    return Connector(id=row.id, kind=row.kind, name=row.name, owner=row.owner,
                     provider=row.provider, client_id=oauth.get("client_id"),
                     scopes=tuple(oauth.get("scopes") or ()),
                     redirect_uris=tuple(oauth.get("redirect_uris") or ()),
                     credential=oauth.get("credential"), secrets=tuple(row.secrets or ()),
                     servers=tuple(row.servers or ()), source=row.source,
                     plaintext_seen_at=_aware(row.plaintext_seen_at),
                     created_at=_aware(row.created_at), retired_at=_aware(row.retired_at),
                     retired_by=row.retired_by)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive times: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value

"""The secret store: downstream credentials sealed under the master key.

Operators put and delete secrets (audited as ``secret.put`` / ``secret.delete``,
human or system events; the value is never in an event). With an audit log, each is the
effects of its own event, in the audit writer's transaction, with the revocation of the
leases of the value it replaces or deletes: the log holds the event if and only if the
change took effect. The event used to be written after the change had committed, so a
process that died between the two left a secret stored (or gone) with nothing in the
log saying who did it. If the log cannot be written, a put is not made (it gives
access: the value becomes injectable); a delete is made all the same, in a transaction
of its own, and :class:`~proctor.errors.AuditUnavailableError` says it took effect.

The gateway takes a :meth:`SecretStore.lease` for each use: a node of kind ``secret`` under the
grant in the lease tree, so revoking the grant, its task or anything above it
ends the lease. Replacing or deleting a secret ends its leases too.

>>> store = SecretStore(db, clock, master_key, audit=audit)       # doctest: +SKIP
>>> store.put("github.token", "ghp_…", by="alice@acme.example")    # doctest: +SKIP
>>> lease = store.lease("github.token", leases=tree, parent_id=grant_id,
...                     task_id=task_id, agent_id=agent_id, expires_at=None)  # doctest: +SKIP
>>> store.is_live(lease.lease_id)                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.recording import commit_with_event
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import (
    ConfigError,
    ProctorError,
    SecretError,
    StoreError,
)
from proctor.grants import LeaseTree
from proctor.grants.leases import revoke_roots
from proctor.human_ids import canonical_human_id
from proctor.sealing import Sealer
from proctor.secrets.lineage import read_lineage
from proctor.secrets.values import SecretInfo, SecretLease, check_name, check_value
from proctor.store import Store, as_utc
from proctor.store.tables import leases as lease_table
from proctor.store.tables import secret_leases
from proctor.store.tables import secrets as secret_table

__all__ = ["LEASE_KIND", "SecretStore"]

log = logging.getLogger(__name__)

LEASE_KIND = "secret"


def _context(name: str, generation: str) -> bytes:
    return f"proctor/secret\x00{name}\x00{generation}".encode()


class SecretStore:
    """Put, list, delete and lease secrets; values only ever come out in a lease.

    ``audit``: where ``secret.put`` and ``secret.delete`` are recorded (nothing is
    recorded without one). ``revocations``: the lease tree that announces the
    revocation of a replaced or deleted secret's leases (pass the gateway's, so
    its subscribers hear it in-process; PostgreSQL ``NOTIFY`` reaches other nodes).
    """

    def __init__(self, store: Store, clock: Clock, master_key: bytes, *,
                 audit: AuditLog | None = None, revocations: LeaseTree | None = None) -> None:
        self._store = store
        self._clock = clock
        self._sealer = Sealer(master_key)
        self._audit = audit
        self._revocations = revocations or LeaseTree(store, clock)

    def __repr__(self) -> str:
        return f"SecretStore(backend={self._store.backend!r})"

    def put(self, name: str, value: str, *, by: str | Actor) -> SecretInfo:
        """Create or replace the secret ``name``; a replacement ends the old value's leases."""
        name, value, actor = check_name(name), check_value(value), _actor(by)
        now, generation = self._clock.now(), secrets.token_hex(16)
        sealed = self._sealer.seal(value.encode("utf-8"), context=_context(name, generation))
        if self._audit is not None:  # with its event, or not at all
            change = _Change(name, now, self._event("secret.put", name, "stored", actor, now),
                             (sealed, generation, actor.id))
            self._commit(change, alone=None)
            assert change.info is not None  # stored
            log.info("secret %s stored (version %d) by %s", name, change.info.version, actor.id)
            return change.info
        fields = {"sealed_value": sealed, "generation": generation, "updated_at": now,
                  "updated_by": actor.id}
        for attempt in (1, 2):
            try:
                with self._store.transaction() as conn:
                    changed = conn.execute(
                        update(secret_table).where(secret_table.c.name == name)
                        .values(version=secret_table.c.version + 1, **fields)).rowcount
                    if not changed:
                        conn.execute(insert(secret_table).values(
                            name=name, version=1, created_at=now, created_by=actor.id,
                            **fields))
                    info = _info(conn.execute(select(secret_table).where(
                        secret_table.c.name == name)).one())
                    stale = _live_leases(conn, name)
                break
            except StoreError as exc:
                # Two first puts of one name raced; the second one now replaces.
                if attempt == 2 or not isinstance(exc.__cause__, IntegrityError):
                    raise
        if stale:
            self._revocations.revoke_subtree(stale, f"secret `{name}` replaced")
        log.info("secret %s stored (version %d) by %s", name, info.version, actor.id)
        return info

    def _event(self, action: str, name: str, outcome: str, actor: Actor,
               now: datetime) -> AuditEvent:
        return AuditEvent(id=new_event_id(now), time=now, actor=actor, action=action,
                          target=f'Secret::"{name}"', outcome=outcome)

    def _commit(self, change: _Change, *, alone: Callable[[], object] | None) -> None:
        """Make ``change`` with its event in one transaction of the audit writer, or raise
        its refusal (:func:`~proctor.audit.recording.commit_with_event`; ``alone``: a
        delete, made without its event if the log cannot be written); then announce the
        leases it revoked."""
        assert self._audit is not None
        commit_with_event(self._audit, change.event, change, alone=alone)
        if change.revoked:
            self._revocations.revoked_after(change.revoked, change.reason)

    def names(self) -> list[str]:
        """The names of the stored secrets, sorted; never their values."""
        with self._store.reading() as conn:
            return list(conn.execute(select(secret_table.c.name)
                                     .order_by(secret_table.c.name)).scalars())

    def entries(self) -> list[SecretInfo]:
        """Every stored secret's name, version and who changed it when; never values."""
        with self._store.reading() as conn:
            rows = conn.execute(select(secret_table).order_by(secret_table.c.name)).all()
        return [_info(r) for r in rows]

    def delete(self, name: str, *, by: str | Actor) -> list[str]:
        """Delete the secret ``name`` and revoke its live leases; returns the revoked ids."""
        name, actor = check_name(name), _actor(by)
        if self._audit is not None:  # with its event, or, unaudited, alone (and told)
            now = self._clock.now()
            change = _Change(name, now, self._event("secret.delete", name, "deleted", actor,
                                                    now), None)
            self._commit(change, alone=lambda: self._delete(name))
            log.info("secret %s deleted by %s", name, actor.id)
            return change.revoked
        revoked = self._delete(name)
        log.info("secret %s deleted by %s", name, actor.id)
        return revoked

    def _delete(self, name: str) -> list[str]:
        with self._store.transaction() as conn:
            gone = conn.execute(delete(secret_table).where(secret_table.c.name == name)).rowcount
            stale = _live_leases(conn, name) if gone else []
        if not gone:
            raise SecretError("secret_unknown", f"secret `{name}` does not exist")
        return self._revocations.revoke_subtree(stale, f"secret `{name}` deleted") \
            if stale else []

    def lease(self, name: str, *, leases: LeaseTree, parent_id: str, task_id: str,
              agent_id: str, expires_at: datetime | None) -> SecretLease:
        """A lease of the secret ``name`` under ``parent_id`` (a live grant of ``agent_id``
        in ``task_id``), ending no later than its parent line; or a :class:`SecretError`
        and nothing recorded."""
        name, now = check_name(name), self._clock.now()
        if expires_at is not None and expires_at.tzinfo is None:
            raise SecretError("secret_lease_expiry_invalid", "a lease expiry must be aware (UTC)")
        if expires_at is not None and expires_at <= now:
            raise SecretError("secret_lease_expiry_invalid", "a lease must expire in the future")
        lease_id = f"slease_{secrets.token_hex(12)}"
        with self._store.transaction() as conn:
            row = conn.execute(select(secret_table).where(secret_table.c.name == name)).first()
            if row is None:
                raise SecretError("secret_unknown", f"secret `{name}` does not exist")
            value = self._unseal(name, row.sealed_value, row.generation)
            line = read_lineage(conn, parent_id)
            if line is None or not line.is_live(now):
                raise SecretError("secret_lease_parent_invalid",
                                  f"parent `{parent_id}` is unknown, revoked or expired")
            if (line.task_id, line.agent_id) != (task_id, agent_id):
                raise SecretError("secret_lease_parent_invalid",
                                  f"parent `{parent_id}` is not of this task and agent")
            ends = [t for t in (expires_at, line.expires_at) if t is not None]
            expiry = min(ends) if ends else None
            leases.add(conn, node_id=lease_id, parent_id=parent_id, kind=LEASE_KIND,
                       task_id=task_id, agent_id=agent_id, expires_at=expiry)
            conn.execute(insert(secret_leases).values(
                lease_id=lease_id, secret_name=name, generation=row.generation))
        log.debug("secret %s leased as %s under %s", name, lease_id, parent_id)
        return SecretLease(lease_id, name, value, expiry)

    def is_live(self, lease_id: str) -> bool:
        """True while the lease, its grant and everything above are unrevoked and
        unexpired, and the secret still holds the value it handed out."""
        with self._store.reading() as conn:
            current = conn.execute(select(secret_leases.c.lease_id).join(
                secret_table, and_(secret_table.c.name == secret_leases.c.secret_name,
                                   secret_table.c.generation == secret_leases.c.generation))
                .where(secret_leases.c.lease_id == lease_id)).first()
            line = read_lineage(conn, lease_id) if current is not None else None
        return line is not None and line.is_live(self._clock.now())

    def _unseal(self, name: str, sealed: str, generation: str) -> str:
        try:
            plain = self._sealer.unseal(sealed, context=_context(name, generation))
        except ConfigError as exc:
            raise SecretError("secret_undecryptable",
                              f"secret `{name}` cannot be decrypted: wrong master key?") from exc
        return plain.decode("utf-8")  # sealed from valid text, and authenticated


_UPSERT = ("INSERT INTO secrets (name, sealed_value, generation, version, created_at, created_by, "
           "updated_at, updated_by) VALUES ({p}, {p}, {p}, 1, {p}, {p}, {p}, {p}) "
           "ON CONFLICT (name) DO UPDATE SET sealed_value = excluded.sealed_value, "
           "generation = excluded.generation, version = secrets.version + 1, "
           "updated_at = excluded.updated_at, updated_by = excluded.updated_by")
_STORED = "SELECT version, created_at, created_by FROM secrets WHERE name = {p}"
_DELETE = "DELETE FROM secrets WHERE name = {p}"
_LIVE = ("SELECT s.lease_id FROM secret_leases s JOIN leases l ON l.id = s.lease_id "
         "WHERE s.secret_name = {p} AND l.revoked_at IS NULL")


@dataclass(slots=True)
class _Change:
    """A secret stored (``put``: its sealed value, generation and who) or deleted, and
    the leases of the value it replaces or deletes revoked, in the writer's transaction."""

    name: str
    now: datetime
    event: AuditEvent
    put: tuple[str, str, str] | None
    info: SecretInfo | None = None
    revoked: list[str] = field(default_factory=list)
    reason: str = ""
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.info, self.revoked, self.refusal = None, [], None  # a retried batch: again
        detail: dict[str, int] = {}
        if self.put is not None:
            sealed, generation, by = self.put
            at = tx.time(self.now)
            tx.execute(_UPSERT, [self.name, sealed, generation, at, by, at, by])
            version, created_at, created_by = tx.rows(_STORED, [self.name])[0]
            created = tx.read_time(created_at)
            assert created is not None
            self.info = SecretInfo(self.name, int(version), created, created_by, self.now, by)
            detail["version"] = int(version)
            self.reason = f"secret `{self.name}` replaced"
        else:
            if not tx.execute(_DELETE, [self.name]):
                self.refusal = SecretError("secret_unknown",
                                           f"secret `{self.name}` does not exist")
                return WITHDRAWN
            self.reason = f"secret `{self.name}` deleted"
        stale = [row[0] for row in tx.rows(_LIVE, [self.name])]
        self.revoked = revoke_roots(tx, stale, self.reason, self.now) if stale else []
        return replace(self.event, detail={**detail, "leases_revoked": len(self.revoked)})


def _info(row: Row[Any]) -> SecretInfo:
    return SecretInfo(row.name, row.version, as_utc(row.created_at), row.created_by,
                      as_utc(row.updated_at), row.updated_by)


def _actor(by: str | Actor) -> Actor:
    """A human (a plain id, kept in canonical form) or the system may change secrets; an
    agent may not."""
    actor = Actor(ActorType.HUMAN, canonical_human_id(by)) if isinstance(by, str) else by
    if actor.type is ActorType.AGENT:
        raise SecretError("secret_actor_invalid", "an agent cannot change secrets")
    if not actor.id.strip():
        raise SecretError("secret_actor_invalid", "who changes a secret must be named")
    return actor


def _live_leases(conn: Connection, name: str) -> Sequence[str]:
    return list(conn.execute(
        select(secret_leases.c.lease_id)
        .join(lease_table, lease_table.c.id == secret_leases.c.lease_id)
        .where(and_(secret_leases.c.secret_name == name, lease_table.c.revoked_at.is_(None)))
    ).scalars())

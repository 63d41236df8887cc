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
from collections.abc import Callable, Mapping, Sequence
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
from proctor.grants.leases import revoke_roots, writing
from proctor.human_ids import canonical_human_id
from proctor.sealing import Sealer
from proctor.secrets.lineage import lineage_in, read_lineage
from proctor.secrets.values import SecretInfo, SecretLease, check_name, check_value
from proctor.store import Store, as_utc
from proctor.store.tables import leases as lease_table
from proctor.store.tables import secret_leases
from proctor.store.tables import secrets as secret_table

__all__ = ["LEASE_KIND", "SecretStore"]

log = logging.getLogger(__name__)

LEASE_KIND = "secret"
LEASER = "proctor-gateway"  # the actor of a ``secret.lease`` event: the system, for an agent


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
              agent_id: str, expires_at: datetime | None, upstream: str = "") -> SecretLease:
        """A lease of the secret ``name`` under ``parent_id`` (a live grant of ``agent_id``
        in ``task_id``), for the upstream named ``upstream``, ending no later than its
        parent line; or a :class:`SecretError` and nothing recorded. With an audit log,
        the lease is the effects of its ``secret.lease`` event: not made (and
        :class:`~proctor.errors.AuditUnavailableError`) if the event cannot be written."""
        name, now = check_name(name), self._clock.now()
        if expires_at is not None and expires_at.tzinfo is None:
            raise SecretError("secret_lease_expiry_invalid", "a lease expiry must be aware (UTC)")
        if expires_at is not None and expires_at <= now:
            raise SecretError("secret_lease_expiry_invalid", "a lease must expire in the future")
        lease_id = f"slease_{secrets.token_hex(12)}"
        event = AuditEvent(
            id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, LEASER, agent_id),
            action="secret.lease", target=f'Secret::"{name}"', outcome="leased",
            task=task_id, detail={"agent": agent_id, "parent": parent_id,
                                  "upstream": upstream, "lease": lease_id})
        taking = _Lease(name, lease_id, parent_id, task_id, agent_id, expires_at, now, event,
                        self._unseal)
        if self._audit is not None:  # with its event, or not at all: it hands out a value
            commit_with_event(self._audit, event, taking)
        else:
            with self._store.transaction() as conn, writing(conn) as tx:
                taking.apply(tx)
            if taking.refusal is not None:
                raise taking.refusal
        assert taking.lease is not None  # made
        log.debug("secret %s leased as %s under %s", name, lease_id, parent_id)
        return taking.lease

    def release(self, leased: Mapping[str, str], reason: str, *, agent_id: str,
                task_id: str, with_nodes: Sequence[str] = ()) -> list[str]:
        """End the leases ``leased`` (their secrets' names by lease id; of ``agent_id`` in
        ``task_id``) and ``with_nodes`` (what ends with them: the gateway session they were
        taken for), their subtrees with them, for ``reason``; returns the ids newly
        revoked. With an audit log, it is the effects of a ``secret.release`` event naming
        the leases it ended (none written if they had all ended already: revoked with
        their grant, say); if the event cannot be written the leases end all the same (it
        takes access away) and :class:`~proctor.errors.AuditUnavailableError` says so."""
        nodes = [*with_nodes, *leased]
        if self._audit is None or not leased:
            return self._revocations.revoke_subtree(nodes, reason)
        now = self._clock.now()
        event = AuditEvent(
            id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, LEASER, agent_id),
            action="secret.release", target=", ".join(
                sorted({f'Secret::"{name}"' for name in leased.values()})),
            outcome="released", task=task_id, detail={"agent": agent_id, "reason": reason})
        ending = _Release(nodes, dict(leased), reason, now, event)
        commit_with_event(self._audit, event, ending,
                          alone=lambda: self._revocations.revoke_subtree(nodes, reason))
        return self._revocations.revoked_after(ending.revoked, reason)

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
_SEALED = "SELECT sealed_value, generation FROM secrets WHERE name = {p}"
_ADD_NODE = ("INSERT INTO leases (id, parent_id, kind, task_id, agent_id, created_at, "
             "expires_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})")
_ADD_LEASE = "INSERT INTO secret_leases (lease_id, secret_name, generation) VALUES ({p}, {p}, {p})"
_ACCESSOR = "SELECT accessor FROM grants WHERE id = {p}"
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


@dataclass(slots=True)
class _Lease:
    """A lease taken as the effects of its ``secret.lease`` event, in the audit writer's
    transaction: the checks of :meth:`SecretStore.lease` on what that transaction reads,
    then its node (kind ``secret``) and its ``secret_leases`` row. The event names the
    grant's accessor (``grant``), the lease's expiry, never the value."""

    name: str
    lease_id: str
    parent_id: str
    task_id: str
    agent_id: str
    expires_at: datetime | None
    now: datetime
    event: AuditEvent
    unseal: Callable[[str, str, str], str]
    lease: SecretLease | None = None
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.lease, self.refusal = None, None  # a retried batch: again
        found = tx.rows(_SEALED, [self.name])
        if not found:
            return self._refuse(SecretError("secret_unknown",
                                            f"secret `{self.name}` does not exist"))
        sealed, generation = str(found[0][0]), str(found[0][1])
        try:
            value = self.unseal(self.name, sealed, generation)
        except SecretError as exc:
            return self._refuse(exc)
        line = lineage_in(tx, self.parent_id)
        if line is None or not line.is_live(self.now):
            return self._refuse(SecretError(
                "secret_lease_parent_invalid",
                f"parent `{self.parent_id}` is unknown, revoked or expired"))
        if (line.task_id, line.agent_id) != (self.task_id, self.agent_id):
            return self._refuse(SecretError(
                "secret_lease_parent_invalid",
                f"parent `{self.parent_id}` is not of this task and agent"))
        ends = [t for t in (self.expires_at, line.expires_at) if t is not None]
        expiry = min(ends) if ends else None
        tx.execute(_ADD_NODE, [self.lease_id, self.parent_id, LEASE_KIND, self.task_id,
                               self.agent_id, tx.time(self.now),
                               tx.time(expiry) if expiry is not None else None])
        tx.execute(_ADD_LEASE, [self.lease_id, self.name, generation])
        accessor = tx.rows(_ACCESSOR, [self.parent_id])
        self.lease = SecretLease(self.lease_id, self.name, value, expiry)
        return replace(self.event, grant=str(accessor[0][0]) if accessor else None,
                       detail={**self.event.detail, "expires_at": (
                           expiry.isoformat() if expiry is not None else None)})

    def _refuse(self, refusal: SecretError) -> AuditEvent:
        self.refusal = refusal
        return WITHDRAWN


@dataclass(slots=True)
class _Release:
    """Leases (and the nodes that end with them) revoked as the effects of their
    ``secret.release`` event: the event names the leases newly revoked, and is not
    written when there are none."""

    nodes: Sequence[str]
    names: dict[str, str]  # the leases' secret names, by lease id
    reason: str
    now: datetime
    event: AuditEvent
    revoked: list[str] = field(default_factory=list)
    refusal: ProctorError | None = None  # never: a revocation is not refused

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.revoked = revoke_roots(tx, self.nodes, self.reason, self.now)
        ended = [node for node in self.revoked if node in self.names]
        if not ended:
            return WITHDRAWN
        return replace(self.event, detail={**self.event.detail, "leases": ended,
                                           "secrets": sorted({self.names[n] for n in ended})})

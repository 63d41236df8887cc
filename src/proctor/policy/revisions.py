"""Policy revisions in the database: candidates, the active set, activation.

A revision is the full text of a policy set. Activation validates it against
the engine's schema first; an invalid set raises and nothing changes, neither
in the database nor in the engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select, update

from proctor.clock import Clock
from proctor.errors import NotFoundError
from proctor.policy.compiled import CompiledPolicies
from proctor.policy.engine import PolicyEngine
from proctor.policy.source import read_policy_dir
from proctor.store import Store, as_utc
from proctor.store.tables import policy_revisions

__all__ = ["PolicyRevision", "PolicyStore", "digest_sources"]


def digest_sources(sources: Mapping[str, str]) -> str:
    """A SHA-256 over the file names and texts, independent of order."""
    canonical = json.dumps(dict(sorted(sources.items())), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PolicyRevision:
    id: int
    digest: str
    status: str
    origin: str
    created_at: datetime
    activated_at: datetime | None


class PolicyStore:
    """Revisions of the policy set, kept in the store and applied to an engine."""

    def __init__(self, store: Store, engine: PolicyEngine, clock: Clock) -> None:
        self._store = store
        self._engine = engine
        self._clock = clock

    def add_candidate(self, sources: Mapping[str, str], origin: str) -> int:
        """Store ``sources`` as a candidate revision (or return the revision with that text)."""
        digest = digest_sources(sources)
        with self._store.transaction() as conn:
            existing = conn.execute(
                select(policy_revisions.c.id).where(policy_revisions.c.digest == digest)
                .order_by(policy_revisions.c.id.desc()).limit(1)
            ).scalar()
            if existing is not None:
                return int(existing)
            return int(conn.execute(
                insert(policy_revisions).values(
                    digest=digest, status="candidate", origin=origin, sources=dict(sources),
                    created_at=self._clock.now(),
                ).returning(policy_revisions.c.id)
            ).scalar_one())

    def sources(self, revision: int) -> dict[str, str]:
        with self._store.reading() as conn:
            row = conn.execute(
                select(policy_revisions.c.sources).where(policy_revisions.c.id == revision)
            ).scalar()
        if row is None:
            raise NotFoundError(f"policy revision `{revision}` does not exist")
        return dict(row)

    def compile(self, revision: int) -> CompiledPolicies:
        """Validate a stored revision; raises :class:`PolicyValidationError` if invalid."""
        sources = self.sources(revision)
        return self._engine.compile(sources, revision=revision, digest=digest_sources(sources))

    def activate(self, revision: int) -> CompiledPolicies:
        """Validate, then make ``revision`` the active set, in the store and the engine."""
        return self._activate(revision, self.compile(revision))

    def _activate(self, revision: int, compiled: CompiledPolicies) -> CompiledPolicies:
        with self._store.transaction() as conn:
            conn.execute(
                update(policy_revisions).where(policy_revisions.c.status == "active")
                .values(status="retired")
            )
            conn.execute(
                update(policy_revisions).where(policy_revisions.c.id == revision)
                .values(status="active", activated_at=self._clock.now())
            )
        self._engine.activate(compiled)
        return compiled

    def activated(self, compiled: CompiledPolicies) -> None:
        """Apply ``compiled`` to the engine, its revision made active in another
        transaction of this process (the audit writer's, with its event:
        :mod:`proctor.oversight.activating`)."""
        self._engine.activate(compiled)

    def load_directory(self, directory: Path) -> CompiledPolicies:
        """Read, validate, store and activate the policies of ``directory``.

        An invalid directory raises before anything is stored.
        """
        compiled = self.stage_directory(directory)
        assert compiled.revision is not None  # stored: it has its number
        return self._activate(compiled.revision, compiled)

    def stage_directory(self, directory: Path) -> CompiledPolicies:
        """Read, validate and store the policies of ``directory`` as a candidate (an
        invalid directory raises before anything is stored); the revision, validated."""
        sources, compiled = self.read_directory(directory)
        compiled.revision = self.add_candidate(sources, origin=f"directory {directory.name}")
        return compiled

    def read_directory(self, directory: Path) -> tuple[dict[str, str], CompiledPolicies]:
        """The policies of ``directory`` and their compiled set (no revision yet),
        validated, nothing stored: an invalid directory raises ``policy_invalid``."""
        sources = read_policy_dir(directory)
        return sources, self._engine.compile(sources, digest=digest_sources(sources))

    def load_active(self) -> CompiledPolicies | None:
        """Apply the stored active revision to the engine (at start-up)."""
        active = self.active_revision()
        if active is None:
            return None
        compiled = self.compile(active.id)
        self._engine.activate(compiled)
        return compiled

    def active_revision(self) -> PolicyRevision | None:
        revisions = self.list_revisions(status="active")
        return revisions[0] if revisions else None

    def list_revisions(self, *, status: str | None = None) -> list[PolicyRevision]:
        cols = policy_revisions.c
        query = select(cols.id, cols.digest, cols.status, cols.origin, cols.created_at,
                       cols.activated_at).order_by(cols.id.desc())
        if status is not None:
            query = query.where(cols.status == status)
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        return [
            PolicyRevision(int(r.id), r.digest, r.status, r.origin, as_utc(r.created_at),
                           as_utc(r.activated_at) if r.activated_at else None)
            for r in rows
        ]

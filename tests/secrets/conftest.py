"""A secret store on a real database, next to a real grant authority and audit log."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import text

from proctor.audit import AuditLog
from proctor.clock import FrozenClock
from proctor.grants import GrantScope, IssuedGrant
from proctor.keys import LocalSigner
from proctor.secrets import SecretLease, SecretStore
from tests.grants.conftest import CODER, Setup, make_setup

GIT = GrantScope.from_json({"tools": [{"tool": "git/*"}]})
ALICE = "alice@acme.example"
# Looks like what it stands for, so that every leak check has something real to find.
VALUE = "ghp_" + "Zq8r" * 9


@dataclass
class Secrets:
    setup: Setup
    audit: AuditLog
    secrets: SecretStore

    def issue(self, *, ttl_seconds: int = 300) -> IssuedGrant:
        """A real grant for the coder agent, in a new task."""
        task = self.setup.authority.start_task(CODER, purpose="open a pull request",
                                               on_behalf_of=ALICE)
        return self.setup.authority.issue(task.id, GIT, ttl_seconds=ttl_seconds)

    def lease(self, name: str, grant: IssuedGrant, *, expires_at: datetime | None = None,
              parent_id: str | None = None, task_id: str | None = None,
              agent_id: str | None = None) -> SecretLease:
        """A lease of ``name`` under ``grant``, as the gateway takes one."""
        return self.secrets.lease(
            name, leases=self.setup.authority.leases,
            parent_id=parent_id or grant.grant_id, task_id=task_id or grant.claims.task_id,
            agent_id=agent_id or grant.claims.agent_id, expires_at=expires_at)

    def audit_bodies(self) -> list[str]:
        """Every audit event as stored: the hashed JSON body."""
        with self.setup.store.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(
                text("SELECT body FROM audit_events ORDER BY seq"))]

    def stored_text(self) -> str:
        """Every row of the secret tables, as text: what a stolen database holds."""
        with self.setup.store.engine.connect() as conn:
            rows = [*conn.execute(text("SELECT * FROM secrets")),
                    *conn.execute(text("SELECT * FROM secret_leases"))]
        return repr(rows)


@pytest.fixture
def env(database_url: str, clock: FrozenClock) -> Iterator[Secrets]:
    setups = make_setup(database_url, clock)
    setup = next(setups)
    audit = AuditLog(setup.store, signer=LocalSigner.generate(), clock=clock, timeout=20.0)
    try:
        yield Secrets(setup, audit, SecretStore(setup.store, clock, setup.master_key,
                                                audit=audit, revocations=setup.authority.leases))
    finally:
        audit.close()
        next(setups, None)


@pytest.fixture
def other_master_key() -> bytes:
    return secrets.token_bytes(32)

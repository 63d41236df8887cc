"""The grants bench's workload: one agent with its own key, a backend per database
(store, keyring, codec, the change feed and the in-process views of tasks and
revocations, the audit log, authority, a task of the agent's), concurrent issuance, and
the bare durable commits issuance is set beside.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg import sql
from sqlalchemy import Connection

from harness import run_threads
from proctor.audit import AuditLog, WriteCursor
from proctor.clock import SystemClock
from proctor.errors import GrantError
from proctor.grants import (
    AgentBinding,
    GrantAuthority,
    GrantScope,
    IssuedGrant,
    IssuerKeyring,
    RevocationView,
    TaskView,
    TokenCodec,
    jwk_thumbprint,
)
from proctor.grants.agents import AgentEnded
from proctor.grants.proofs import public_jwk
from proctor.policy import PolicyEngine
from proctor.store import Store, open_store
from proctor.store.changes import ChangeFeed

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"
AGENT = "spiffe://acme.example/agent/coder"
ISSUER = "https://proctor.acme.example"
TOOL = "git/git_log"
SCOPE = GrantScope.from_json({"tools": [
    {"tool": TOOL, "args": {"repo_path": {"prefix": ["/srv/repos/"]}}},
]})
TARGET = "mcp://git/git_log"
ARGS = {"repo_path": "/srv/repos/app"}
TOKENS = 64  # distinct grants the checks rotate over


@dataclass
class Agents:
    """The one agent of the bench, as the grants part sees it."""

    agent: AgentBinding

    def binding(self, agent_id: str) -> AgentBinding | None:
        return self.agent if agent_id == self.agent.agent_id else None

    def binding_seen(self, agent_id: str) -> AgentBinding | None:
        return self.binding(agent_id)

    def binding_in(self, tx: WriteCursor, agent_id: str) -> AgentBinding | None:
        return self.binding(agent_id)

    def prove(self, identity_proof: str) -> str:
        raise GrantError("proof_invalid", "the bench's agent has a registered key")

    def confirm_active(self, conn: Connection, agent_id: str) -> bool:
        return agent_id == self.agent.agent_id

    def state_in(self, tx: WriteCursor, agent_id: str) -> str | None:
        return "trusted" if agent_id == self.agent.agent_id else None

    def on_deactivated(self, hook: AgentEnded) -> None:
        """The bench never suspends its agent."""


@dataclass
class Backend:
    """The grants part on one database, with the task the bench issues under."""

    name: str
    store: Store
    keyring: IssuerKeyring
    codec: TokenCodec
    authority: GrantAuthority
    task_id: str
    feed: ChangeFeed
    audit: AuditLog
    tokens: list[IssuedGrant] = field(default_factory=list)

    def close(self) -> None:
        self.audit.close()
        self.feed.close()
        self.store.close()


def open_backend(name: str, url: str, engine: PolicyEngine, agent_key: ec.EllipticCurvePrivateKey
                 ) -> Backend:
    """The grants part on the store at ``url``, the bench's agent bound to ``agent_key``,
    wired as :func:`proctor.runtime.open_runtime` wires it (the views on the change feed,
    the audit log: an issuance and its decision's event are one group-committed write)."""
    clock = SystemClock()
    store = open_store(url)
    feed = ChangeFeed(store)
    keyring = IssuerKeyring(store, clock, secrets.token_bytes(32))
    codec = TokenCodec(keyring, issuer=ISSUER, audience="proctor")
    agents = Agents(AgentBinding(AGENT, jwk_thumbprint(public_jwk(agent_key)), True))
    audit = AuditLog(store, signer=keyring, clock=clock)
    authority = GrantAuthority(store, clock, codec, engine, agents, audit=audit,
                               tasks=TaskView(store, feed), revocations=RevocationView(store, feed))
    task = authority.start_task(AGENT, purpose="bench", on_behalf_of="alice@acme.example")
    return Backend(name, store, keyring, codec, authority, task.id, feed, audit)


def sequential_cpu_ms(b: Backend, count: int) -> float:
    """The process's CPU per issuance (the audit writer's thread included), one at a time."""
    b.authority.issue(b.task_id, SCOPE)
    cpu_at = time.process_time()
    for _ in range(count):
        b.authority.issue(b.task_id, SCOPE)
    return (time.process_time() - cpu_at) / count * 1e3


def concurrent_issuance(b: Backend, callers: int, seconds: float) -> dict[str, float]:
    """``callers`` threads of this process issuing for ``seconds``: grants per second,
    and the process's CPU per grant over the run."""
    issue, task_id = b.authority.issue, b.task_id

    def step(_: int) -> bool:
        issue(task_id, SCOPE)
        return True

    issued, wall, cpu = run_threads(callers, seconds, step)
    total = sum(issued)
    return {"per_s": total / wall, "issued": total, "cpu_ms_per_grant": cpu / max(total, 1) * 1e3}


@contextmanager
def sqlite_commit(path: Path) -> Iterator[Callable[[object], object]]:
    """A bare durable write on SQLite, as the store opens it (WAL, synchronous=FULL)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    ids = itertools.count()

    def write(_: object) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO rows VALUES (?, ?)", (next(ids), "x" * 64))
        db.execute("COMMIT")

    try:
        yield write
    finally:
        db.close()


@contextmanager
def postgres_commit(url: str) -> Iterator[tuple[Callable[[object], object], dict[str, str]]]:
    """A bare durable write on PostgreSQL, and the server settings that make it durable."""
    with psycopg.connect(url) as db:
        settings = {}
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
            row = db.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            settings[name] = str(row[0]) if row else "?"
        db.execute("CREATE TABLE bench_rows (id bigint PRIMARY KEY, body text NOT NULL)")
        db.commit()
        ids = itertools.count()

        def write(_: object) -> None:
            db.execute("INSERT INTO bench_rows VALUES (%s, %s)", (next(ids), "x" * 64))
            db.commit()

        yield write, settings

"""The grants bench's workload: one agent with its own key, a backend per database (a
home opened as proctor opens it, :func:`proctor.runtime.open_runtime`, the agent
registered, a task of the agent's), concurrent issuance, and the bare durable commits
issuance is set beside.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg import sql

from harness import run_threads
from proctor.config import Settings
from proctor.grants import GrantAuthority, GrantScope, IssuedGrant, IssuerKeyring, TokenCodec
from proctor.grants.proofs import public_jwk
from proctor.identity import Manifest, OwnKeyProof
from proctor.runtime import Runtime, init_home, issuer_for, open_runtime
from proctor.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"
AGENT = "spiffe://acme.example/agent/coder"
TOOL = "git/git_log"
SCOPE = GrantScope.from_json({"tools": [
    {"tool": TOOL, "args": {"repo_path": {"prefix": ["/srv/repos/"]}}},
]})
TARGET = "mcp://git/git_log"
ARGS = {"repo_path": "/srv/repos/app"}
TOKENS = 64  # distinct grants the checks rotate over


@dataclass
class Backend:
    """The grants part on one database, with the task the bench issues under."""

    name: str
    runtime: Runtime
    codec: TokenCodec  # the runtime's issuer and audience, for decoding alone
    task_id: str
    tokens: list[IssuedGrant] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def keyring(self) -> IssuerKeyring:
        return self.runtime.keyring

    @property
    def authority(self) -> GrantAuthority:
        return self.runtime.grants

    def close(self) -> None:
        self.runtime.close()


def open_backend(name: str, home: Path, url: str, agent_key: ec.EllipticCurvePrivateKey
                 ) -> Backend:
    """A home at ``home`` on the store at ``url``, opened by
    :func:`proctor.runtime.open_runtime` as every proctor process opens it (the registry
    and its agent view, the change feed and the views of tasks and revocations, the audit
    log, the enforcer that brings the engine's agent up to date before an issuance is
    decided), with the bench's agent registered with ``agent_key``."""
    settings = Settings(home=home, database_url=url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings, policies_from=EXAMPLES)
    runtime = open_runtime(settings)
    manifest = Manifest("claude-sonnet-4", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                        (TOOL,), "sha256:" + "c" * 64)
    runtime.registry.register(AGENT, owner="alice@acme.example", groups=["coding-agents"],
                              proof=OwnKeyProof(public_jwk(agent_key)), manifest=manifest)
    runtime.enforcer.refresh_principals()
    codec = TokenCodec(runtime.keyring, issuer=issuer_for(settings), audience="proctor")
    task = runtime.grants.start_task(AGENT, purpose="bench", on_behalf_of="alice@acme.example")
    return Backend(name, runtime, codec, task.id)


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

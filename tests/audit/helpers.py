"""Building events and tampering with rows, for the audit tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text

from proctor.audit import (
    Actor,
    ActorType,
    AuditEvent,
    AuditLog,
    DecisionRecord,
    new_event_id,
    verifiers_for,
)
from proctor.audit.writer import Receipt
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError
from proctor.keys import LocalSigner, Verifier
from proctor.store import Store

CODER = "spiffe://acme.example/agent/coder"
ALICE = "alice@acme.example"


def agent_event(clock: FrozenClock, n: int = 0, *, agent: str = CODER, task: str = "task-42",
                outcome: str = "allow", **extra: Any) -> AuditEvent:
    """A decision event of ``agent`` on a git tool; the clock moves one second."""
    clock.advance(seconds=1)
    now = clock.now()
    return AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.AGENT, agent, ALICE),
        action="tool:git/git_log", target=f'Tool::"git/git_log#{n}"',
        outcome={"allow": "allowed", "deny": "denied"}.get(outcome, "pending_approval"),
        task=task, delegation_chain=("spiffe://acme.example/agent/planner",),
        decision=DecisionRecord(outcome, "policy_permit" if outcome == "allow" else
                                "no_matching_permit", ("coding-read",), 3, ("reads are fine",)),
        request_digest="ab" * 32, grant="acc-7f3a", source="10.0.0.7", **extra,
    )


def outcomes_of(receipts: Sequence[Receipt]) -> list[int | None]:
    """Each receipt's position once written, or None where its write failed."""
    outcomes: list[int | None] = []
    for receipt in receipts:
        try:
            outcomes.append(receipt.wait(20.0).seq)
        except AuditUnavailableError:
            outcomes.append(None)
    return outcomes


def record_many(audit: AuditLog, clock: FrozenClock, count: int) -> list[str]:
    """Record ``count`` agent events; their ids in order."""
    return [audit.record(agent_event(clock, n)).event_id for n in range(count)]


def cut_at_20(audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock,
              path: Path) -> dict[str, Verifier]:
    """25 events, archived up to 20 by a process stopped before its first chunk (26
    with the archive's own event); the verifiers of ``signer``."""
    from proctor.oversight.milestones import archive_with_event

    record_many(audit, clock, 25)
    keys = verifiers_for([signer])
    archive_with_event(store, audit, path, up_to_seq=20, signer=signer, verifiers=keys,
                       event=agent_event(clock), most_chunks=0)
    return keys


def execute(store: Store, sql: str, **params: Any) -> None:
    """Run one statement as an attacker with database access would."""
    with store.engine.begin() as conn:
        conn.execute(text(sql), params)


def body_of(store: Store, seq: int) -> str:
    with store.engine.begin() as conn:
        return str(conn.execute(text("SELECT body FROM audit_events WHERE seq = :s"),
                                {"s": seq}).scalar_one())


def resign(store: Store, signer: Any, clock: FrozenClock, *, cut_through: int = 0) -> None:
    """As whoever holds the key and the database would: sign every stored checkpoint
    again, as one chain over the events as they are now, and (``cut_through``) a cut."""
    from proctor.audit import ChainHead, load_checkpoints, sign_checkpoint
    from proctor.audit.checkpoints import link_of
    from proctor.audit.cuts import sign_cut

    prev = None
    with store.engine.begin() as conn:
        for old in load_checkpoints(store):
            held = conn.execute(text("SELECT hash FROM audit_events WHERE seq = :s"),
                                {"s": old.seq}).scalar()
            new = sign_checkpoint(signer, ChainHead(old.seq, held or old.hash), clock.now(),
                                  prev=prev, every=link_of(old).every,
                                  log_id=link_of(old).log)  # the log's id kept
            conn.execute(text("UPDATE audit_checkpoints SET hash = :h, kid = :k, "
                              "signed_at = :t, payload = :p, signature = :g WHERE seq = :s"),
                         {"h": new.hash, "k": new.kid, "t": new.signed_at, "p": new.payload,
                          "g": new.signature, "s": new.seq})
            prev = new
        if cut_through and prev is not None:
            held = conn.execute(text("SELECT hash FROM audit_checkpoints WHERE seq = :s"),
                                {"s": cut_through}).scalar_one()
            cut = sign_cut(signer, cut_through, held, prev, clock.now())
            conn.execute(text("DELETE FROM audit_cuts WHERE through = :s"), {"s": cut_through})
            conn.execute(text("INSERT INTO audit_cuts (through, hash, kid, payload, signature) "
                              "VALUES (:s, :h, :k, :p, :g)"),
                         {"s": cut.through, "h": cut.hash, "k": cut.kid, "p": cut.payload,
                          "g": cut.signature})


def verified_by_the_cli(monkeypatch: Any, home: Any, database_url: str) -> dict[str, Any]:
    """``proctor audit verify --json`` as an operator runs it on ``home`` against
    ``database_url``: its report, after checking it exited 0."""
    import json

    from typer.testing import CliRunner

    from proctor.cli.main import app

    monkeypatch.setenv("PROCTOR_HOME", str(home))
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    monkeypatch.delenv("PROCTOR_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["audit", "verify", "--json"])
    assert result.exit_code == 0, result.stdout
    report: dict[str, Any] = json.loads(result.stdout)
    return report

"""Two processes on one database: what one commits, the other's next decision honours.

The second process (``tests.enforcement.second_process``) opens its own runtime on the
same home and database, as ``proctor serve`` and ``proctor mcp wrap`` do.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from sqlalchemy import select

from proctor.enforcement import ToolCall
from proctor.grants import IssuedGrant
from proctor.policy import Outcome
from proctor.runtime import Runtime
from proctor.store.tables import audit_events, grants
from tests.audit.helpers import verified_by_the_cli

from .conftest import SUPPORT, TARGET, Agents, refund

ROOT = Path(__file__).resolve().parents[2]
REFUND = [{"tool": "crm/issue_refund"}]
TOOL = "crm/issue_refund"


class Other:
    """The second process, started on one command; its lines come through a queue."""

    def __init__(self, runtime: Runtime, command: str, job: dict[str, Any]) -> None:
        settings = runtime.settings
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.enforcement.second_process", str(settings.home),
             settings.database_url, command, json.dumps(job)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=_lines, args=(self.process.stdout, self.lines),
                                        daemon=True)
        self._reader.start()

    def next(self) -> str:
        line = self.lines.get(timeout=120)
        assert line, "the second process stopped early"
        return line

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self) -> list[str]:
        """Wait for ``done``; the lines before it."""
        seen = []
        while (line := self.next()) != "done":
            seen.append(line)
        assert self.process.wait(timeout=120) == 0
        self._close()
        return seen

    def _close(self) -> None:
        self._reader.join(timeout=60)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def kill(self) -> list[str]:
        """``kill -9``; every line it printed (it printed each only once answered)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        self._close()
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return seen
            if line:
                seen.append(line)


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.strip())
    into.put("")


def _job(agents: Agents, grant: IssuedGrant, tmp_path: Path, **more: Any) -> dict[str, Any]:
    pem = tmp_path / "agent.pem"
    pem.write_bytes(agents.keys[SUPPORT].private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                        NoEncryption()))
    return {"token": grant.token, "key": str(pem), "tool": TOOL, "args": refund(100), **more}


def test_a_revocation_committed_by_another_process_is_refused_by_the_next_decision(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    assert agents.call(grant, TOOL, refund(100)).is_allowed  # everything warm
    Other(runtime, "revoke", {"grant": grant.accessor}).finish()
    verdict = agents.call(grant, TOOL, refund(100))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_revoked")


def test_an_agent_suspended_by_another_process_is_refused_by_the_next_decision(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    assert agents.call(grant, TOOL, refund(100)).is_allowed
    Other(runtime, "suspend", {"agent": SUPPORT}).finish()
    verdict = agents.call(grant, TOOL, refund(100))
    # suspending revokes the agent's grants in the same transaction: either names it
    assert verdict.outcome is Outcome.DENY
    assert verdict.code in ("agent_not_active", "grant_revoked")


def test_max_uses_holds_exactly_for_twenty_callers_across_two_processes(
    runtime: Runtime, agents: Agents, tmp_path: Path,
) -> None:
    grant = agents.grant(SUPPORT, REFUND, max_uses=10)
    other = Other(runtime, "calls", _job(agents, grant, tmp_path, threads=10, calls=1))
    assert other.next() == "ready"
    go = threading.Event()
    codes: list[str] = []

    def caller() -> None:
        proof = agents.proof(grant)
        go.wait()
        codes.append(runtime.enforcer.decide_call(
            grant.token, proof, ToolCall(TOOL, refund(100), target=TARGET)).code)

    mine = [threading.Thread(target=caller) for _ in range(10)]
    for thread in mine:
        thread.start()
    other.go()
    go.set()
    for thread in mine:
        thread.join(timeout=120)
    codes += [json.loads(line)["code"] for line in other.finish()]
    assert Counter(codes) == {"allow": 10, "grant_uses_exhausted": 10}
    with runtime.store.reading() as conn:
        assert conn.execute(select(grants.c.uses).where(
            grants.c.id == grant.grant_id)).scalar() == 10


def test_a_proof_used_in_one_process_is_refused_in_another(
    runtime: Runtime, agents: Agents, tmp_path: Path,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    proof = agents.proof(grant)
    first = runtime.enforcer.decide_call(grant.token, proof,
                                         ToolCall(TOOL, refund(100), target=TARGET))
    assert first.is_allowed
    other = Other(runtime, "calls", _job(agents, grant, tmp_path, threads=1, calls=1,
                                         proof=proof))
    assert other.next() == "ready"
    other.go()
    [answer] = [json.loads(line) for line in other.finish()]
    assert answer["code"] == "proof_replayed"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["forever", "forever_on_loop"])
def test_a_process_killed_mid_batch_leaves_a_chain_that_verifies_and_every_allow_audited(
    runtime: Runtime, agents: Agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    # forever_on_loop: eight tasks on one event loop that leads its own writes, as
    # the stdio wrapper's (tests.enforcement.second_process)
    grant = agents.grant(SUPPORT, REFUND)
    other = Other(runtime, command, _job(agents, grant, tmp_path, threads=8, calls=0))
    assert other.next() == "ready"
    other.go()
    allowed = [other.next() for _ in range(200)]  # eight callers keep deciding
    allowed += other.kill()
    assert other.process.returncode == -signal.SIGKILL
    with runtime.store.reading() as conn:
        stored = set(conn.execute(select(audit_events.c.event_id)).scalars())
    assert set(allowed) <= stored
    settings = runtime.settings
    assert verified_by_the_cli(monkeypatch, settings.home, settings.database_url)["valid"] is True

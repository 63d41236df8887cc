"""`proctor audit …` as an operator runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proctor.audit import AuditLog, human_event
from proctor.cli.main import app
from proctor.clock import FrozenClock
from proctor.keys import load_or_create_signer
from proctor.store import open_store
from tests.audit.helpers import agent_event, execute

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, database_url: str, clock: FrozenClock,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose log holds 12 agent events and one human approval."""
    monkeypatch.setenv("PROCTOR_HOME", str(tmp_path))
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    monkeypatch.delenv("PROCTOR_CONFIG", raising=False)
    store = open_store(database_url)
    with AuditLog(store, signer=load_or_create_signer(tmp_path), clock=clock,
                  checkpoint_every=5) as audit:
        for n in range(12):
            audit.record(agent_event(clock, n, outcome="deny" if n == 4 else "allow"))
        audit.record(human_event("dave@acme.example", "approval.grant", "x", "approved",
                                 now=clock.now()))
    store.close()
    yield tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.stdout


def test_verify_reports_a_valid_chain(home: Path) -> None:
    code, out = invoke("verify", "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["valid"], report["events"], report["checkpoints"]) == (True, 13, 2)


def test_verify_names_the_first_broken_link_and_exits_1(home: Path, database_url: str) -> None:
    store = open_store(database_url)
    execute(store, "DELETE FROM audit_events WHERE seq = 7")
    store.close()
    code, out = invoke("verify")
    assert code == 1
    assert "position 7" in out and "missing" in out


def test_search_selects_by_actor_type_and_decision(home: Path) -> None:
    code, out = invoke("search", "--actor-type", "human", "--json")
    assert code == 0
    assert [e["event"]["actor"]["id"] for e in json.loads(out)] == ["dave@acme.example"]
    code, out = invoke("search", "--agent", "spiffe://acme.example/agent/coder",
                       "--decision", "deny", "--json")
    assert [e["seq"] for e in json.loads(out)] == [5]
    code, out = invoke("search", "--since", "2026-11-30T10:00:03Z",
                       "--until", "2026-11-30T10:00:05Z", "--json")
    assert [e["seq"] for e in json.loads(out)] == [4, 3]


def test_search_rejects_a_bad_actor_type_in_one_line(home: Path) -> None:
    result = runner.invoke(app, ["audit", "search", "--actor-type", "robot"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: actor type `robot` is not one of agent, human, system"


def test_tail_shows_the_last_events(home: Path) -> None:
    code, out = invoke("tail", "-n", "3", "--json")
    assert code == 0
    assert [e["seq"] for e in json.loads(out)] == [11, 12, 13]


def test_export_writes_jsonl_and_ocsf(home: Path, tmp_path: Path) -> None:
    code, out = invoke("export", "--format", "jsonl", "--actor-type", "agent")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 12 and set(lines[0]) == {"seq", "prev_hash", "hash", "event"}
    target = tmp_path / "ocsf.jsonl"
    code, _ = invoke("export", "--format", "ocsf", "--out", str(target))
    assert code == 0
    events = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(events) == 13 and {e["class_uid"] for e in events} == {6003}


def test_export_refuses_an_unknown_format(home: Path) -> None:
    code, _ = invoke("export", "--format", "csv")
    assert code == 1


def test_checkpoint_and_archive(home: Path, tmp_path: Path) -> None:
    code, out = invoke("checkpoint", "--json")
    assert code == 0 and json.loads(out)["seq"] == 13
    segment = tmp_path / "segment.jsonl"
    code, out = invoke("archive", "--up-to", "10", "--out", str(segment), "--json")
    assert code == 0 and json.loads(out)["events"] == 10
    code, out = invoke("verify", "--json")
    assert code == 0 and json.loads(out)["first_seq"] == 11
    code, out = invoke("verify", "--archive", str(segment), "--json")
    assert code == 0 and json.loads(out)["events"] == 10


def test_verify_trusts_another_nodes_key_given_as_a_jwk(
    home: Path, tmp_path: Path, database_url: str, clock: FrozenClock
) -> None:
    from proctor.keys import LocalSigner

    other = LocalSigner.generate()  # a second node writing to the same database
    store = open_store(database_url)
    with AuditLog(store, signer=other, clock=clock, checkpoint_every=5) as audit:
        for n in range(5):
            audit.record(agent_event(clock, 100 + n))
    store.close()
    code, out = invoke("verify", "--json")
    assert code == 1 and json.loads(out)["problem"]["kind"] == "checkpoint_invalid"
    jwk = tmp_path / "other.jwk"
    jwk.write_text(json.dumps(other.public_jwk()))
    code, out = invoke("verify", "--jwk", str(jwk), "--json")
    assert code == 0, out
    code, out = invoke("public-key")
    assert code == 0 and json.loads(out)["kid"] == load_or_create_signer(home).kid

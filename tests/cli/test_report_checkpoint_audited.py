"""The checkpoint `proctor report compliance` signs is the effects of the operator's own
`audit.checkpoint` event, in the audit writer's transaction, on each database: it was
stored with no event at all, so the log never said who signed it, or that anyone did.
If the event cannot be written, no checkpoint is stored and the command fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from proctor.audit import ActorType, AuditEvent, AuditLog
from proctor.cli.main import app
from proctor.store import open_store
from proctor.store.tables import audit_checkpoints
from tests.cli.audited import account, chain_verifies, human_events, run, runner
from tests.cli.test_audited_commands import audit_down, home  # noqa: F401 (a fixture)

ERIN = ("--by", "erin@acme.example")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


@pytest.fixture
def initialised(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.setenv("PROCTOR_POLICY_DIR", str(EXAMPLES))
    monkeypatch.setenv("PROCTOR_OPERATOR", "pat@acme.example")  # the default operator
    assert run("init", *ERIN)[0] == 0
    return home


def _report(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, ["report", "compliance", "--format", "json", *args])
    return result.exit_code, json.loads(result.stdout)


def _checkpoints(database_url: str) -> list[int]:
    store = open_store(database_url)
    try:
        with store.reading() as conn:
            return [int(r.seq) for r in conn.execute(select(audit_checkpoints))]
    finally:
        store.close()


def test_the_checkpoint_a_report_signs_is_the_operators_event(
        initialised: Path, database_url: str) -> None:
    code, report = _report(*ERIN)
    assert code == 0, report
    seq = report["checkpoint"]["seq"]
    last = human_events()[-1]
    assert (last["action"], last["target"], last["actor"]["id"], last["outcome"],
            last["source"], last["detail"]["os_user"], last["detail"]["for"]) == (
        "audit.checkpoint", f'AuditCheckpoint::"{seq}"', "erin@acme.example", "signed",
        "cli", account(), "report compliance")
    assert seq in _checkpoints(database_url)
    assert chain_verifies()


def test_a_report_whose_checkpoint_cannot_be_audited_stores_none_and_fails(
        initialised: Path, database_url: str) -> None:
    before = _checkpoints(database_url)
    with audit_down(database_url):
        code, answer = _report()
    assert (code, answer["error"]["code"]) == (1, "audit_unavailable")
    assert answer["error"]["message"].endswith("could not be audited, so it was not made")
    assert _checkpoints(database_url) == before
    assert chain_verifies()


class _CrashError(Exception):
    pass


def test_a_report_that_dies_right_after_its_checkpoint_committed_leaves_its_event(
        initialised: Path, database_url: str) -> None:
    with_effects = AuditLog.record_with

    def record_with(self: AuditLog, event: AuditEvent | None, *args: Any,
                    **kwargs: Any) -> Any:
        written = with_effects(self, event, *args, **kwargs)
        if event is not None and event.actor.type is ActorType.HUMAN:
            raise _CrashError  # right after the checkpoint and its event committed
        return written

    plain = AuditLog.record

    def record(self: AuditLog, event: AuditEvent, **kwargs: Any) -> Any:
        if event.actor.type is ActorType.HUMAN:  # a write of its own, after the commit
            raise _CrashError
        return plain(self, event, **kwargs)

    before = _checkpoints(database_url)
    with pytest.MonkeyPatch.context() as dying:
        dying.setattr(AuditLog, "record_with", record_with)
        dying.setattr(AuditLog, "record", record)
        result = runner.invoke(app, ["report", "compliance", "--format", "json"])
    made = [seq for seq in _checkpoints(database_url) if seq not in before]
    assert len(made) == 1, result.output
    last = human_events()[-1]
    assert (last["action"], last["target"], last["actor"]["id"]) == (
        "audit.checkpoint", f'AuditCheckpoint::"{made[0]}"', "pat@acme.example")
    assert chain_verifies()

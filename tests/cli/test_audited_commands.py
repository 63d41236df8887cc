"""Every command that changes state is the operator's own audit event, on each database.

The operator is `--by`, else PROCTOR_OPERATOR, else the login name; the account
that ran the command is recorded beside it. Each change commits with its event in one
transaction; when the event cannot be written the command fails: what gives access is
not made, what takes it away is made all the same.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from sqlalchemy import select, text

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, iter_events, new_event_id
from proctor.cli.main import app
from proctor.clock import SystemClock
from proctor.config import load_settings
from proctor.grants import make_proof
from proctor.runtime import open_runtime
from proctor.store import open_store
from proctor.store.tables import audit_checkpoints, leases, tasks
from tests.cli.audited import account, chain_verifies, human_events, run, runner
from tests.identity.factories import BUILDER, CODER, manifest, public_jwk

ERIN = ("--by", "erin@acme.example")
ISSUER = "spiffe://acme.example/proctor"
GIT = json.dumps({"tools": [{"tool": "git/*"}]})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PROCTOR_HOME", str(home))
    monkeypatch.setenv("PROCTOR_TRUST_DOMAIN", "acme.example")
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    for var in ("PROCTOR_CONFIG", "PROCTOR_IDENTITY_CONFIG", "PROCTOR_MASTER_KEY",
                "PROCTOR_WEBHOOK_CONFIG", "PROCTOR_OPERATOR"):
        monkeypatch.delenv(var, raising=False)
    return home


def _register(home: Path, name: str, *by: str) -> ec.EllipticCurvePrivateKey:
    key = ECKey.generate_key("P-256", private=True)
    (home / f"{name}.jwk").write_text(json.dumps(public_jwk(key)))
    (home / "manifest.yaml").write_text(yaml.safe_dump(manifest().as_json()))
    code, agent = run("agent", "register", name, "--owner", "alice@acme.example", "--group",
                      "coding-agents", "--jwk", str(home / f"{name}.jwk"), "--manifest",
                      str(home / "manifest.yaml"), *by)
    assert code == 0, agent
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return private


def test_every_state_changing_command_is_the_operators_own_human_event(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    me, olivia, pat, erin = account(), "olivia@acme.example", "pat@acme.example", ERIN[1]
    expected: list[tuple[str, str, str, str]] = []  # action, target, operator, outcome

    assert run("init", "--by", olivia)[0] == 0
    _, listed = run("token", "list")
    # the home's policies, active from the first open (they were made with no event)
    expected.append(("policy.activate", "PolicyRevision::1", olivia, "activated"))
    expected.append(("token.create", f'ApiToken::"{listed["tokens"][0]["id"]}"', olivia,
                     "created"))

    monkeypatch.setenv("PROCTOR_OPERATOR", pat)  # the default when there is no --by
    coder = _register(home, "coder")
    expected.append(("agent.register", f'Agent::"{CODER}"', pat, "registered"))
    _register(home, "builder", *ERIN)  # --by wins over PROCTOR_OPERATOR
    expected.append(("agent.register", f'Agent::"{BUILDER}"', erin, "registered"))
    monkeypatch.delenv("PROCTOR_OPERATOR")  # the login name, at last
    assert run("agent", "suspend", "builder", "--reason", "looks odd")[0] == 0
    expected.append(("agent.suspend", f'Agent::"{BUILDER}"', me, "suspended"))

    shown = run("agent", "show", "builder")[1]
    assert run("agent", "review", "builder", "--digest", shown["manifest_digest"], *ERIN)[0] == 0
    expected.append(("agent.review", f'Agent::"{BUILDER}"', erin, "trusted"))
    code, task = run("task", "start", "coder", "--purpose", "fix the build",
                     "--on-behalf-of", "alice@acme.example", *ERIN)
    assert code == 0, task
    expected.append(("task.start", f'Task::"{task["task"]}"', erin, "started"))
    code, grant = run("grant", "issue", "--task", task["task"], "--scope", GIT, *ERIN)
    assert code == 0, grant
    expected.append(("grant.issue", f'Grant::"{grant["accessor"]}"', erin, "issued"))
    proof = make_proof(coder, grant["token"], method="grant/exchange", target=ISSUER,
                       now=SystemClock().now())
    code, child = run("grant", "exchange", grant["token"], "--proof", proof, "--to", BUILDER,
                      "--scope", json.dumps({"tools": [{"tool": "git/git_log"}]}),
                      "--ttl", "120", *ERIN)
    assert code == 0, child
    expected.append(("grant.exchange", f'Grant::"{child["accessor"]}"', erin, "issued"))
    assert run("grant", "revoke", child["accessor"], *ERIN)[0] == 0
    expected.append(("grant.revoke", child["accessor"], erin, "revoked"))
    assert run("task", "end", task["task"], *ERIN)[0] == 0
    expected.append(("task.end", f'Task::"{task["task"]}"', erin, "revoked"))

    code, applied = run("policy", "apply", *ERIN)
    assert code == 0, applied
    expected.append(("policy.activate", f"PolicyRevision::{applied['revision']}", erin,
                     "activated"))
    value = "s3cret-" + secrets.token_hex(8)
    assert run("secret", "set", "github.token", *ERIN, stdin=value)[0] == 0
    expected.append(("secret.put", 'Secret::"github.token"', erin, "stored"))
    assert run("secret", "delete", "github.token", *ERIN)[0] == 0
    expected.append(("secret.delete", 'Secret::"github.token"', erin, "deleted"))
    code, token = run("token", "create", "--human", "dave@acme.example", "--role",
                      "approver", *ERIN)
    assert code == 0, token
    expected.append(("token.create", f'ApiToken::"{token["id"]}"', erin, "created"))
    assert run("token", "revoke", token["id"], *ERIN)[0] == 0
    expected.append(("token.revoke", f'ApiToken::"{token["id"]}"', erin, "revoked"))
    assert run("agent", "retire", "builder", *ERIN)[0] == 0
    expected.append(("agent.retire", f'Agent::"{BUILDER}"', erin, "retired"))
    code, checkpoint = run("audit", "checkpoint", *ERIN)
    assert code == 0, checkpoint
    expected.append(("audit.checkpoint", f'AuditCheckpoint::"{checkpoint["seq"]}"', erin,
                     "signed"))

    events = human_events()
    assert [(e["action"], e["target"], e["actor"]["id"], e["outcome"]) for e in events] == \
        expected
    assert {(e["actor"]["type"], e["detail"]["os_user"], e["source"]) for e in events} == {
        ("human", me, "cli")}
    assert all(value not in json.dumps(e) for e in events)
    assert chain_verifies()

    segment = tmp_path / "segment.jsonl"
    code, archived = run("audit", "archive", "--up-to", str(checkpoint["seq"]), "--out",
                         str(segment), *ERIN)
    assert code == 0, archived
    last = human_events()[-1]
    assert (last["action"], last["target"], last["actor"]["id"], last["detail"]["os_user"],
            last["detail"]["to_seq"]) == (
        "audit.archive", f'AuditSegment::"1-{checkpoint["seq"]}"', erin, me,
        checkpoint["seq"])
    assert chain_verifies()


def test_a_refused_command_changes_nothing_and_is_not_audited(home: Path) -> None:
    assert run("init")[0] == 0
    _register(home, "coder")
    before = human_events()
    code, refused = run("agent", "suspend", "coder", "--by", CODER)
    assert (code, refused["error"]["code"]) == (1, "reviewer_invalid")
    code, refused = run("agent", "suspend", "nobody", *ERIN)
    assert (code, refused["error"]["code"]) == (1, "agent_unknown")
    code, refused = run("token", "create", "--human", "dave@acme.example", "--role", "root")
    assert (code, refused["error"]["code"]) == (1, "request_invalid")
    assert run("agent", "show", "coder")[1]["trust_state"] == "trusted"
    assert human_events() == before


@contextmanager
def audit_down(database_url: str) -> Iterator[None]:
    """The audit log cannot be written: its head row is gone (as a faulty migration or an
    intruder could leave it) while events exist; every append refuses. Put back after."""
    store = open_store(database_url)
    try:
        with AuditLog(store) as audit:  # so that there is an event for the head to be of
            now = SystemClock().now()
            audit.record(AuditEvent(id=new_event_id(now), time=now,
                                    actor=Actor(ActorType.SYSTEM, "tests"),
                                    action="test.audit_down", target="", outcome="succeeded"))
        with store.engine.begin() as conn:
            head = conn.execute(text("SELECT seq, hash FROM audit_head")).one()
            conn.execute(text("DELETE FROM audit_head"))
        yield
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :s, :h)"),
                         {"s": head.seq, "h": head.hash})
    finally:
        store.close()


def test_a_change_that_gives_access_is_not_made_when_it_cannot_be_audited(
    home: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("PROCTOR_OPERATOR", "erin@acme.example")
    assert run("init")[0] == 0
    _register(home, "coder")
    _, task = run("task", "start", "coder", "--purpose", "p", "--on-behalf-of",
                  "alice@acme.example")
    before = human_events()
    with audit_down(database_url):
        key = ECKey.generate_key("P-256", private=True)
        (home / "builder.jwk").write_text(json.dumps(public_jwk(key)))
        answers = [
            run("agent", "register", "builder", "--owner", "alice@acme.example", "--jwk",
                str(home / "builder.jwk"), "--manifest", str(home / "manifest.yaml")),
            run("task", "start", "coder", "--purpose", "p", "--on-behalf-of",
                "alice@acme.example"),
            run("token", "create", "--human", "dave@acme.example", "--role", "admin"),
            run("policy", "apply"),
            run("audit", "checkpoint"),
            run("audit", "archive", "--up-to", "2", "--out", str(tmp_path / "segment.jsonl")),
        ]
        answers.append(run("secret", "set", "github.token",
                           stdin="s3cret-" + secrets.token_hex(8)))
        issued = run("grant", "issue", "--task", task["task"], "--scope", GIT)
    assert [(code, answer.get("error", {}).get("code")) for code, answer in answers] == \
        [(1, "audit_unavailable")] * 7
    # each is made with its event or not at all: a token used to be made, then revoked;
    # a policy set to be stored as a candidate first; a checkpoint stored, events
    # archived and a secret stored, then their event found unwritable
    assert [answer["error"]["message"].endswith("could not be audited, so it was not made")
            for _, answer in answers] == [True] * 7
    assert run("secret", "list")[1]["secrets"] == []
    # a grant's decisions cannot be written either: it is denied
    assert (issued[0], issued[1]["error"]["code"]) == (1, "issuance_denied")

    assert run("agent", "show", "builder")[1]["error"]["code"] == "agent_unknown"
    assert [t for t in run("token", "list")[1]["tokens"]
            if t["human"] == "dave@acme.example"] == []
    assert not (tmp_path / "segment.jsonl").exists()
    runtime = open_runtime(load_settings())
    try:
        assert [r.id for r in runtime.policies.list_revisions()] == [1]
        active = runtime.policies.active_revision()
        assert active is not None and active.id == 1
        with runtime.store.reading() as conn:
            assert [row.id for row in conn.execute(select(tasks))] == [task["task"]]
            assert list(conn.execute(select(audit_checkpoints))) == []
            assert list(conn.execute(select(leases).where(leases.c.kind == "grant"))) == []
        assert [e.seq for e in iter_events(runtime.store)][:2] == [1, 2]  # none archived
    finally:
        runtime.close()
    assert human_events() == before  # nothing of it on the record, and nothing in force
    assert chain_verifies()


def _coder_with_a_grant(home: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A home with the coding agent, a task of it and a grant, made by Erin."""
    monkeypatch.setenv("PROCTOR_OPERATOR", "erin@acme.example")
    assert run("init")[0] == 0
    _register(home, "coder")
    _, task = run("task", "start", "coder", "--purpose", "p", "--on-behalf-of",
                  "alice@acme.example")
    _, grant = run("grant", "issue", "--task", task["task"], "--scope", GIT)
    return task, grant


def test_a_change_that_takes_access_away_stands_but_the_command_fails_unaudited(
    home: Path, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, grant = _coder_with_a_grant(home, monkeypatch)
    admin = run("token", "list")[1]["tokens"][0]["id"]
    config = _client_config(home)
    assert run("secret", "set", "github.token", stdin="s3cret-" + secrets.token_hex(8))[0] == 0
    with audit_down(database_url):
        answers = [run("grant", "revoke", grant["accessor"]),
                   run("task", "end", task["task"]),
                   run("agent", "suspend", "coder", "--by", "erin@acme.example"),
                   run("token", "revoke", admin),
                   _wrap(config),
                   run("secret", "delete", "github.token")]
    assert [(code, answer.get("error", {}).get("code")) for code, answer in answers] == \
        [(1, "audit_unavailable")] * 6
    assert all(answer["error"]["message"].endswith("took effect but could not be audited")
               for _, answer in answers)

    _, tree = run("grant", "tree", task["task"])
    assert [(n["kind"], n["revoked_reason"]) for n in tree["nodes"]] == [
        ("task", "task ended"), ("grant", "revoked by an operator")]
    assert run("agent", "show", "coder")[1]["trust_state"] == "suspended"
    assert run("token", "list")[1]["tokens"][0]["revoked_at"] is not None
    assert "mcp" in config.read_text()  # its server behind proctor
    assert run("secret", "list")[1]["secrets"] == []
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".")] == []
    assert chain_verifies()


def _client_config(home: Path) -> Path:
    """A client's MCP config with one local server (no secret in it)."""
    config = home / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": {"time": {
        "command": "uvx", "args": ["mcp-server-time"]}}}, indent=2))
    return config


def _wrap(config: Path) -> tuple[int, Any]:
    """``discover --wrap --write``: its exit code and the last of its JSON answers (the
    plan, then an error if there is one)."""
    result = runner.invoke(app, ["discover", "--wrap", str(config), "--agent", "coder",
                                 "--proctor", "proctor", "--write", "--json"])
    text, answers, at = result.stdout, [], 0
    while text[at:].strip():
        answer, at = json.JSONDecoder().raw_decode(text, len(text) - len(text[at:].lstrip()))
        answers.append(answer)
    return result.exit_code, answers[-1]


def test_suspending_an_agent_on_the_command_line_ends_its_grants_with_its_event(
    home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the command's registry had none of the runtime's hooks: the agent was suspended, its
    # grants (and those it handed on) stayed in force, and the event was written after
    task, grant = _coder_with_a_grant(home, monkeypatch)
    assert run("agent", "suspend", "coder", "--reason", "looks odd")[0] == 0

    _, tree = run("grant", "tree", task["task"])
    assert [(n["kind"], n["revoked_reason"]) for n in tree["nodes"]] == [
        ("task", None), ("grant", "agent suspended: looks odd")]
    [event] = [e for e in human_events() if e["action"] == "agent.suspend"]
    assert (event["outcome"], event["detail"]["roots"], event["detail"]["os_user"],
            event["source"]) == ("suspended", [grant["grant_id"]], account(), "cli")
    assert chain_verifies()


class _CrashError(Exception):
    """The command's process dies here."""


_VALUE = "PROCTOR_TEST_SECRET_VALUE"
_CHANGES = {  # a command, the action of its event
    "agent register": "agent.register", "task start": "task.start",
    "policy apply": "policy.activate", "grant issue": "grant.issue",
    "grant exchange": "grant.exchange", "token create": "token.create",
    "token revoke": "token.revoke", "audit checkpoint": "audit.checkpoint",
    "audit archive": "audit.archive", "discover --wrap": "mcp_config.wrap",
    "secret set": "secret.put", "secret delete": "secret.delete"}


def _crash_args(change: str, home: Path, coder: ec.EllipticCurvePrivateKey
                ) -> tuple[str, ...]:
    """The command that makes ``change`` (what it needs made first, before the crash)."""
    def task() -> str:
        code, started = run("task", "start", "coder", "--purpose", "p", "--on-behalf-of",
                            "alice@acme.example")
        assert code == 0, started
        return str(started["task"])

    if change == "grant issue":
        return ("grant", "issue", "--task", task(), "--scope", GIT)
    if change == "grant exchange":
        _, grant = run("grant", "issue", "--task", task(), "--scope", GIT)
        proof = make_proof(coder, grant["token"], method="grant/exchange", target=ISSUER,
                           now=SystemClock().now())
        _register(home, "builder")
        return ("grant", "exchange", grant["token"], "--proof", proof, "--to", BUILDER,
                "--scope", json.dumps({"tools": [{"tool": "git/git_log"}]}), "--ttl", "120")
    if change == "token revoke":
        return ("token", "revoke", run("token", "list")[1]["tokens"][0]["id"])
    if change.startswith("secret"):
        value = "s3cret-" + secrets.token_hex(8)
        if change == "secret delete":
            assert run("secret", "set", "github.token", stdin=value)[0] == 0
            return ("secret", "delete", "github.token")
        os.environ[_VALUE] = value  # the test's monkeypatch takes it away
        return ("secret", "set", "github.token", "--from-env", _VALUE)
    if change == "discover --wrap":
        return ("discover", "--wrap", str(_client_config(home)), "--agent", "coder",
                "--proctor", "proctor", "--write")
    return {"agent register": ("agent", "register", "builder", "--owner",
                               "alice@acme.example", "--jwk", str(home / "builder.jwk"),
                               "--manifest", str(home / "manifest.yaml")),
            "task start": ("task", "start", "coder", "--purpose", "p", "--on-behalf-of",
                           "alice@acme.example"),
            "policy apply": ("policy", "apply"),
            "token create": ("token", "create", "--human", "dave@acme.example", "--role",
                             "admin"),
            "audit checkpoint": ("audit", "checkpoint"),
            "audit archive": ("audit", "archive", "--up-to", "2", "--out",
                              str(home / "segment.jsonl"))}[change]


@pytest.mark.parametrize("change", list(_CHANGES))
def test_a_command_that_dies_right_after_its_change_committed_leaves_its_event(
    home: Path, monkeypatch: pytest.MonkeyPatch, change: str,
) -> None:
    # the command made the change, then wrote its event (Acting.record, gone now): a
    # process that died between the two left the change and nothing in the log saying
    # who made it
    monkeypatch.setenv("PROCTOR_OPERATOR", "erin@acme.example")
    assert run("init")[0] == 0
    coder = _register(home, "coder")
    (home / "builder.jwk").write_text(json.dumps(public_jwk(ECKey.generate_key("P-256"))))
    monkeypatch.setenv(_VALUE, "")  # put back after the test, whatever it sets
    args = _crash_args(change, home, coder)
    before = {e["id"] for e in human_events()}
    with_effects = AuditLog.record_with

    plain = AuditLog.record

    def record(self: AuditLog, event: AuditEvent, **kwargs: Any) -> Any:
        if event.actor.type is ActorType.HUMAN:  # the operator's change has committed
            raise _CrashError
        return plain(self, event, **kwargs)  # what opening the runtime writes

    def record_with(self: AuditLog, event: AuditEvent | None, *args: Any,
                    **kwargs: Any) -> Any:
        written = with_effects(self, event, *args, **kwargs)
        if any(e.actor.type is ActorType.HUMAN
               for e in ([event] if event is not None else []) + list(kwargs.get("more", ()))):
            raise _CrashError  # right after the change and its event committed
        return written

    with pytest.MonkeyPatch.context() as dying:  # the home's settings stay
        dying.setattr(AuditLog, "record", record)
        dying.setattr(AuditLog, "record_with", record_with)
        result = runner.invoke(app, [*args, "--json"])
    assert isinstance(result.exception, _CrashError)

    [event] = [e for e in human_events() if e["id"] not in before]
    assert (event["action"], event["actor"]["id"], event["source"]) == (
        _CHANGES[change], "erin@acme.example", "cli")
    assert chain_verifies()

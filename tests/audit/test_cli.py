"""`proctor audit …` as an operator runs it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from proctor.audit import AuditLog, human_event
from proctor.cli.main import app
from proctor.clock import FrozenClock
from proctor.grants import IssuerKeyring, load_master_key
from proctor.keys import LEGACY_KEY_FILE, LocalSigner, Verifier
from proctor.store import open_store
from tests.audit.helpers import agent_event, execute

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def home(tmp_path: Path, database_url: str, clock: FrozenClock,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose log holds 12 agent events and one human approval."""
    monkeypatch.setenv("PROCTOR_HOME", str(tmp_path))
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    monkeypatch.delenv("PROCTOR_CONFIG", raising=False)
    monkeypatch.delenv("PROCTOR_MASTER_KEY", raising=False)
    store = open_store(database_url)
    keyring = IssuerKeyring(store, clock, load_master_key(tmp_path))  # as the runtime's
    with AuditLog(store, signer=keyring, clock=clock, checkpoint_every=5) as audit:
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


def test_verify_names_a_key_of_the_keys_table_past_its_mark_and_exits_1(
        home: Path, database_url: str) -> None:
    store = open_store(database_url)  # 13 events, none keyed yet (mark: none)
    execute(store, "INSERT INTO audit_keys (kind, key, seq) VALUES ('t', 'task-42', 4)")
    store.close()
    code, out = invoke("verify")
    assert code == 1
    assert "position 4 (keys_mismatch)" in out and "past the keys' mark at position 0" in out


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
    assert json.loads(out)["left"] == 0  # deleted after the cut, every chunk
    code, out = invoke("verify", "--json")
    assert code == 0 and json.loads(out)["first_seq"] == 11, out
    code, out = invoke("verify", "--archive", str(segment), "--json")
    assert code == 0 and json.loads(out)["events"] == 10


def test_verify_holds_an_archived_segment_to_a_checkpoint_kept_out_of_band(
    home: Path, tmp_path: Path
) -> None:
    code, out = invoke("checkpoint", "--json")  # at 13; its own event is 14
    kept = tmp_path / "kept.json"
    kept.write_text(out)
    segment = tmp_path / "segment.jsonl"
    code, out = invoke("archive", "--up-to", "14", "--out", str(segment), "--json")
    assert code == 0, out
    code, out = invoke("verify", "--checkpoint", str(kept), "--json")
    problem = json.loads(out)["problem"]  # archived: the database cannot hold it
    assert code == 1 and (problem["seq"], problem["kind"]) == (13, "checkpoint_unverifiable")
    code, out = invoke("verify", "--archive", str(segment), "--checkpoint", str(kept),
                       "--json")
    assert code == 0 and json.loads(out)["valid"], out


class _Outside:
    """``signer`` (a key outside the keyring) signing checkpoints after the keyring's,
    whose keys it trusts."""

    def __init__(self, signer: LocalSigner, keyring: IssuerKeyring) -> None:
        self.signer, self.keyring = signer, keyring

    def current_signer(self) -> LocalSigner:
        return self.signer

    def checkpoint_verifiers(self) -> dict[str, Verifier]:
        return {**self.keyring.checkpoint_verifiers(), self.signer.kid: self.signer}


def _append_with(signer: LocalSigner, database_url: str, clock: FrozenClock,
                 home: Path) -> None:
    """Five more events, checkpointed by ``signer`` (a key outside the keyring)."""
    store = open_store(database_url)
    keys = _Outside(signer, IssuerKeyring(store, clock, load_master_key(home)))
    with AuditLog(store, signer=keys, clock=clock, checkpoint_every=5) as audit:
        for n in range(5):
            audit.record(agent_event(clock, 100 + n))
    store.close()


def test_a_checkpoint_by_a_key_outside_the_keyring_fails_unless_given_with_jwk(
    home: Path, tmp_path: Path, database_url: str, clock: FrozenClock
) -> None:
    stranger = LocalSigner.generate()
    _append_with(stranger, database_url, clock, home)
    code, out = invoke("verify", "--json")
    problem = json.loads(out)["problem"]
    assert code == 1 and (problem["seq"], problem["kind"]) == (15, "checkpoint_unknown_key")
    jwk = tmp_path / "stranger.jwk"
    jwk.write_text(json.dumps(stranger.public_jwk()))
    code, out = invoke("verify", "--jwk", str(jwk), "--json")
    assert code == 0, out
    assert json.loads(out)["checkpoints"] == 3


def test_the_public_key_set_verifies_the_chain_without_the_keyring(
    home: Path, tmp_path: Path, database_url: str, clock: FrozenClock
) -> None:
    store = open_store(database_url)
    IssuerKeyring(store, clock, load_master_key(home)).rotate(max_ttl_seconds=0)
    store.close()
    code, out = invoke("checkpoint", "--json")  # signed by the new key
    assert code == 0
    code, out = invoke("public-key")
    assert code == 0
    keys = json.loads(out)["keys"]
    assert len(keys) == 2 and all("d" not in key for key in keys)
    copy = tmp_path / "issuer-keys.json"  # the out-of-band copy
    copy.write_text(out)
    (home / "keys" / "master.key").unlink()  # an auditor without the master key
    code, out = invoke("verify", "--no-keyring", "--jwk", str(copy), "--json")
    assert code == 0, out
    assert json.loads(out)["checkpoints"] == 3
    code, out = invoke("verify", "--no-keyring", "--json")
    assert code == 1 and json.loads(out)["problem"]["kind"] == "checkpoint_unknown_key"


def test_verify_refuses_a_jwk_file_that_holds_no_key_in_one_line(
    home: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jwk"
    bad.write_text('{"keys": "nope"}')
    result = runner.invoke(app, ["audit", "verify", "--jwk", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: public key `")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_legacy_key_file_is_trusted_only_once_an_operator_imports_it(
    home: Path, database_url: str, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = LocalSigner.generate()  # the per-home key of an earlier version
    path = home / LEGACY_KEY_FILE
    path.write_bytes(legacy.to_pem())
    path.chmod(0o600)
    _append_with(legacy, database_url, clock, home)
    # a key file in the home is never imported on its own (one dropped there was
    # trusted for checkpoints from the next start on)
    code, out = invoke("verify", "--json")
    problem = json.loads(out)["problem"]
    assert code == 1 and (problem["seq"], problem["kind"]) == (15, "checkpoint_unknown_key")
    assert "proctor audit import-key" in caplog.text
    code, out = invoke("import-key", "--json")
    assert code == 0 and json.loads(out)["kid"] == legacy.kid and json.loads(out)["imported"]
    code, out = invoke("import-key", "--json")  # held already: nothing written
    assert code == 0 and not json.loads(out)["imported"]
    path.unlink()  # as the command says: the keyring holds the key now
    code, out = invoke("verify", "--json")
    assert code == 0, out
    assert json.loads(out)["checkpoints"] == 3
    store = open_store(database_url)
    keyring = IssuerKeyring(store, clock, load_master_key(home))
    assert legacy.kid in keyring.checkpoint_verifiers()
    assert legacy.kid not in {key["kid"] for key in keyring.jwks()["keys"]}  # no grant
    assert keyring.current().kid != legacy.kid  # and it signs nothing new
    with store.engine.begin() as conn:  # the import is the operator's audited action
        action, actor_type = conn.execute(text(
            "SELECT action, actor_type FROM audit_events ORDER BY seq DESC LIMIT 1")).one()
    assert (action, actor_type) == ("audit.key_import", "human")
    store.close()


def test_a_legacy_key_file_others_can_read_is_refused_by_import_and_start_goes_on(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = home / LEGACY_KEY_FILE
    path.write_bytes(LocalSigner.generate().to_pem())
    path.chmod(0o644)
    code, _ = invoke("verify", "--json")
    assert code == 0 and "is not imported" in caplog.text
    result = runner.invoke(app, ["audit", "import-key"])
    assert result.exit_code == 1 and "readable by others" in result.stderr


def test_a_legacy_key_is_not_imported_when_its_event_cannot_be_written(
    home: Path, database_url: str, clock: FrozenClock
) -> None:
    from tests.cli.test_audited_commands import audit_down

    legacy = LocalSigner.generate()
    path = home / LEGACY_KEY_FILE
    path.write_bytes(legacy.to_pem())
    path.chmod(0o600)
    with audit_down(database_url):
        code, _ = invoke("import-key", "--json")
    assert code == 1
    store = open_store(database_url)
    assert legacy.kid not in IssuerKeyring(store, clock, load_master_key(home)
                                           ).checkpoint_verifiers()
    store.close()


def test_import_key_without_a_legacy_key_file_fails_in_one_line(home: Path) -> None:
    result = runner.invoke(app, ["audit", "import-key"])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_stream_once_sends_what_there_is_and_keeps_its_cursor(home: Path) -> None:
    from tests.audit.receivers import HttpReceiver, Received, free_port

    received, port = Received(), free_port()
    receiver = HttpReceiver(port, received).start()
    try:
        code, out = invoke("stream", f"http://127.0.0.1:{port}/ingest", "--name", "siem",
                           "--once", "--json")
        assert (code, json.loads(out)) == (0, {"stream": "siem", "sent": 13, "cursor": 13})
        code, out = invoke("stream", f"http://127.0.0.1:{port}/ingest", "--name", "siem",
                           "--once", "--json")
        assert json.loads(out)["sent"] == 0
    finally:
        receiver.stop()
    assert received.seqs == list(range(1, 14))
    # the collector is gone: a non-zero exit with the code, and the cursor stays
    code, out = invoke("stream", f"http://127.0.0.1:{port}/ingest", "--name", "other",
                       "--once", "--json")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "audit_delivery_failed"


def test_stream_refuses_a_target_it_cannot_deliver_to(home: Path) -> None:
    code, out = invoke("stream", "ftp://siem.acme.example/", "--once", "--json")
    assert code != 0
    assert json.loads(out)["error"]["code"] == "request_invalid"


def test_verify_holds_the_chain_to_a_checkpoint_kept_out_of_band(
    home: Path, tmp_path: Path, database_url: str
) -> None:
    code, out = invoke("checkpoint", "--json")
    kept = tmp_path / "kept.json"
    kept.write_text(out)
    code, out = invoke("verify", "--checkpoint", str(kept), "--json")
    assert code == 0, out
    store = open_store(database_url)  # the last events deleted, their checkpoint with them
    execute(store, "DELETE FROM audit_events WHERE seq > 10")
    execute(store, "DELETE FROM audit_keys WHERE seq > 10")
    execute(store, "DELETE FROM audit_checkpoints WHERE seq > 10")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_head SET seq = 10, keyed = CASE WHEN keyed > 10 "
                          "THEN 10 ELSE keyed END, hash = (SELECT hash FROM audit_events "
                          "WHERE seq = 10)"))
    store.close()
    code, _ = invoke("verify")
    assert code == 0  # the database alone cannot tell
    code, out = invoke("verify", "--checkpoint", str(kept), "--json")
    problem = json.loads(out)["problem"]
    assert code == 1 and (problem["seq"], problem["kind"]) == (11, "truncated")


@pytest.mark.parametrize(("content", "says"), [
    ("not json", "is not valid JSON"),
    ("[]", "holds no checkpoint"),
    ('{"seq": 1, "seq": 2}', "twice"),
    ('[{"seq": "13"}]', "unknown key|lacks|not a whole number"),
    ('"x"', "is not a JSON object"),
])
def test_verify_refuses_a_hostile_checkpoint_file_in_one_line(
    home: Path, tmp_path: Path, content: str, says: str
) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text(content)
    result = runner.invoke(app, ["audit", "verify", "--checkpoint", str(kept)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and re.search(says, line), line


@pytest.mark.parametrize("args", [
    ("export", "--format", "jsonl", "--out", "{tmp}/no-such-folder/events.jsonl"),
    ("export", "--format", "ocsf", "--out", "{tmp}"),
    ("tail", "-n", "99999999999999999999"),
    ("search", "--limit", "99999999999999999999"),
    ("archive", "--up-to", "99999999999999999999", "--out", "{tmp}/segment.jsonl"),
])
def test_an_argument_the_command_cannot_use_is_one_line_and_exit_non_zero(
    home: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # an export to a folder that does not exist, or to a folder, was a traceback; a count
    # past what the store's integers hold overflowed in the driver
    result = runner.invoke(app, ["audit", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--out", "--bundle"])
def test_a_compliance_report_to_a_folder_that_does_not_exist_is_one_line(
    home: Path, tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # it was a traceback (the report made, then not written)
    monkeypatch.setenv("PROCTOR_POLICY_DIR", str(EXAMPLES / "policies"))
    result = runner.invoke(app, ["report", "compliance", option,
                                 str(tmp_path / "no-such-folder" / "report")])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot write"), line


def test_an_escape_sequence_an_agent_chose_never_reaches_the_operators_terminal(
    home: Path, database_url: str, clock: FrozenClock
) -> None:
    # a tool named so by an agent (or an upstream): Rich passed ESC through, so `audit
    # tail` cleared the operator's screen, set its title and rewrote the lines above
    hostile = "git/x\x1b]0;owned\x07\x1b[2J\x1b[1A\x9b2J"
    store = open_store(database_url)
    with AuditLog(store, clock=clock) as audit:
        audit.record(replace(agent_event(clock), target=f'Tool::"{hostile}"'))
    store.close()
    for args in (["tail", "-n", "3"], ["search", "--limit", "3"]):
        code, out = invoke(*args)
        assert code == 0
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", out), repr(out)
        assert "\\x1b" in out.replace("\n", "").replace("│", "").replace(" ", "")


# a C0 or C1 control character (CSI, U+009B, is ESC [ in one) or DEL, raw
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_json_output_holds_no_raw_control_character(home: Path, database_url: str,
                                                    clock: FrozenClock) -> None:
    target = 'Tool::"git/\x9b2J\x1b[31m\x85\x7f"'  # an upstream chose this tool's name
    store = open_store(database_url)
    with AuditLog(store, clock=clock) as audit:
        audit.record(replace(agent_event(clock), target=target))
    store.close()
    for args in (("tail", "-n", "1", "--json"), ("search", "--json"),
                 ("export", "--format", "jsonl")):
        code, out = invoke(*args)
        assert code == 0, out
        assert not _RAW_CONTROL.search(out), args
        lines = ([json.loads(line) for line in out.splitlines()] if args[0] == "export"
                 else json.loads(out))
        assert target in {line["event"]["target"] for line in lines}  # the same, escaped


def test_a_reordering_or_invisible_character_an_agent_chose_is_shown_as_it_is(
    home: Path, database_url: str, clock: FrozenClock
) -> None:
    # `\u202e1001-c` showed as `c-1001` (another customer), a zero-width space hid a
    # difference: in a table and in JSON alike
    target = 'Tool::"crm/\u202e1001-c\u200b"'
    store = open_store(database_url)
    with AuditLog(store, clock=clock) as audit:
        audit.record(replace(agent_event(clock), target=target))
    store.close()
    for args in (["tail", "-n", "1"], ["tail", "-n", "1", "--json"], ["search", "--json"]):
        code, out = invoke(*args)
        assert code == 0, out
        assert not re.search("[\u202a-\u202e\u200b]", out), (args, out)
        if "--json" in args:  # a table wraps its cells: only JSON keeps the text whole
            assert "\\u202e1001-c\\u200b" in out
    code, out = invoke("tail", "-n", "1", "--json")
    assert json.loads(out)[0]["event"]["target"] == target  # the same, escaped

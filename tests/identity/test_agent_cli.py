"""`proctor agent …` as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.clock import SystemClock
from proctor.identity import AgentRegistry, TrustConfig
from proctor.store import open_store

from .factories import BUILDER, CODER, SvidAuthority, manifest, public_jwk

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PROCTOR_HOME", str(home))
    monkeypatch.setenv("PROCTOR_TRUST_DOMAIN", "acme.example")
    monkeypatch.delenv("PROCTOR_DATABASE_URL", raising=False)
    monkeypatch.delenv("PROCTOR_CONFIG", raising=False)
    monkeypatch.delenv("PROCTOR_IDENTITY_CONFIG", raising=False)
    (home / "manifest.yaml").write_text(yaml.safe_dump(manifest().as_json()))
    (home / "coder.jwk").write_text(json.dumps(public_jwk(ECKey.generate_key("P-256"))))
    return home


def run(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, ["agent", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_register_show_suspend_review_retire_on_each_database(
    home: Path, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    code, agent = run("register", "coder", "--owner", "alice@acme.example", "--group", "coders",
                      "--jwk", str(home / "coder.jwk"), "--manifest", str(home / "manifest.yaml"))
    assert code == 0, agent
    assert (agent["id"], agent["trust_state"], agent["proof_method"]) == \
        (CODER, "trusted", "own_key")
    assert "d" not in agent["public_jwk"]

    store = open_store(database_url)
    try:  # the agent presents another manifest (through the gateway, later)
        AgentRegistry(store, SystemClock(), TrustConfig("acme.example")).present_manifest(
            CODER, manifest(model_id="claude-opus-4"))
    finally:
        store.close()
    code, shown = run("show", CODER)
    assert (code, shown["trust_state"]) == (0, "drifted")
    assert shown["manifest_differences"]["model_id"] == {
        "reviewed": "claude-sonnet-4", "presented": "claude-opus-4"}
    text = runner.invoke(app, ["agent", "show", "coder"]).stdout
    assert "drift in model_id: reviewed 'claude-sonnet-4' -> presented 'claude-opus-4'" in text

    assert run("suspend", "coder", "--by", "erin", "--reason", "leak")[1]["trust_state"] == \
        "suspended"
    code, reviewed = run("review", "coder", "--by", "erin", "--digest",
                         shown["presented_digest"])
    assert (code, reviewed["trust_state"], reviewed["manifest"]["model_id"]) == \
        (0, "trusted", "claude-opus-4")
    assert run("retire", "coder", "--by", "alice")[1]["trust_state"] == "retired"
    code, listed = run("list", "--state", "retired")
    assert [a["id"] for a in listed["agents"]] == [CODER]


def test_a_review_without_digest_shows_the_drift_and_asks_before_it_adopts_it(home: Path) -> None:
    code, _ = run("register", "coder", "--owner", "alice@acme.example", "--jwk",
                  str(home / "coder.jwk"), "--manifest", str(home / "manifest.yaml"))
    assert code == 0
    store = open_store(f"sqlite:///{home / 'proctor.db'}")
    try:
        drifted = AgentRegistry(store, SystemClock(), TrustConfig("acme.example")
                                ).present_manifest(CODER, manifest(model_id="claude-opus-4"))
    finally:
        store.close()
    review = ["agent", "review", "coder", "--by", "erin"]
    declined = runner.invoke(app, review)  # no terminal to answer
    assert declined.exit_code == 1 and "nothing reviewed" in declined.stderr
    code, unnamed = run("review", "coder", "--by", "erin")
    assert (code, unnamed["error"]["code"]) == (1, "review_digest_missing")
    assert run("show", "coder")[1]["trust_state"] == "drifted"
    shown = runner.invoke(app, review, input="y\n")
    assert shown.exit_code == 0, shown.output
    assert "drift in model_id: reviewed 'claude-sonnet-4' -> presented 'claude-opus-4'" in \
        shown.stdout
    assert f"adopt manifest {drifted.presented_digest} for {CODER}?" in shown.stdout
    assert run("show", "coder")[1]["trust_state"] == "trusted"


def test_register_by_jwt_svid_needs_a_configured_bundle(home: Path) -> None:
    code, error = run("register", "builder", "--owner", "bob", "--jwt-svid",
                      "--manifest", str(home / "manifest.yaml"))
    assert (code, error["error"]["code"]) == (1, "config_invalid")
    authority = SvidAuthority()
    (home / "bundle.json").write_text(json.dumps(
        {"keys": [{**public_jwk(authority.key), "kid": authority.kid, "use": "jwt-svid"}]}))
    (home / "identity.toml").write_text(
        '[[trust_bundles]]\ntrust_domain = "acme.example"\njwks_file = "bundle.json"\n')
    code, agent = run("register", "builder", "--owner", "bob", "--jwt-svid",
                      "--manifest", str(home / "manifest.yaml"))
    assert (code, agent["id"], agent["proof_method"]) == (0, BUILDER, "jwt_svid")


@pytest.mark.parametrize(("args", "code"), [
    (["register", "spiffe://acme.example/agents/x", "--owner", "a", "--jwk", "{jwk}",
      "--manifest", "{manifest}"], "agent_id_invalid"),
    (["register", "x", "--owner", "a", "--manifest", "{manifest}"], "request_invalid"),
    (["register", "x", "--owner", "a", "--jwt-svid", "--jwk", "{jwk}", "--manifest",
      "{manifest}"], "request_invalid"),
    (["register", "x", "--owner", "a", "--jwk", "{private}", "--manifest", "{manifest}"],
     "agent_key_invalid"),
    (["register", "x", "--owner", "a", "--jwk", "{jwk}", "--manifest", "{jwk}"],
     "manifest_invalid"),
    (["register", "x", "--owner", "a", "--oidc-subject", "s", "--manifest", "{manifest}"],
     "config_invalid"),
    (["show", "ghost"], "agent_unknown"),
    (["review", "ghost", "--by", "erin"], "agent_unknown"),
    (["suspend", "spiffe://acme.example/agent/x", "--by", CODER], "reviewer_invalid"),
])
def test_bad_input_is_one_error_with_a_code_and_exit_1(
    home: Path, args: list[str], code: str,
) -> None:
    (home / "private.jwk").write_text(json.dumps(ECKey.generate_key("P-256").as_dict(
        private=True)))
    paths = {"{jwk}": str(home / "coder.jwk"), "{manifest}": str(home / "manifest.yaml"),
             "{private}": str(home / "private.jwk")}
    argv = [paths.get(a, a) for a in args]
    exit_code, error = run(*argv)
    assert (exit_code, error["error"]["code"]) == (1, code)
    plain = runner.invoke(app, ["agent", *argv])
    assert plain.exit_code == 1
    # one message (Rich may wrap it at the terminal width), no traceback
    assert plain.stderr.startswith("error: ") and "Traceback" not in plain.stderr
    assert plain.stderr.count("error: ") == 1
    assert run("list")[1] == {"agents": []}


def test_list_and_show_print_readable_text(home: Path) -> None:
    assert runner.invoke(app, ["agent", "list"]).stdout.strip() == "no agents registered"
    result = runner.invoke(app, ["agent", "register", "coder", "--owner", "alice", "--jwk",
                                 str(home / "coder.jwk"), "--manifest",
                                 str(home / "manifest.yaml")])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"registered {CODER} (own_key, trusted); manifest sha256:")
    listed = runner.invoke(app, ["agent", "list"]).stdout
    assert "alice" in listed and "own_key" in listed and "trusted" in listed
    shown = runner.invoke(app, ["agent", "show", "coder"]).stdout
    assert f"id: {CODER}" in shown and "trust_state: trusted" in shown

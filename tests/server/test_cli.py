"""``proctor init`` shows the admin token once; ``proctor token`` makes, lists and revokes
tokens for other humans; only hashes are stored."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.clock import SystemClock
from proctor.config import load_settings
from proctor.server import ApiTokens
from proctor.store import open_store

runner = CliRunner()


def test_init_shows_the_admin_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    env = {"PROCTOR_HOME": str(tmp_path / "home")}
    first = runner.invoke(app, ["init", "--json"], env=env)
    assert first.exit_code == 0, first.output
    token = json.loads(first.stdout)["admin_token"]
    assert token.startswith("ptk_")
    again = runner.invoke(app, ["init"], env=env)
    assert "admin token" not in again.stdout
    assert json.loads(runner.invoke(app, ["init", "--json"], env=env).stdout)[
        "admin_token"] is None
    database = (tmp_path / "home" / "proctor.db").read_bytes()
    assert token.encode() not in database
    store = open_store(load_settings(env=env).database_url)
    try:
        verified = ApiTokens(store, SystemClock()).verify(token)
    finally:
        store.close()
    assert verified is not None
    assert (verified.human_id, verified.roles) == ("local-admin", frozenset({"admin"}))


def test_tokens_for_other_humans_are_made_listed_and_revoked(tmp_path: Path) -> None:
    env = {"PROCTOR_HOME": str(tmp_path / "home")}
    runner.invoke(app, ["init"], env=env)
    made = runner.invoke(app, ["token", "create", "--human", "dave@acme.example",
                               "--role", "approver", "--ttl", "3600", "--json"], env=env)
    assert made.exit_code == 0, made.output
    minted = json.loads(made.stdout)
    assert minted["roles"] == ["approver"]
    listed = json.loads(runner.invoke(app, ["token", "list", "--json"], env=env).stdout)
    assert [(t["human"], t["revoked_at"]) for t in listed["tokens"]] == [
        ("local-admin", None), ("dave@acme.example", None)]
    assert minted["token"] not in json.dumps(listed)
    revoked = runner.invoke(app, ["token", "revoke", minted["id"], "--json"], env=env)
    assert json.loads(revoked.stdout)["revoked_at"] is not None

    store = open_store(load_settings(env=env).database_url)
    try:
        assert ApiTokens(store, SystemClock()).verify(minted["token"]) is None
    finally:
        store.close()


def test_bad_token_requests_fail_in_one_line(tmp_path: Path) -> None:
    env = {"PROCTOR_HOME": str(tmp_path / "home")}
    runner.invoke(app, ["init"], env=env)
    cases = [
        (["token", "create", "--human", "dave@acme.example", "--role", "root"], "`root`"),
        (["token", "create", "--human", "spiffe://acme.example/agent/coder", "--role",
          "admin"], "only humans"),
        (["token", "revoke", "tok_missing"], "does not exist"),
    ]
    for args, fragment in cases:
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ")
        assert fragment in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

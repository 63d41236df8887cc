"""Who a CLI command acts as: `--by`, else PROCTOR_OPERATOR, else the login name."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from proctor.cli.operator import os_user, resolve_operator
from proctor.config import load_settings
from proctor.errors import ConfigError, IdentityError


def test_by_wins_then_the_configured_operator_then_the_account() -> None:
    assert resolve_operator("erin", "pat", "root").id == "erin"
    assert resolve_operator(None, "pat", "root").id == "pat"
    assert resolve_operator(None, None, "root").id == "root"
    assert {resolve_operator(by, "pat", "root").os_user for by in ("erin", None)} == {"root"}


@pytest.mark.parametrize(("by", "configured", "account", "message"), [
    ("spiffe://acme.example/agent/coder", None, "root", "names an agent"),
    (None, "SPIFFE://acme.example/agent/coder", "root", "names an agent"),
    ("", "pat", "root", "not a human id"),
    ("erin\n", None, "root", "U\\+000A"),
    (None, None, None, "give `--by NAME` or set PROCTOR_OPERATOR"),
])
def test_an_operator_that_cannot_name_a_human_is_refused(
    by: str | None, configured: str | None, account: str | None, message: str,
) -> None:
    with pytest.raises(IdentityError, match=message):
        resolve_operator(by, configured, account)


def test_the_configured_operator_comes_from_the_environment_only(tmp_path: Path) -> None:
    env = {"PROCTOR_HOME": str(tmp_path), "PROCTOR_OPERATOR": "pat@acme.example"}
    assert load_settings(env).operator == "pat@acme.example"
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).operator is None
    (tmp_path / "proctor.toml").write_text('operator = "everyone@acme.example"\n')
    with pytest.raises(ConfigError, match="unknown key `operator`"):
        load_settings({"PROCTOR_HOME": str(tmp_path)})


def test_the_account_is_looked_up_by_user_id_not_taken_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    assert os_user() == pwd.getpwuid(os.getuid()).pw_name
    known = {entry.pw_uid for entry in pwd.getpwall()}
    nameless = next(uid for uid in range(60_001, 65_000) if uid not in known)
    assert os_user(nameless) == f"uid {nameless}"

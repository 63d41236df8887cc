"""A grant is for one audience, the deployment's own (setting `grant_audience`): a grant
whose `aud` names others as well is refused, and a deployment refuses a grant made for
another deployment's audience even when it holds the same keys and the grant's rows (a
database restored from the other's backup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt

from proctor.config import load_settings
from proctor.errors import ConfigError, GrantError
from proctor.grants import GrantClaims, GrantScope

from .conftest import CODER, ISSUER, Setup


def _signed(setup: Setup, aud: Any) -> str:
    now = int(setup.clock.now().timestamp())
    claims = GrantClaims(
        grant_id="grant_1", agent_id=CODER, task_id="task_1", issuer=ISSUER,
        audience="proctor", issued_at=now, not_before=now, expires_at=now + 300,
        scope=GrantScope.from_json({"tools": [{"tool": "git/*"}]}), key_thumbprint="jkt",
        ancestors=(), actor_chain=()).as_claims()
    key = setup.keyring.current()
    return jwt.encode({"alg": "ES256", "kid": key.kid}, {**claims, "aud": aud}, key.key)


def _refusal(setup: Setup, token: str) -> GrantError:
    with pytest.raises(GrantError) as caught:
        setup.codec.decode(token, now=setup.clock.now())
    return caught.value


def test_a_grant_naming_other_audiences_as_well_is_refused(setup: Setup) -> None:
    refused = _refusal(setup, _signed(setup, ["proctor", "gateway-b"]))
    assert (refused.code, refused.message) == (
        "grant_wrong_audience", "grant names 2 audiences; a grant is for one alone")
    refused = _refusal(setup, _signed(setup, ["gateway-b", "proctor", "proctor"]))
    assert refused.code == "grant_wrong_audience"


def test_a_list_naming_this_audience_alone_is_this_audience(setup: Setup) -> None:
    claims = setup.codec.decode(_signed(setup, ["proctor"]), now=setup.clock.now())
    assert claims.audience == "proctor"


@pytest.mark.parametrize("aud", [[], [1], {"proctor": True}, None, 7])
def test_an_audience_that_is_no_string_is_a_malformed_grant(setup: Setup, aud: Any) -> None:
    assert _refusal(setup, _signed(setup, aud)).code == "grant_malformed"


def test_the_grant_audience_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "proctor.toml").write_text('grant_audience = "proctor-eu-prod"\n')
    env = {"PROCTOR_HOME": str(tmp_path)}
    assert load_settings(env).grant_audience == "proctor-eu-prod"
    assert load_settings({**env, "PROCTOR_GRANT_AUDIENCE": "spiffe://acme.example/gw"}
                         ).grant_audience == "spiffe://acme.example/gw"
    assert load_settings({"PROCTOR_HOME": str(tmp_path / "none")}).grant_audience == "proctor"


@pytest.mark.parametrize("value", [" proctor", "a\nb", "x" * 257])
def test_a_grant_audience_that_cannot_be_matched_is_refused_at_start(
        tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="grant audience"):
        load_settings({"PROCTOR_HOME": str(tmp_path), "PROCTOR_GRANT_AUDIENCE": value})

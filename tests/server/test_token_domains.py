"""With human issuers that declare the email domains of their people (``id_domains``),
``proctor token create --human`` makes API tokens for those people only, and a
``server.toml`` whose human issuers could name one person twice is refused when it is
read, not when the first sign-in builds the verifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.errors import ConfigError
from proctor.server.config import load_server_config

runner = CliRunner()


def _server_toml(home: Path, *domains: list[str] | None) -> None:
    """``server.toml`` with one human issuer per entry of ``domains`` (None: no
    ``id_domains``), each with a key file of its own made now."""
    tables = []
    for n, names in enumerate(domains):
        key = RSAKey.generate_key(2048)
        (home / f"idp{n}.jwks.json").write_text(json.dumps(
            {"keys": [{**key.as_dict(private=False), "kid": f"k{n}", "use": "sig"}]}))
        tables.append(f'[[oidc_issuers]]\nissuer = "https://idp{n}.example"\n'
                      f'audience = "proctor-api"\njwks_file = "idp{n}.jwks.json"\n'
                      'subject_claim = "email"\n'
                      + (f"id_domains = {json.dumps(names)}\n" if names is not None else ""))
    (home / "server.toml").write_text("\n".join(tables))


def test_an_api_token_names_a_person_of_the_issuers_domains(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"PROCTOR_HOME": str(home)}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    _server_toml(home, ["acme.example"], ["partner.example"])
    for human in ("erin@evil.example", "erin", "acme.example", "erin@sub.acme.example"):
        made = runner.invoke(app, ["token", "create", "--human", human, "--role", "approver"],
                             env=env)
        assert made.exit_code == 1, (human, made.output)
        assert made.stderr.startswith("error: ") and "id_domains" in made.stderr
        assert len(made.stderr.strip().splitlines()) == 1
    for human in ("dave@acme.example", "Pat@Partner.example"):
        made = runner.invoke(app, ["token", "create", "--human", human, "--role", "approver",
                                   "--json"], env=env)
        assert made.exit_code == 0, made.output
    listed = json.loads(runner.invoke(app, ["token", "list", "--json"], env=env).stdout)
    assert [t["human"] for t in listed["tokens"]] == [
        "local-admin", "dave@acme.example", "pat@partner.example"]


def test_one_issuer_without_id_domains_leaves_token_humans_free(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"PROCTOR_HOME": str(home)}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    _server_toml(home, None)
    made = runner.invoke(app, ["token", "create", "--human", "dave@anywhere.example",
                               "--role", "auditor"], env=env)
    assert made.exit_code == 0, made.output


@pytest.mark.parametrize("domains", [
    (None, None), (["acme.example"], None), (["acme.example"], ["Acme.example"])])
def test_human_issuers_that_could_name_one_person_are_refused_when_read(
        tmp_path: Path, domains: tuple[list[str] | None, ...]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _server_toml(home, *domains)
    with pytest.raises(ConfigError) as refused:
        load_server_config(home, env={})
    assert "id_domains" in refused.value.message
    env = {"PROCTOR_HOME": str(home)}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    made = runner.invoke(app, ["token", "create", "--human", "dave@acme.example",
                               "--role", "auditor"], env=env)
    assert made.exit_code == 1 and "id_domains" in made.stderr

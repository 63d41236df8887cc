"""server.toml: defaults without a file, every key read, clear errors for bad ones."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

from proctor.errors import ConfigError
from proctor.server import ServerConfig, load_server_config
from proctor.server.config import check_listen

EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 (what proctor must refuse to listen on unconfigured)


def test_no_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_server_config(tmp_path, env={}) == ServerConfig()


def test_every_key_is_read(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048)
    (tmp_path / "login.jwks.json").write_text(json.dumps(
        {"keys": [{**key.as_dict(private=False), "kid": "k1"}]}))
    (tmp_path / "server.toml").write_text('''
public_url = "https://proctor.acme.example/"
max_body_bytes = 65536
rate_per_second = 5.5
rate_burst = 20
sweep_seconds = 10
sync_seconds = 2
threads = 8

[[oidc_issuers]]
issuer = "https://login.acme.example"
audience = "proctor"
jwks_file = "login.jwks.json"
subject_claim = "email"
role_claim = "groups"
roles = { admin = "proctor-admins" }
''')
    config = load_server_config(tmp_path, env={})
    assert (config.public_url, config.max_body_bytes, config.rate_per_second,
            config.rate_burst, config.sweep_seconds, config.sync_seconds, config.threads) == (
        "https://proctor.acme.example", 65536, 5.5, 20, 10.0, 2.0, 8)
    (issuer,) = config.oidc_issuers
    assert (issuer.issuer, issuer.subject_claim, dict(issuer.roles)) == (
        "https://login.acme.example", "email", {"admin": "proctor-admins"})
    assert issuer.roles_in({"groups": ["proctor-admins", "staff"]}) == {"admin"}
    assert issuer.roles_in({"groups": "staff proctor-admins"}) == {"admin"}


def _issuer(key: str, value: str) -> str:
    """An ``[[oidc_issuers]]`` table with ``key`` set to the TOML ``value``."""
    keys = {"issuer": "'https://a'", "audience": "'p'", "jwks_url": "'https://a/k'",
            key: value}
    return "[[oidc_issuers]]\n" + "\n".join(f"{k} = {v}" for k, v in keys.items())


@pytest.mark.parametrize(("text", "fragment"), [
    ("colour = 1", "unknown key `colour`"),
    ("max_body_bytes = 10", "max_body_bytes"),
    ("rate_burst = 0", "rate_burst"),
    ("threads = 0", "threads"),
    ('public_url = "ftp://x"', "public_url"),
    ("max_body_bytes = [1]", "`max_body_bytes` must be a whole number"),
    # int() of an infinity raised OverflowError: a traceback from `proctor serve`
    ("rate_burst = inf", "`rate_burst` must be a whole number"),
    ("threads = 1e400", "`threads` must be a whole number"),
    # float() of NaN passed every range check: the rate limit was off, the sweep failed
    ("rate_per_second = nan", "`rate_per_second` must be a finite number"),
    ("sweep_seconds = nan", "`sweep_seconds` must be a finite number"),
    ("sync_seconds = inf", "`sync_seconds` must be a finite number"),
    # read as another type by int() and str(): 1 thread, a string of digits, a true
    ("threads = 1.9", "`threads` must be a whole number"),
    ('max_body_bytes = "4096"', "`max_body_bytes` must be a whole number"),
    ("trust_host_header = true", "`trust_host_header` must be a string"),
    ("oidc_issuers = 5", "`oidc_issuers` must be tables"),
    ("[[oidc_issuers]]\nissuer = 'https://a'\naudience = 'p'", "jwks_file, jwks_url"),
    ("[[oidc_issuers]]\nissuer = 'https://a'\naudience = 'p'\njwks_url = 'https://a/k'\n"
     "roles = { root = 'x' }", "`root` is not a role"),
    ("[[oidc_issuers]]\nissuer = 'https://a'\naudience = 'p'\njwks_url = 'https://a/k'\n"
     "algorithms = ['HS256']", "`HS256` is not"),
    ("= broken", "not valid TOML"),
    # read by str() as another thing: a claim named `True`, `5` or `['email']`, an
    # issuer `5`, a list of one-letter algorithms (review)
    *[(_issuer(key, value), f"`{key}` must be a non-empty string")
      for key, value in (("human_claim", "true"), ("human_claim", "''"),
                         ("subject_claim", "['email']"), ("role_claim", "5"),
                         ("audience", "true"), ("issuer", "5"))],
    (_issuer("algorithms", "'RS256'"), "`algorithms` must be a list of strings"),
    (_issuer("id_domains", "[5]"), "`id_domains` must be a list of strings"),
    # keys fetched in clear text are whoever answers's: any human, any role (review)
    ("[[oidc_issuers]]\nissuer = 'https://a'\naudience = 'p'\n"
     "jwks_url = 'http://login.acme.example/jwks'", "is not an https URL"),
    ("[[oidc_issuers]]\nissuer = 'https://a'\naudience = 'p'\n"
     "jwks_url = 'http://127.0.0.1.evil.example/jwks'", "is not an https URL"),
])
def test_a_bad_file_is_refused_with_what_is_wrong(tmp_path: Path, text: str,
                                                  fragment: str) -> None:
    (tmp_path / "server.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_server_config(tmp_path, env={})
    assert fragment in caught.value.message


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_server_config(tmp_path, env={"PROCTOR_SERVER_CONFIG": str(tmp_path / "nope")})


@pytest.mark.parametrize("host", [EVERY_ADDRESS, "::", "[::]", "192.168.1.20", "10.0.0.5",
                                  "proctor.internal", "::ffff:10.0.0.5", ""])
def test_serve_refuses_to_listen_beyond_loopback_without_public_url(host: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_listen(ServerConfig(), host)
    assert "needs `public_url` in server.toml" in refused.value.message
    assert "\n" not in refused.value.message
    check_listen(ServerConfig(public_url="https://proctor.acme.example"), host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1",
                                  "[::1]", "::ffff:127.0.0.1"])
def test_serve_on_loopback_needs_no_public_url(host: str) -> None:
    check_listen(ServerConfig(), host)


def test_trusting_the_host_header_must_say_why_and_is_warned_about_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "server.toml").write_text(
        'trust_host_header = "the ingress sets Host to proctor.acme.example"\n')
    config = load_server_config(tmp_path, env={})
    with caplog.at_level(logging.WARNING, logger="proctor.server.config"):
        check_listen(config, EVERY_ADDRESS)
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert "public_url is not set" in warning.getMessage()
    assert "the ingress sets Host to proctor.acme.example" in warning.getMessage()
    (tmp_path / "server.toml").write_text(
        'trust_host_header = "a proxy"\npublic_url = "https://proctor.acme.example"\n')
    with pytest.raises(ConfigError, match="not both"):
        load_server_config(tmp_path, env={})

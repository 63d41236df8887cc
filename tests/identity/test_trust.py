"""Trust bundles and OIDC issuers come from identity.toml and JWKS files beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, OctKey

from proctor.errors import ConfigError
from proctor.identity import OidcIssuer, TrustConfig, jwt_bundle_from_jwks, load_trust_config

from .factories import OidcAuthority, SvidAuthority, public_jwk


def _write_home(home: Path, svid: SvidAuthority, oidc: OidcAuthority, extra: str = "") -> None:
    (home / "bundles").mkdir(parents=True)
    x509_key = {**public_jwk(ECKey.generate_key("P-256")), "use": "x509-svid",
                "x5c": ["MIIB..."]}
    jwt_key = {**public_jwk(svid.key), "kid": svid.kid, "use": "jwt-svid"}
    (home / "bundles" / "acme.json").write_text(json.dumps(
        {"spiffe_sequence": 3, "spiffe_refresh_hint": 300, "keys": [x509_key, jwt_key]}))
    (home / "cluster.jwks.json").write_text(json.dumps(oidc.jwks()))
    (home / "identity.toml").write_text(f"""
audience = "spiffe://acme.example/proctor"
leeway_seconds = 10
{extra}
[[trust_bundles]]
trust_domain = "acme.example"
jwks_file = "bundles/acme.json"

[[oidc_issuers]]
issuer = "{oidc.issuer}"
audience = "proctor"
jwks_file = "cluster.jwks.json"
subject_template = "system:serviceaccount:agents:{{name}}"
""")


def test_the_config_file_gives_bundles_issuers_audience_and_leeway(tmp_path: Path) -> None:
    svid, oidc = SvidAuthority(), OidcAuthority()
    _write_home(tmp_path, svid, oidc)
    trust = load_trust_config(tmp_path, "acme.example", env={})
    assert trust.leeway_seconds == 10
    assert trust.audience == "spiffe://acme.example/proctor"
    # the SPIFFE bundle's X.509 authority is left out; its JWT authority is kept
    assert list(trust.bundles["acme.example"].current(refresh=False).jwt_authorities) == [
        svid.kid]
    issuer = trust.issuers[oidc.issuer]
    assert issuer.subject_for("coder") == "system:serviceaccount:agents:coder"


def test_without_a_config_file_nothing_is_trusted_and_the_audience_is_derived(
    tmp_path: Path,
) -> None:
    trust = load_trust_config(tmp_path, "acme.example", env={})
    assert (trust.bundles, trust.issuers) == ({}, {})
    assert trust.audience == "spiffe://acme.example/proctor"
    assert trust.leeway_seconds == 30


def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_trust_config(tmp_path, "acme.example",
                          env={"PROCTOR_IDENTITY_CONFIG": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize("extra", ["leeway_seconds_x = 1", "colour = 'blue'"])
def test_an_unknown_key_is_an_error(tmp_path: Path, extra: str) -> None:
    _write_home(tmp_path, SvidAuthority(), OidcAuthority(), extra)
    with pytest.raises(ConfigError):
        load_trust_config(tmp_path, "acme.example", env={})


def test_a_leeway_above_one_minute_is_refused() -> None:
    with pytest.raises(ConfigError):
        TrustConfig("acme.example", leeway_seconds=61)


def test_a_bundle_holding_a_private_or_symmetric_key_is_refused() -> None:
    private = {**ECKey.generate_key("P-256").as_dict(private=True), "kid": "k"}
    secret = {**OctKey.generate_key(256).as_dict(private=True), "kid": "k"}
    for key in (private, secret):
        with pytest.raises(ConfigError):
            jwt_bundle_from_jwks("acme.example", {"keys": [key]})


def test_a_bundle_key_without_kid_is_refused() -> None:
    with pytest.raises(ConfigError):
        jwt_bundle_from_jwks("acme.example", {"keys": [public_jwk(ECKey.generate_key("P-256"))]})


@pytest.mark.parametrize("template", ["{namespace}:{name}", "fixed", "{name}-{name}"])
def test_a_subject_template_must_hold_exactly_one_name_placeholder(template: str) -> None:
    with pytest.raises(ConfigError):
        OidcAuthority().config(template)


def test_an_issuer_may_not_allow_hmac_or_none() -> None:
    keys = OidcAuthority().config().keys
    for algorithms in (("HS256",), ("none",), ()):
        with pytest.raises(ConfigError):
            OidcIssuer("https://x", "proctor", keys, algorithms=algorithms)


@pytest.mark.parametrize("content", [None, "x" * (256 * 1024 + 1), "not json", "[]", "{}",
                                     '{"keys": ["k"]}'])
def test_an_unusable_jwks_file_is_a_config_error(tmp_path: Path, content: str | None) -> None:
    from proctor.identity.jwks import read_jwks, split_jwks

    path = tmp_path / "keys.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError):
        split_jwks(read_jwks(path), "test key set")

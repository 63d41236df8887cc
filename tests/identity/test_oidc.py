"""OIDC workload tokens from a configured issuer's JWKS, mapped to agents by subject."""

from __future__ import annotations

import warnings
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.errors import SecurityWarning
from joserfc.jwk import RSAKey

from proctor.clock import FrozenClock
from proctor.errors import ProctorError
from proctor.identity import AgentRegistry, Authenticator, OidcProof, OidcVerifier, ProofMethod

from .conftest import snapshot
from .factories import (
    ISSUER,
    OIDC_AUDIENCE,
    OidcAuthority,
    alg_none,
    claims_of,
    compact,
    hs256_with,
    manifest,
    sign,
    tamper,
)

K8S = "spiffe://acme.example/agent/k8s"
SUBJECT = "system:serviceaccount:agents:k8s"


@pytest.fixture
def k8s_agent(registry: AgentRegistry) -> str:
    registry.register(K8S, owner="carol", proof=OidcProof(), manifest=manifest())
    return K8S


def test_a_service_account_token_authenticates_the_agent_its_subject_maps_to(
    authenticator: Authenticator, oidc_authority: OidcAuthority, k8s_agent: str,
    wall_clock: FrozenClock,
) -> None:
    result = authenticator.authenticate(oidc_authority.token(SUBJECT, wall_clock.now()))
    assert result.agent.id == K8S
    assert result.identity.method is ProofMethod.OIDC
    assert (result.identity.issuer, result.identity.subject) == (ISSUER, SUBJECT)


def test_an_explicitly_registered_subject_maps_too(
    registry: AgentRegistry, authenticator: Authenticator, oidc_authority: OidcAuthority,
    wall_clock: FrozenClock,
) -> None:
    subject = "repo:acme/app:ref:refs/heads/main"
    registry.register("spiffe://acme.example/agent/ci", owner="carol",
                      proof=OidcProof(subject=subject, issuer=ISSUER), manifest=manifest())
    result = authenticator.authenticate(oidc_authority.token(subject, wall_clock.now()))
    assert result.agent.name == "ci"


def _attacks(authority: OidcAuthority, now: datetime) -> list[tuple[str, str, str]]:
    good = authority.token(SUBJECT, now)
    at = int(now.timestamp())
    other_issuer = OidcAuthority(issuer="https://evil.example")
    impostor = OidcAuthority(key=RSAKey.generate_key(2048))  # same kid, other key
    public_pem = authority.key.as_pem(private=False)
    return [
        ("forged with the issuer's kid", impostor.token(SUBJECT, now), "proof_invalid_signature"),
        ("tampered subject", tamper(good, sub="system:serviceaccount:agents:admin"),
         "proof_invalid_signature"),
        ("alg none", alg_none(good), "proof_algorithm_not_allowed"),
        ("HS256 keyed with the public key",
         hs256_with(public_pem, {"kid": authority.kid}, claims_of(good)),
         "proof_algorithm_not_allowed"),
        ("ES256 header on the RSA key",
         compact({"alg": "ES256", "kid": authority.kid}, claims_of(good), b"s" * 64),
         "proof_algorithm_not_allowed"),
        ("unknown kid", sign(authority.key, "RS256", claims_of(good), kid="rotated-away"),
         "proof_key_unknown"),
        ("another issuer", other_issuer.token(SUBJECT, now), "proof_wrong_issuer"),
        ("another audience", authority.token(SUBJECT, now, aud=["vault"]),
         "proof_wrong_audience"),
        ("proctor's audience and another service's",
         authority.token(SUBJECT, now, aud=[OIDC_AUDIENCE, "vault"]), "proof_wrong_audience"),
        ("expired", authority.token(SUBJECT, now, iat=at - 700, nbf=at - 700, exp=at - 31),
         "proof_expired"),
        ("not yet valid", authority.token(SUBJECT, now, nbf=at + 31), "proof_not_yet_valid"),
        ("unknown subject", authority.token("system:serviceaccount:agents:ghost", now),
         "agent_unknown"),
        ("subject of a namespace not registered",
         authority.token("system:serviceaccount:default:k8s", now), "agent_unknown"),
        ("no subject", authority.token(SUBJECT, now, sub=None), "proof_claims_invalid"),
        ("oversized", authority.token(SUBJECT, now, pad="x" * 9000), "proof_too_large"),
        ("key URL in the header", sign(authority.key, "RS256", claims_of(good),
                                       kid=authority.kid, jku="https://evil.example/jwks"),
         "proof_malformed"),
    ]


def test_each_bad_token_gets_its_specific_code_and_changes_nothing(
    registry: AgentRegistry, authenticator: Authenticator, oidc_authority: OidcAuthority,
    k8s_agent: str, wall_clock: FrozenClock,
) -> None:
    before = snapshot(registry)
    for name, token, code in _attacks(oidc_authority, wall_clock.now()):
        with pytest.raises(ProctorError) as caught:
            authenticator.authenticate(token)
        assert caught.value.code == code, name
    assert snapshot(registry) == before


def test_a_retired_oidc_agent_is_not_authenticated(
    registry: AgentRegistry, authenticator: Authenticator, oidc_authority: OidcAuthority,
    k8s_agent: str, wall_clock: FrozenClock,
) -> None:
    registry.retire(k8s_agent, by="carol")
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(oidc_authority.token(SUBJECT, wall_clock.now()))
    assert caught.value.code == "agent_not_active"


def test_an_own_key_style_proof_for_an_oidc_agent_is_refused(
    authenticator: Authenticator, oidc_authority: OidcAuthority, k8s_agent: str,
    wall_clock: FrozenClock,
) -> None:
    token = oidc_authority.token(SUBJECT, wall_clock.now(), iss=k8s_agent, sub=k8s_agent)
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(token)
    assert caught.value.code == "proof_wrong_issuer"


def test_a_token_signed_with_an_rsa_key_under_2048_bits_is_refused_as_jwt_svids_are(
    registry: AgentRegistry, k8s_agent: str, wall_clock: FrozenClock,
) -> None:
    with warnings.catch_warnings():  # joserfc warns when it imports the weak key
        warnings.simplefilter("ignore", SecurityWarning)
        weak = OidcAuthority(key=RSAKey.import_key(rsa.generate_private_key(65537, 1024)))  # noqa: S505
        issuer = weak.config()
        token = weak.token(SUBJECT, wall_clock.now())
    verifier = OidcVerifier({issuer.issuer: issuer}, registry)
    with pytest.raises(ProctorError) as caught:
        verifier.verify(token, now=wall_clock.now())
    assert caught.value.code == "proof_algorithm_not_allowed"

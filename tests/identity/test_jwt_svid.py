"""JWT-SVIDs, signed by a generated SPIFFE authority and checked against its bundle."""

from __future__ import annotations

from datetime import datetime

import pytest
from joserfc.jwk import ECKey, RSAKey

from proctor.clock import FrozenClock
from proctor.errors import ProctorError
from proctor.identity import (
    AgentRegistry,
    Authenticator,
    JwtSvidProof,
    JwtSvidVerifier,
    OwnKeyProof,
    ProofMethod,
)
from proctor.identity.jwks import Fixed

from .conftest import snapshot
from .factories import (
    AUDIENCE,
    BUILDER,
    CODER,
    SvidAuthority,
    alg_none,
    claims_of,
    hs256_with,
    manifest,
    public_jwk,
    sign,
    tamper,
)


@pytest.fixture
def builder(registry: AgentRegistry) -> str:
    registry.register(BUILDER, owner="bob", proof=JwtSvidProof(), manifest=manifest())
    return BUILDER


def test_a_jwt_svid_from_the_trust_bundle_authenticates_the_agent(
    authenticator: Authenticator, svid_authority: SvidAuthority, builder: str,
    wall_clock: FrozenClock,
) -> None:
    result = authenticator.authenticate(svid_authority.svid(builder, wall_clock.now()))
    assert result.agent.id == BUILDER
    assert result.identity.method is ProofMethod.JWT_SVID
    assert result.identity.issuer == "acme.example"
    assert result.identity.key_thumbprint is None


def test_an_audience_list_naming_another_service_is_refused(
    authenticator: Authenticator, svid_authority: SvidAuthority, builder: str,
    wall_clock: FrozenClock,
) -> None:
    # every audience a bearer SVID names receives it: the other service could present it
    # here as the agent (report a manifest, end its tasks, revoke its grants)
    token = svid_authority.svid(builder, wall_clock.now(), audience=["other", AUDIENCE])
    with pytest.raises(ProctorError) as refused:
        authenticator.authenticate(token)
    assert refused.value.code == "proof_wrong_audience"
    alone = svid_authority.svid(builder, wall_clock.now(), audience=[AUDIENCE])
    assert authenticator.authenticate(alone).agent.id == BUILDER


def test_an_rsa_authority_works_too(wall_clock: FrozenClock) -> None:
    authority = SvidAuthority(key=RSAKey.generate_key(2048))
    verifier = JwtSvidVerifier({"acme.example": Fixed(authority.bundle())}, audience=AUDIENCE)
    identity = verifier.verify(authority.svid(BUILDER, wall_clock.now()), now=wall_clock.now())
    assert identity.agent_id == BUILDER


def _attacks(authority: SvidAuthority, now: datetime) -> list[tuple[str, str, str]]:
    good = authority.svid(BUILDER, now)
    at = int(now.timestamp())
    impostor = SvidAuthority(key=ECKey.generate_key("P-256"))  # same kid, other key
    stranger = SvidAuthority(kid="not-in-bundle")
    rsa_signed = sign(RSAKey.generate_key(2048), "RS256", claims_of(good), kid=authority.kid)
    return [
        ("signed by a key posing under the bundle's kid", impostor.svid(BUILDER, now),
         "proof_invalid_signature"),
        ("tampered subject", tamper(good, aud=[AUDIENCE, "more"]), "proof_invalid_signature"),
        ("kid not in the bundle", stranger.svid(BUILDER, now), "proof_key_unknown"),
        ("no kid", sign(authority.key, "ES256", claims_of(good)), "proof_key_unknown"),
        ("alg none", alg_none(good), "proof_algorithm_not_allowed"),
        ("HS256 keyed with the bundle key",
         hs256_with(authority.key.as_pem(private=False), {"kid": authority.kid},
                    claims_of(good)), "proof_algorithm_not_allowed"),
        ("RS256 header on the EC authority", rsa_signed, "proof_algorithm_not_allowed"),
        ("another audience", authority.svid(BUILDER, now, audience="spiffe://x/y"),
         "proof_wrong_audience"),
        ("no audience", authority.svid(BUILDER, now, audience=None), "proof_wrong_audience"),
        ("expired by the system clock too", authority.svid(BUILDER, now, iat=at - 600,
                                                           exp=at - 300), "proof_expired"),
        ("not yet valid", authority.svid(BUILDER, now, nbf=at + 600), "proof_not_yet_valid"),
        ("issued in the future", authority.svid(BUILDER, now, iat=at + 600),
         "proof_not_yet_valid"),
        ("no exp", authority.svid(BUILDER, now, exp=None), "proof_claims_invalid"),
        ("unknown agent", authority.svid("spiffe://acme.example/agent/ghost", now),
         "agent_unknown"),
        ("malformed SPIFFE ID", authority.svid("spiffe://acme.example/workload/x", now),
         "agent_id_invalid"),
        ("oversized", authority.svid(BUILDER, now, pad="x" * 9000), "proof_too_large"),
    ]


def test_each_bad_jwt_svid_gets_its_specific_code_and_changes_nothing(
    registry: AgentRegistry, authenticator: Authenticator, svid_authority: SvidAuthority,
    builder: str, wall_clock: FrozenClock,
) -> None:
    before = snapshot(registry)
    for name, token, code in _attacks(svid_authority, wall_clock.now()):
        with pytest.raises(ProctorError) as caught:
            authenticator.authenticate(token)
        assert caught.value.code == code, name
    assert snapshot(registry) == before


def test_a_jwt_svid_of_a_trust_domain_without_a_bundle_is_from_the_wrong_issuer(
    svid_authority: SvidAuthority, wall_clock: FrozenClock,
) -> None:
    verifier = JwtSvidVerifier({"acme.example": Fixed(svid_authority.bundle())}, audience=AUDIENCE)
    other = SvidAuthority(trust_domain="evil.example")
    token = other.svid("spiffe://evil.example/agent/builder", wall_clock.now())
    with pytest.raises(ProctorError) as caught:
        verifier.verify(token, now=wall_clock.now())
    assert caught.value.code == "proof_wrong_issuer"


def test_expiry_follows_the_injected_clock_even_when_the_system_clock_disagrees(
    authenticator: Authenticator, svid_authority: SvidAuthority, builder: str,
    wall_clock: FrozenClock,
) -> None:
    token = svid_authority.svid(builder, wall_clock.now(), ttl=300)
    wall_clock.advance(seconds=300 + 29)
    assert authenticator.authenticate(token).agent.id == BUILDER
    wall_clock.advance(seconds=1)  # the system clock still says the token is fresh
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(token)
    assert caught.value.code == "proof_expired"


def test_a_jwt_svid_for_an_agent_registered_by_its_own_key_is_refused(
    registry: AgentRegistry, authenticator: Authenticator, svid_authority: SvidAuthority,
    wall_clock: FrozenClock,
) -> None:
    registry.register(CODER, owner="alice", manifest=manifest(),
                      proof=OwnKeyProof(public_jwk(ECKey.generate_key("P-256"))))
    # checked against the agent's own key: the SPIRE kid is not its thumbprint
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(svid_authority.svid(CODER, wall_clock.now()))
    assert caught.value.code == "proof_key_unknown"
    # and without a kid, the signature does not verify with the agent's key
    token = sign(svid_authority.key, "ES256", claims_of(svid_authority.svid(CODER,
                                                                           wall_clock.now())))
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(token)
    assert caught.value.code == "proof_invalid_signature"


def test_a_suspended_svid_agent_is_not_authenticated(
    registry: AgentRegistry, authenticator: Authenticator, svid_authority: SvidAuthority,
    builder: str, wall_clock: FrozenClock,
) -> None:
    registry.suspend(builder, by="erin")
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(svid_authority.svid(builder, wall_clock.now()))
    assert caught.value.code == "agent_not_active"

"""Own-key proofs: a JWS signed by the agent's registered Ed25519 or P-256 key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from joserfc.jwk import ECKey, OKPKey

from proctor.clock import FrozenClock
from proctor.errors import ProctorError
from proctor.identity import (
    AgentRegistry,
    Authenticator,
    OwnKeyProof,
    OwnKeyVerifier,
    ProofMethod,
)

from .conftest import snapshot
from .factories import (
    AUDIENCE,
    BUILDER,
    CODER,
    REQUEST,
    alg_none,
    claims_of,
    compact,
    hs256_with,
    manifest,
    own_key_proof,
    proof_claims,
    public_jwk,
    sign,
    tamper,
)


@pytest.fixture
def coder_key(registry: AgentRegistry, p256_key: ECKey) -> ECKey:
    registry.register(CODER, owner="alice", proof=OwnKeyProof(public_jwk(p256_key)),
                      manifest=manifest())
    return p256_key


def test_a_p256_proof_authenticates_the_agent_with_its_key_thumbprint(
    authenticator: Authenticator, coder_key: ECKey, wall_clock: FrozenClock,
) -> None:
    result = authenticator.authenticate(own_key_proof(coder_key, CODER, wall_clock.now()),
                                        request=REQUEST)
    assert result.agent.id == CODER
    assert result.identity.method is ProofMethod.OWN_KEY
    assert result.identity.key_thumbprint == coder_key.thumbprint()
    assert result.identity.expires_at.timestamp() == wall_clock.now().timestamp() + 120


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_an_ed25519_proof_authenticates_under_either_algorithm_name(
    registry: AgentRegistry, authenticator: Authenticator, ed25519_key: OKPKey,
    wall_clock: FrozenClock, alg: str,
) -> None:
    registry.register(BUILDER, owner="bob", proof=OwnKeyProof(public_jwk(ed25519_key)),
                      manifest=manifest())
    token = own_key_proof(ed25519_key, BUILDER, wall_clock.now(), alg=alg) if alg == "Ed25519" \
        else _eddsa_proof(ed25519_key, wall_clock)
    assert authenticator.authenticate(token, request=REQUEST).agent.id == BUILDER


def _eddsa_proof(key: OKPKey, clock: FrozenClock) -> str:
    import warnings

    from joserfc.errors import SecurityWarning

    with warnings.catch_warnings():  # joserfc warns that "EdDSA" is deprecated
        warnings.simplefilter("ignore", SecurityWarning)
        return sign(key, "EdDSA", proof_claims(BUILDER, clock.now()))


def _attacks(key: ECKey, now: datetime) -> list[tuple[str, str, str]]:
    good = own_key_proof(key, CODER, now)
    other = ECKey.generate_key("P-256")
    public_bytes = key.as_pem(private=False)
    at = int(now.timestamp())
    return [
        ("signed by another key", own_key_proof(other, CODER, now), "proof_invalid_signature"),
        ("tampered claims", tamper(good, exp=at + 100_000), "proof_invalid_signature"),
        ("alg none", alg_none(good), "proof_algorithm_not_allowed"),
        ("HS256 keyed with the public key",
         hs256_with(public_bytes, {"typ": "JWT"}, claims_of(good)),
         "proof_algorithm_not_allowed"),
        ("EdDSA header on a P-256 key",
         compact({"alg": "EdDSA"}, claims_of(good), b"x" * 64), "proof_algorithm_not_allowed"),
        ("expired", own_key_proof(key, CODER, now, iat=at - 200, exp=at - 31), "proof_expired"),
        ("not yet valid", own_key_proof(key, CODER, now, nbf=at + 31), "proof_not_yet_valid"),
        ("issued in the future", own_key_proof(key, CODER, now, iat=at + 31, exp=at + 60),
         "proof_not_yet_valid"),
        ("lives too long", own_key_proof(key, CODER, now, exp=at + 301),
         "proof_claims_invalid"),
        ("no exp", own_key_proof(key, CODER, now, exp=None), "proof_claims_invalid"),
        ("no iat", own_key_proof(key, CODER, now, iat=None), "proof_claims_invalid"),
        ("exp not a number", own_key_proof(key, CODER, now, exp="soon"), "proof_claims_invalid"),
        ("another audience", own_key_proof(key, CODER, now, aud="spiffe://other/proctor"),
         "proof_wrong_audience"),
        # every audience a proof names receives it, and could present it here as the agent
        ("another audience beside proctor's", own_key_proof(
            key, CODER, now, aud=[AUDIENCE, "https://tools.example"]), "proof_wrong_audience"),
        ("issued by someone else", own_key_proof(key, CODER, now, iss=BUILDER),
         "proof_wrong_issuer"),
        ("issued by a URL", own_key_proof(key, CODER, now, iss="https://idp.example"),
         "proof_wrong_issuer"),
        ("unknown agent", own_key_proof(key, BUILDER, now), "agent_unknown"),
        ("malformed SPIFFE ID", own_key_proof(key, "spiffe://acme.example/agent/../x", now),
         "agent_id_invalid"),
        ("no subject", own_key_proof(key, CODER, now, sub=None), "proof_claims_invalid"),
        ("oversized", own_key_proof(key, CODER, now, pad="x" * 8192), "proof_too_large"),
        ("kid of another key", sign(key, "ES256", proof_claims(CODER, now), kid="other"),
         "proof_key_unknown"),
        ("key carried in the header", sign(key, "ES256", proof_claims(CODER, now),
                                           jwk=public_jwk(other)), "proof_malformed"),
        ("not a JWS", "not.a.jws", "proof_malformed"),
        ("two parts", good.rsplit(".", 1)[0], "proof_malformed"),
    ]


def test_each_bad_proof_gets_its_specific_code_and_changes_nothing(
    registry: AgentRegistry, authenticator: Authenticator, coder_key: ECKey,
    wall_clock: FrozenClock,
) -> None:
    before = snapshot(registry)
    for name, token, code in _attacks(coder_key, wall_clock.now()):
        with pytest.raises(ProctorError) as caught:
            authenticator.authenticate(token, request=REQUEST)
        assert caught.value.code == code, name
    assert snapshot(registry) == before


def test_clock_skew_within_the_leeway_is_accepted_and_beyond_it_is_not(
    registry: AgentRegistry, coder_key: ECKey, wall_clock: FrozenClock,
) -> None:
    # the verifier's own time checks; a proof bound to a request is taken for at most a
    # minute besides (tests/identity/test_request_proofs.py)
    verifier = OwnKeyVerifier(registry, audience=AUDIENCE)
    token = own_key_proof(coder_key, CODER, wall_clock.now())
    wall_clock.advance(seconds=120 + 30 - 1)
    assert verifier.verify(token, now=wall_clock.now()).agent_id == CODER
    wall_clock.advance(seconds=1)
    with pytest.raises(ProctorError) as caught:
        verifier.verify(token, now=wall_clock.now())
    assert caught.value.code == "proof_expired"


def test_the_verifier_uses_the_injected_clock_not_the_system_clock(
    registry: AgentRegistry, coder_key: ECKey,
) -> None:
    far_future = datetime(2040, 1, 1, tzinfo=UTC)
    verifier = OwnKeyVerifier(registry, audience=AUDIENCE)
    token = own_key_proof(coder_key, CODER, far_future)
    assert verifier.verify(token, now=far_future).agent_id == CODER


def test_suspended_and_retired_agents_are_not_authenticated(
    registry: AgentRegistry, authenticator: Authenticator, coder_key: ECKey,
    wall_clock: FrozenClock,
) -> None:
    changes: list[Callable[[], object]] = [lambda: registry.suspend(CODER, by="erin"),
                                           lambda: registry.retire(CODER, by="erin")]
    for change in changes:
        change()
        with pytest.raises(ProctorError) as caught:
            authenticator.authenticate(own_key_proof(coder_key, CODER, wall_clock.now()),
                                       request=REQUEST)
        assert caught.value.code == "agent_not_active"


def test_a_drifted_agent_still_authenticates_so_that_policy_can_see_the_drift(
    registry: AgentRegistry, authenticator: Authenticator, coder_key: ECKey,
    wall_clock: FrozenClock,
) -> None:
    registry.present_manifest(CODER, manifest(model_id="other"))
    result = authenticator.authenticate(own_key_proof(coder_key, CODER, wall_clock.now()),
                                        request=REQUEST)
    assert result.agent.trust_state.value == "drifted"

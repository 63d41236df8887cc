"""Own-key proofs bound to their request: method, URL, body, a minute, one use each.

The claim of the one use (the store) is the API's: tests/server/test_identity_replay.py.
"""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey

from proctor.clock import FrozenClock
from proctor.errors import ProctorError
from proctor.identity import AgentRegistry, Authenticator, JwtSvidProof, OwnKeyProof
from proctor.identity.request_proofs import PROOF_WINDOW_SECONDS, BoundRequest
from proctor.jose.dpop import PROOF_WINDOW_SECONDS as POSSESSION_WINDOW_SECONDS

from .conftest import snapshot
from .factories import BUILDER, CODER, REQUEST, SvidAuthority, manifest, own_key_proof, public_jwk


@pytest.fixture
def coder_key(registry: AgentRegistry, p256_key: ECKey) -> ECKey:
    registry.register(CODER, owner="alice", proof=OwnKeyProof(public_jwk(p256_key)),
                      manifest=manifest())
    return p256_key


def _code(authenticator: Authenticator, token: str, request: BoundRequest | None) -> str:
    with pytest.raises(ProctorError) as caught:
        authenticator.authenticate(token, request=request)
    return caught.value.code


def test_a_proof_for_its_request_comes_back_with_its_one_use(
    registry: AgentRegistry, authenticator: Authenticator, coder_key: ECKey,
    wall_clock: FrozenClock,
) -> None:
    token = own_key_proof(coder_key, CODER, wall_clock.now(), jti="the-same-jti")
    use = authenticator.authenticate(token, request=REQUEST).identity.use
    assert use is not None
    assert (use.issued_at, use.key_thumbprint) == (int(wall_clock.now().timestamp()),
                                                   coder_key.thumbprint())
    assert len(use.nonce) == 43 and "the-same-jti" not in use.nonce
    # checking changes nothing: taking the use (once) is the caller's
    assert authenticator.authenticate(token, request=REQUEST).identity.use == use
    # the jti is kept under the key that signed it: another agent's same jti is another
    builder_key = ECKey.generate_key("P-256")
    registry.register(BUILDER, owner="bob", proof=OwnKeyProof(public_jwk(builder_key)),
                      manifest=manifest())
    other = authenticator.authenticate(own_key_proof(
        builder_key, BUILDER, wall_clock.now(), jti="the-same-jti"), request=REQUEST)
    assert other.identity.use is not None and other.identity.use.nonce != use.nonce


def test_a_proof_made_for_one_request_is_refused_for_any_other(
    registry: AgentRegistry, authenticator: Authenticator, coder_key: ECKey,
    wall_clock: FrozenClock,
) -> None:
    token = own_key_proof(coder_key, CODER, wall_clock.now(), request=REQUEST)
    before = snapshot(registry)
    others = {
        "another method": BoundRequest("GET", REQUEST.url, REQUEST.body),
        "another path": BoundRequest("POST", "https://proctor.acme.example/v1/tasks/t-1/end",
                                     REQUEST.body),
        "another host": BoundRequest("POST", "https://other.acme.example/v1/tasks",
                                     REQUEST.body),
        "another scheme": BoundRequest("POST", "http://proctor.acme.example/v1/tasks",
                                       REQUEST.body),
        "another body": BoundRequest("POST", REQUEST.url, b'{"purpose":"q"}'),
        "no body": BoundRequest("POST", REQUEST.url, b""),
        "a body not known here": BoundRequest("POST", REQUEST.url, None),
        "no request": None,
    }
    assert {name: _code(authenticator, token, request) for name, request in others.items()} \
        == dict.fromkeys(others, "proof_wrong_request")
    assert snapshot(registry) == before


def test_the_url_is_compared_as_rfc_9449_says_without_query_case_or_default_port(
    authenticator: Authenticator, coder_key: ECKey, wall_clock: FrozenClock,
) -> None:
    token = own_key_proof(coder_key, CODER, wall_clock.now(), request=REQUEST)
    for url in ("HTTPS://Proctor.Acme.Example:443/v1/tasks",
                "https://proctor.acme.example/v1/tasks?page=2"):
        request = BoundRequest("POST", url, REQUEST.body)
        assert authenticator.authenticate(token, request=request).agent.id == CODER


def test_a_proof_for_an_empty_body_may_leave_out_its_hash(
    authenticator: Authenticator, coder_key: ECKey, wall_clock: FrozenClock,
) -> None:
    get = BoundRequest("GET", "https://proctor.acme.example/v1/whoami", b"")
    token = own_key_proof(coder_key, CODER, wall_clock.now(), request=get, bh=None)
    assert authenticator.authenticate(token, request=get).agent.id == CODER
    with_body = BoundRequest("GET", get.url, b"{}")
    assert _code(authenticator, token, with_body) == "proof_wrong_request"


def test_a_reusable_proof_of_before_is_refused_as_unbound_once_its_signature_verifies(
    authenticator: Authenticator, coder_key: ECKey, wall_clock: FrozenClock,
) -> None:
    now = wall_clock.now()
    assert _code(authenticator, own_key_proof(coder_key, CODER, now, request=None),
                 REQUEST) == "proof_unbound"
    for missing in ("htm", "htu"):
        assert _code(authenticator, own_key_proof(coder_key, CODER, now, **{missing: None}),
                     REQUEST) == "proof_unbound"
    forged = own_key_proof(ECKey.generate_key("P-256"), CODER, now, request=None)
    assert _code(authenticator, forged, REQUEST) == "proof_invalid_signature"


def test_a_proof_is_taken_within_a_minute_of_its_time_and_never_after(
    authenticator: Authenticator, coder_key: ECKey, wall_clock: FrozenClock,
) -> None:
    assert PROOF_WINDOW_SECONDS == POSSESSION_WINDOW_SECONDS  # the nonces' window
    token = own_key_proof(coder_key, CODER, wall_clock.now(), ttl=300)
    wall_clock.advance(seconds=PROOF_WINDOW_SECONDS)
    assert authenticator.authenticate(token, request=REQUEST).agent.id == CODER
    wall_clock.advance(seconds=1)  # still before `exp`: the window ends it
    assert _code(authenticator, token, REQUEST) == "proof_expired"
    at = int(wall_clock.now().timestamp())
    assert _code(authenticator, own_key_proof(coder_key, CODER, wall_clock.now(),
                                              iat=at + 0.5), REQUEST) == "proof_claims_invalid"


@pytest.mark.parametrize("jti", [None, "short", "x" * 129, 12345678])
def test_a_proof_without_a_proper_jti_is_refused(
    authenticator: Authenticator, coder_key: ECKey, wall_clock: FrozenClock, jti: object,
) -> None:
    token = own_key_proof(coder_key, CODER, wall_clock.now(), jti=jti)
    assert _code(authenticator, token, REQUEST) == "proof_claims_invalid"


def test_workload_tokens_stay_bearer_credentials_by_their_issuers_design(
    registry: AgentRegistry, authenticator: Authenticator, svid_authority: SvidAuthority,
    wall_clock: FrozenClock,
) -> None:
    registry.register(BUILDER, owner="bob", proof=JwtSvidProof(), manifest=manifest())
    svid = svid_authority.svid(BUILDER, wall_clock.now())
    for request in (None, REQUEST):
        found = authenticator.authenticate(svid, request=request)
        assert (found.agent.id, found.identity.use) == (BUILDER, None)

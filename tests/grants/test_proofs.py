"""Proofs of possession: right key, right call, fresh, once."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proctor.errors import GrantError
from proctor.grants import jwk_thumbprint, make_proof, verify_proof
from proctor.grants.proofs import PrivateKey, public_jwk

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
TOKEN = "header.payload.signature"


def _check(key: PrivateKey, proof: str, *, token: str = TOKEN, method: str = "tools/call",
           target: str = "mcp://git/git_log", now: datetime = NOW) -> str:
    try:
        verify_proof(proof, token=token, key_thumbprint=jwk_thumbprint(public_jwk(key)),
                     method=method, target=target, now=now)
    except GrantError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()),
                                 ed25519.Ed25519PrivateKey.generate()],
                         ids=["p256", "ed25519"])
def test_a_proof_by_the_bound_key_for_this_call_is_accepted(key: PrivateKey) -> None:
    proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    assert _check(key, proof) == "ok"


def test_a_proof_signed_by_another_agents_key_is_refused() -> None:
    mine = ec.generate_private_key(ec.SECP256R1())
    theirs = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(theirs, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    assert _check(mine, proof) == "proof_wrong_key"


def test_a_proof_for_another_call_or_grant_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    assert _check(key, proof, target="mcp://git/git_reset") == "proof_wrong_target"
    assert _check(key, proof, method="resources/read") == "proof_wrong_target"
    assert _check(key, proof, token="other.grant.token") == "proof_wrong_target"


def test_a_stale_or_future_proof_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    assert _check(key, proof, now=datetime(2026, 11, 30, 10, 1, 0, tzinfo=UTC)) == "ok"
    assert _check(key, proof, now=datetime(2026, 11, 30, 10, 1, 1, tzinfo=UTC)) == "proof_stale"
    assert _check(key, proof, now=datetime(2026, 11, 30, 9, 58, 59, tzinfo=UTC)) == "proof_stale"


def test_a_proof_with_a_forged_signature_or_swapped_algorithm_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    h, p, s = proof.split(".")
    flipped = s[:-2] + ("AA" if s[-2:] != "AA" else "BB")
    assert _check(key, f"{h}.{p}.{flipped}") == "proof_invalid"
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    header["alg"] = "HS256"
    h2 = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    assert _check(key, f"{h2}.{p}.{s}") == "proof_invalid"


@pytest.mark.parametrize("proof", ["", "x", "a.b.c", "a" * 5000])
def test_a_missing_or_malformed_proof_is_refused(proof: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert _check(key, proof) in {"proof_missing", "proof_invalid"}


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()),
                                 ed25519.Ed25519PrivateKey.generate()],
                         ids=["p256", "ed25519"])
@pytest.mark.parametrize("extra", [{"d": "private"}, {"p": "x", "q": "y"}, {"k": "secret"}],
                         ids=["d", "rsa-primes", "symmetric"])
def test_a_proof_whose_jwk_carries_private_key_material_is_refused(
    key: PrivateKey, extra: dict[str, str],
) -> None:
    # RFC 9449 §4.3: the proof's key must not contain a private key. The signature is
    # real and by the bound key: only the disclosed secret makes it unacceptable.
    proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    h, p, _ = proof.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    header["jwk"] = {**header["jwk"], **extra}
    h2 = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    signing_input = f"{h2}.{p}".encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    s64 = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert _check(key, f"{h2}.{p}.{s64}") == "proof_key_private"

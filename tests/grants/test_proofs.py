"""Proofs of possession: right key, right call, fresh, once."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
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


def _resigned(key: ed25519.Ed25519PrivateKey, proof: str, **header: str) -> str:
    """``proof`` with its header changed, signed again by ``key``."""
    h, p, _ = proof.split(".")
    changed = {**json.loads(base64.urlsafe_b64decode(h + "==")), **header}
    h2 = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    signature = key.sign(f"{h2}.{p}".encode())
    return f"{h2}.{p}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _alg(proof: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(proof.split(".")[0] + "=="))
    return str(header["alg"])


def test_an_ed25519_proof_is_accepted_under_either_algorithm_name_and_written_as_ed25519(
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    assert _alg(proof) == "Ed25519"  # RFC 9864's name; identity proofs take both too
    assert _check(key, proof) == "ok"
    assert _check(key, _resigned(key, proof, alg="EdDSA")) == "ok"


def test_an_algorithm_name_of_another_key_type_is_refused() -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    proof = make_proof(ed_key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    for alg in ("ES256", "Ed448", "none", "HS256"):
        assert _check(ed_key, _resigned(ed_key, proof, alg=alg)) == "proof_invalid", alg
    p256 = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(p256, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
    assert _alg(proof) == "ES256"
    h, p, s = proof.split(".")
    header = {**json.loads(base64.urlsafe_b64decode(h + "==")), "alg": "Ed25519"}
    h2 = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    assert _check(p256, f"{h2}.{p}.{s}") == "proof_invalid"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("respell", [
    lambda s: s + "==",
    lambda s: s + "\n",
    lambda s: s.replace("-", "+").replace("_", "/"),
    lambda s: s[:-1] + _ALPHABET[_ALPHABET.index(s[-1]) + 1],  # an unused bit set
], ids=["padding", "newline", "standard-alphabet", "unused-bits"])
def test_a_proof_spelled_other_than_canonical_base64url_is_refused(
    respell: Callable[[str], str],
) -> None:
    # each spelling decodes to the same signature bytes with a lenient decoder
    key = ed25519.Ed25519PrivateKey.generate()  # 64-byte signature: 86 characters, 4 bits unused
    for _ in range(200):
        proof = make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
        h, p, s = proof.split(".")
        if "-" in s or "_" in s:
            break
    assert respell(s) != s
    assert _check(key, proof) == "ok"
    assert _check(key, f"{h}.{p}.{respell(s)}") == "proof_invalid"


def test_successive_proofs_carry_nonces_in_the_order_they_were_made() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    made = [make_proof(key, TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
            for _ in range(50)]
    nonces = [json.loads(base64.urlsafe_b64decode(p.split(".")[1] + "==="))["jti"]
              for p in made]
    # side by side in the store's b-tree of used proofs (nonce_key: the time, then these)
    assert nonces == sorted(nonces) and len(set(nonces)) == 50
    assert all(len(n) == 24 and _check(key, p) == "ok" for n, p in zip(nonces, made, strict=True))


def test_the_sdk_and_the_server_write_proofs_one_way_with_one_count_of_nonces() -> None:
    from proctor.client import AgentKey

    agent = AgentKey.generate()
    key = ec.generate_private_key(ec.SECP256R1())
    made = [(agent.call_proof(TOKEN, method="tools/call", target="mcp://git/git_log", now=NOW)
             if i % 2 else make_proof(key, TOKEN, method="tools/call",
                                      target="mcp://git/git_log", now=NOW)) for i in range(20)]
    payloads = [base64.urlsafe_b64decode(p.split(".")[1] + "===") for p in made]
    nonces = [json.loads(p)["jti"] for p in payloads]
    assert nonces == sorted(nonces) and len(set(nonces)) == 20  # one count, not two
    assert [p.replace(n.encode(), b"") for p, n in zip(payloads, nonces, strict=True)] == [
        payloads[0].replace(nonces[0].encode(), b"")] * 20  # the same members, written alike

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from proctor.errors import SigningKeyError
from proctor.keys import (
    LocalSigner,
    PublicKeyVerifier,
    load_or_create_signer,
    load_signer,
    signer_path,
)


def test_a_signature_verifies_only_for_the_signed_bytes() -> None:
    signer = LocalSigner.generate()
    signature = signer.sign(b"head 42")
    assert len(signature) == 64
    assert signer.verify(b"head 42", signature)
    assert not signer.verify(b"head 43", signature)
    assert not signer.verify(b"head 42", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not LocalSigner.generate().verify(b"head 42", signature)


def test_the_public_jwk_verifies_on_its_own_and_keeps_the_key_id() -> None:
    signer = LocalSigner.generate()
    jwk = signer.public_jwk()
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["kid"]) == ("EC", "P-256", "ES256",
                                                                signer.kid)
    assert "d" not in jwk
    verifier = PublicKeyVerifier.from_jwk(jwk)
    assert verifier.kid == signer.kid
    assert verifier.verify(b"x", signer.sign(b"x"))


def test_a_key_is_created_once_with_mode_0600_and_loaded_after(tmp_path: Path) -> None:
    assert load_signer(tmp_path) is None
    created = load_or_create_signer(tmp_path)
    path = signer_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_signer(tmp_path).kid == created.kid
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_signer(tmp_path)
    signer_path(tmp_path).chmod(0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        load_signer(tmp_path)


def test_a_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = signer_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(SigningKeyError, match="PEM"):
        load_signer(tmp_path)


def test_a_jwk_that_is_not_p256_is_refused() -> None:
    with pytest.raises(SigningKeyError):
        PublicKeyVerifier.from_jwk({"kty": "RSA", "n": "x", "e": "AQAB"})
    with pytest.raises(SigningKeyError):
        PublicKeyVerifier.from_jwk({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"})

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.errors import SigningKeyError
from proctor.keys import LEGACY_KEY_FILE, LocalSigner, PublicKeyVerifier, load_legacy_signer


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


def test_a_local_signer_is_its_own_source_of_keys() -> None:
    signer = LocalSigner.generate()
    assert signer.current_signer() is signer


def _legacy_file(home: Path, content: bytes, mode: int = 0o600) -> Path:
    path = home / LEGACY_KEY_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_a_legacy_key_file_is_read_when_present(tmp_path: Path) -> None:
    assert load_legacy_signer(tmp_path) is None
    signer = LocalSigner.generate()
    _legacy_file(tmp_path, signer.to_pem())
    loaded = load_legacy_signer(tmp_path)
    assert loaded is not None and loaded.kid == signer.kid


def test_a_legacy_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    _legacy_file(tmp_path, LocalSigner.generate().to_pem(), mode=0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        load_legacy_signer(tmp_path)


def test_a_legacy_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    _legacy_file(tmp_path, b"not a key")
    with pytest.raises(SigningKeyError, match="PEM"):
        load_legacy_signer(tmp_path)


def test_a_jwk_that_is_not_p256_is_refused() -> None:
    with pytest.raises(SigningKeyError):
        PublicKeyVerifier.from_jwk({"kty": "RSA", "n": "x", "e": "AQAB"})
    with pytest.raises(SigningKeyError):
        PublicKeyVerifier.from_jwk({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"})

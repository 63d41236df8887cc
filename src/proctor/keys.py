"""Signing keys: ES256 (ECDSA on P-256 with SHA-256), the only algorithm allowed.

A :class:`Signer` signs with a private key; a :class:`Verifier` checks with the
public half, which it also exports as a JWK (RFC 7517). The key id is the
JWK's RFC 7638 thumbprint, so the same key always has the same ``kid``.

Signatures are JOSE-shaped: the 64 bytes ``r || s`` (RFC 7518 §3.4), not DER.

A :class:`SignerSource` hands out the key to sign with *now*: in a deployment
the issuer keyring (:class:`proctor.grants.IssuerKeyring`), whose keys are
sealed in the store and rotated; a :class:`LocalSigner` is its own source.
Asking for one :class:`Signer` per signature keeps the key id written into a
signed payload and the key that signs it the same key, even when another node
rotates meanwhile.

:func:`load_legacy_signer` reads the per-home key file
(``$PROCTOR_HOME/keys/issuer.pem``) that earlier versions signed audit
checkpoints with, so that it can be imported into the keyring.

>>> signer = LocalSigner.generate()
>>> signer.verify(b"head", signer.sign(b"head"))
True
>>> signer.current_signer() is signer
True
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proctor.errors import SigningKeyError
from proctor.jose import load_public_jwk, public_jwk, sign, thumbprint, verifier

__all__ = [
    "ALGORITHM",
    "LEGACY_KEY_FILE",
    "LocalSigner",
    "PublicKeyVerifier",
    "Signer",
    "SignerSource",
    "Verifier",
    "load_legacy_signer",
    "verifiers_for",
]

ALGORITHM = "ES256"
LEGACY_KEY_FILE = Path("keys") / "issuer.pem"


class Verifier(Protocol):
    """Checks signatures made by one key."""

    @property
    def kid(self) -> str: ...

    def verify(self, data: bytes, signature: bytes) -> bool: ...

    def public_jwk(self) -> dict[str, str]: ...


class Signer(Verifier, Protocol):
    """One key that signs; plug point for a KMS or HSM later."""

    def sign(self, data: bytes) -> bytes: ...


class SignerSource(Protocol):
    """Where the key to sign with now comes from (a keyring, or one fixed key)."""

    def current_signer(self) -> Signer:
        """One key, fixed for the signature at hand: its ``kid`` is the key that signs."""
        ...


class PublicKeyVerifier:
    """Verifies ES256 signatures with a public key alone."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise SigningKeyError(f"key curve `{public_key.curve.name}` is not P-256")
        self._public = public_key
        self._jwk = public_jwk(public_key)
        self._kid = thumbprint(self._jwk)
        self._verify = verifier(ALGORITHM, public_key)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKeyVerifier:
        """A verifier from a public JWK (``kty`` EC, ``crv`` P-256)."""
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise SigningKeyError("only EC P-256 public keys are accepted")
        try:
            key = load_public_jwk(jwk)
        except ValueError as exc:
            raise SigningKeyError("public key is not a valid P-256 point") from exc
        assert isinstance(key, ec.EllipticCurvePublicKey)  # EC P-256, checked above
        return cls(key)

    @property
    def kid(self) -> str:
        return self._kid

    def public_jwk(self) -> dict[str, str]:
        return {**self._jwk, "kid": self._kid, "alg": ALGORITHM, "use": "sig"}

    def verify(self, data: bytes, signature: bytes) -> bool:
        return self._verify(data, signature)


class LocalSigner(PublicKeyVerifier):
    """An ES256 private key held in this process; immutable, and its own :class:`SignerSource`."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        super().__init__(private_key.public_key())
        self._private = private_key

    @classmethod
    def generate(cls) -> LocalSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> LocalSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError("signing key file is not an unencrypted PEM key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningKeyError("signing key is not an EC key")
        return cls(key)

    def to_pem(self) -> bytes:
        """The private key as PKCS#8 PEM, unencrypted: seal it before it is stored."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        return sign(self._private, data)

    def current_signer(self) -> LocalSigner:
        return self


def verifiers_for(keys: Iterable[Verifier]) -> dict[str, Verifier]:
    """Verifiers by key id."""
    return {key.kid: key for key in keys}


def load_legacy_signer(home: Path) -> LocalSigner | None:
    """The per-home checkpoint key of earlier versions, or None if ``home`` has none.

    A key file that others can read is refused (it should be mode 0600): its
    checkpoints could have been forged by anyone who read it.
    """
    path = home / LEGACY_KEY_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(f"signing key `{path}` is readable by others (chmod 600 it)")
    try:
        return LocalSigner.from_pem(path.read_bytes())
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key `{path}`: {exc.strerror}") from exc

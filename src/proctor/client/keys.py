"""The agent's key, and the two kinds of proof it signs with it.

- an **identity proof** (own key, like an RFC 7523 client assertion): a short-lived
  JWT ``{"sub", "iss": the agent, "aud": proctor, "iat", "exp", "jti", "htm", "htu",
  "bh"}`` sent as ``Authorization: Bearer`` to prove who calls. It names its request
  (method, URL without query, the body's SHA-256) and proctor takes it once: one is
  signed for each request (:class:`~proctor.client.AgentAuth`);
- a **proof of possession** (RFC 9449 DPoP semantics) for each use of a grant:
  ``{"htm", "htu", "iat", "jti", "ath": the grant's hash}`` under a ``dpop+jwt``
  header carrying the public key. A fresh one per call: the server refuses a
  nonce twice.

Both are written with :mod:`proctor.jose`, the one JOSE implementation, which needs
``cryptography`` only.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proctor.jose import PrivateKey, public_jwk, thumbprint, write_compact
from proctor.jose.dpop import (
    PROOF_WINDOW_SECONDS,
    body_hash,
    request_target,
    write_proof,
)

__all__ = ["IDENTITY_PROOF_SECONDS", "AgentKey"]

# proctor takes an identity proof while its `iat` is within a minute of its clock
IDENTITY_PROOF_SECONDS = PROOF_WINDOW_SECONDS


class AgentKey:
    """A P-256 or Ed25519 private key held by the agent; never sent anywhere.

    >>> key = AgentKey.generate()
    >>> sorted(key.public_jwk())
    ['crv', 'kty', 'x', 'y']
    """

    def __init__(self, private_key: PrivateKey) -> None:
        public_jwk(private_key)  # P-256 or Ed25519 only: refuse anything else now
        self._key = private_key

    @classmethod
    def generate(cls, *, kind: str = "P-256") -> AgentKey:
        if kind == "Ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if kind == "P-256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(f"key kind `{kind}` is not P-256 or Ed25519")

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> AgentKey:
        key = serialization.load_pem_private_key(data, password=password)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError("an agent key is P-256 or Ed25519")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | Path, password: bytes | None = None) -> AgentKey:
        return cls.from_pem(Path(path).read_bytes(), password)

    def to_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password
            else serialization.NoEncryption())
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption)

    def public_jwk(self) -> dict[str, str]:
        """What an operator registers for the agent (``proof.jwk`` of ``POST /v1/agents``)."""
        return public_jwk(self._key)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint: the ``cnf.jkt`` of every grant bound to this key."""
        return thumbprint(self.public_jwk())

    def identity_proof(self, agent_id: str, *, audience: str, now: datetime, method: str,
                       url: str, body: bytes = b"",
                       ttl_seconds: int = IDENTITY_PROOF_SECONDS) -> str:
        """A proof of who calls, for one request: ``method`` and ``url`` (its query is
        left out) as sent, and ``body`` its bytes as sent. proctor takes it once."""
        at = int(now.timestamp())
        claims: dict[str, Any] = {
            "sub": agent_id, "iss": agent_id, "aud": audience, "iat": at,
            "exp": at + ttl_seconds, "jti": secrets.token_urlsafe(16),
            "htm": method, "htu": request_target(url)}
        if body:
            claims["bh"] = body_hash(body)
        return write_compact({"typ": "JWT"}, claims, self._key)

    def call_proof(self, token: str | None, *, method: str, target: str, now: datetime) -> str:
        """A single-use proof for one use of ``token`` (None: the proof that asks for one)."""
        return write_proof(self._key, token, method=method, target=target, now=now)

    def __repr__(self) -> str:
        return f"AgentKey(thumbprint={self.thumbprint!r})"

"""An agent's own public key: Ed25519 or P-256, as a JWK (RFC 7517).

Only the public members are kept. The key id used everywhere is the RFC 7638
thumbprint (:func:`proctor.jose.thumbprint`), which grants later put in their
``cnf`` claim; coordinates must be canonical and of full length, so one key has
one thumbprint and cannot be registered twice under two. Each key type allows
exactly the algorithms that fit it (:data:`proctor.jose.ALGORITHMS_BY_KEY`:
``ES256``; ``Ed25519`` or ``EdDSA``), so ``alg`` cannot pick the key's
interpretation (no ``none``, no HMAC with the public key as the secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proctor.errors import IdentityError
from proctor.jose import (
    ALGORITHMS_BY_KEY,
    PublicKey,
    algorithms_for,
    load_public_jwk,
    private_members,
    thumbprint,
)

__all__ = ["ALGORITHMS_BY_KEY", "AgentKey", "import_agent_key"]

_PUBLIC_MEMBERS = {"EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x")}


@dataclass(frozen=True, slots=True)
class AgentKey:
    """A validated public key: its public JWK, thumbprint and allowed algorithms."""

    jwk: dict[str, str]
    thumbprint: str
    algorithms: tuple[str, ...]

    def public_key(self) -> PublicKey:
        """The key, to verify signatures with."""
        return load_public_jwk(self.jwk)


def import_agent_key(data: Any) -> AgentKey:
    """Check ``data`` is a public Ed25519 or P-256 JWK; raise ``agent_key_invalid`` if not."""
    if not isinstance(data, Mapping):
        raise IdentityError("agent_key_invalid", "an agent key must be a JWK (a JSON object)")
    if private_members(data):
        raise IdentityError("agent_key_invalid",
                            "the JWK holds private key material; register the public key only")
    kty, crv = data.get("kty"), data.get("crv")
    algorithms = algorithms_for(data)
    if not algorithms:
        raise IdentityError(
            "agent_key_invalid",
            f"key type `{kty}` with curve `{crv}` is not allowed (use Ed25519 or P-256)"
        )
    if data.get("use", "sig") != "sig":
        raise IdentityError("agent_key_invalid", "the JWK's `use` must be `sig`")
    if "alg" in data and data["alg"] not in algorithms:
        raise IdentityError("agent_key_invalid",
                            f"the JWK's `alg` `{data['alg']}` does not fit a {crv} key")
    members = _PUBLIC_MEMBERS[str(kty)]
    if not all(isinstance(data.get(m), str) for m in members):
        raise IdentityError("agent_key_invalid",
                            f"a {crv} JWK needs the members {', '.join(members)}")
    public = {m: str(data[m]) for m in members}
    try:
        load_public_jwk(public)
    except ValueError as exc:
        raise IdentityError("agent_key_invalid",
                            f"the {crv} JWK is not a valid public key ({exc})") from exc
    return AgentKey(public, thumbprint(public), algorithms)

"""An agent's own public key: Ed25519 or P-256, as a JWK (RFC 7517).

Only the public members are kept. The key id used everywhere is the RFC 7638
thumbprint, which grants later put in their ``cnf`` claim. Each key type
allows exactly the algorithms that fit it, so ``alg`` cannot pick the key's
interpretation (no ``none``, no HMAC with the public key as the secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from proctor.errors import AgentKeyError
from proctor.jose import private_members

__all__ = ["ALGORITHMS_BY_KEY", "AgentKey", "import_agent_key"]

# (kty, crv) -> JWS algorithms. "EdDSA" is the pre-RFC 9864 name of Ed25519
# signatures; it is accepted only because the key already pins the curve.
ALGORITHMS_BY_KEY: dict[tuple[str, str], tuple[str, ...]] = {
    ("EC", "P-256"): ("ES256",),
    ("OKP", "Ed25519"): ("Ed25519", "EdDSA"),
}
_PUBLIC_MEMBERS = {"EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x")}


@dataclass(frozen=True, slots=True)
class AgentKey:
    """A validated public key: its public JWK, thumbprint and allowed algorithms."""

    jwk: dict[str, str]
    thumbprint: str
    algorithms: tuple[str, ...]

    def joserfc_key(self) -> ECKey | OKPKey:
        """The key as joserfc uses it for verification."""
        if self.jwk["kty"] == "EC":
            return ECKey.import_key(dict(self.jwk))
        return OKPKey.import_key(dict(self.jwk))


def import_agent_key(data: Any) -> AgentKey:
    """Check ``data`` is a public Ed25519 or P-256 JWK; raise :class:`AgentKeyError` if not."""
    if not isinstance(data, Mapping):
        raise AgentKeyError("an agent key must be a JWK (a JSON object)")
    if private_members(data):
        raise AgentKeyError("the JWK holds private key material; register the public key only")
    kty, crv = data.get("kty"), data.get("crv")
    algorithms = ALGORITHMS_BY_KEY.get((str(kty), str(crv)))
    if algorithms is None:
        raise AgentKeyError(
            f"key type `{kty}` with curve `{crv}` is not allowed (use Ed25519 or P-256)"
        )
    if data.get("use", "sig") != "sig":
        raise AgentKeyError("the JWK's `use` must be `sig`")
    if "alg" in data and data["alg"] not in algorithms:
        raise AgentKeyError(f"the JWK's `alg` `{data['alg']}` does not fit a {crv} key")
    members = _PUBLIC_MEMBERS[str(kty)]
    if not all(isinstance(data.get(m), str) for m in members):
        raise AgentKeyError(f"a {crv} JWK needs the members {', '.join(members)}")
    public = {m: str(data[m]) for m in members}
    try:
        key = ECKey.import_key(public) if kty == "EC" else OKPKey.import_key(public)  # type: ignore[arg-type]
        thumbprint = key.thumbprint()
    except (JoseError, ValueError, TypeError) as exc:
        raise AgentKeyError(f"the {crv} JWK is not a valid public key") from exc
    return AgentKey(public, thumbprint, algorithms)

"""What the stdio wrapper is given at launch: the agent's grant and private key.

The wrapper runs as the agent's process, bound to one session: the MCP client
that starts it passes the grant (``PROCTOR_GRANT``, or ``--grant-file``) and the
key the grant is bound to (``--key-file`` / ``PROCTOR_AGENT_KEY_FILE``: a PEM
private key, or a private JWK). With them the wrapper makes the proof of
possession for each call itself, so the model on the other end of the pipe
never holds either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from proctor.clock import Clock
from proctor.documents import parse_json
from proctor.errors import ConfigError, DocumentError, GatewayError, IdentityError
from proctor.files import read_capped
from proctor.grants import make_proof
from proctor.grants.proofs import PrivateKey

__all__ = ["LaunchCredentials", "load_agent_key", "load_grant"]

_MAX_KEY_BYTES = 16 * 1024
_MAX_GRANT_BYTES = 8 * 1024


def load_grant(path: Path | None, env_value: str | None) -> str:
    """The grant token from a file, else from the environment."""
    if path is not None:
        raw = read_capped(path, _MAX_GRANT_BYTES, "grant file", ConfigError)
        text = raw.decode("utf-8", errors="replace").strip()
    else:
        text = (env_value or "").strip()
    if not text:
        raise GatewayError("grant_missing", "no grant: set PROCTOR_GRANT or pass --grant-file")
    return text


def load_agent_key(path: Path) -> PrivateKey:
    """A P-256 or Ed25519 private key from a PEM file or a private JWK."""
    raw = read_capped(path, _MAX_KEY_BYTES, "agent key file", ConfigError)
    key: object
    try:
        if raw.lstrip().startswith(b"{"):
            jwk = parse_json(raw, what="agent key", max_bytes=_MAX_KEY_BYTES)
            imported = ECKey.import_key(jwk) if jwk.get("kty") == "EC" else OKPKey.import_key(jwk)
            key = imported.private_key
        else:
            key = serialization.load_pem_private_key(raw, password=None)
    except (DocumentError, ValueError, TypeError, JoseError, AttributeError) as exc:
        raise IdentityError("agent_key_invalid", f"agent key file `{path}` holds no private "
                           f"key proctor can use ({type(exc).__name__})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise IdentityError("agent_key_invalid", f"agent key file `{path}` is not a P-256 or "
                       "Ed25519 private key")


@dataclass(frozen=True)
class LaunchCredentials:
    """The grant and key of a wrapper's one session; proofs are made per call."""

    token: str = field(repr=False)
    key: PrivateKey = field(repr=False)
    clock: Clock = field(repr=False)
    source_ip: str | None = None

    def target_for(self, server: str, name: str) -> str:
        return f"mcp://{server}/{name}"

    def proof_for(self, method: str, target: str) -> str:
        return make_proof(self.key, self.token, method=method, target=target,
                          now=self.clock.now())

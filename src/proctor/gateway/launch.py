"""What the stdio wrapper is given at launch: the agent's grant and private key.

The wrapper runs as the agent's process, bound to one session: the MCP client
that starts it passes the grant (``PROCTOR_GRANT``, or ``--grant-file``) and the
key the grant is bound to (``--key-file`` / ``PROCTOR_AGENT_KEY_FILE``: a PEM
private key, or a private JWK), so the model on the other end of the pipe never
holds either.

The wrapper is the grant's holder and its decider in one process: a proof of
possession it signed for each call and verified itself would prove nothing to
anyone. It checks possession once instead, as it starts (:meth:`LaunchCredentials.
hold`: the key's public thumbprint is the grant's ``cnf.jkt``, the grant checked as
any use checks it), and decides each call on the :class:`~proctor.grants.HeldGrant`
this makes (:class:`HeldCredentials`), which only the key could make and no
message of the agent can name.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from proctor.documents import parse_json
from proctor.errors import ConfigError, DocumentError, GatewayError, IdentityError
from proctor.files import read_capped
from proctor.grants.proofs import PrivateKey

if TYPE_CHECKING:
    from proctor.enforcement import CallVerdict, Enforcer, ToolCall
    from proctor.grants import GrantAuthority, GrantClaims, GrantUse, HeldGrant

__all__ = ["HeldCredentials", "LaunchCredentials", "load_agent_key", "load_grant"]

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
    """The grant and key of a wrapper's one session, as loaded."""

    token: str = field(repr=False)
    key: PrivateKey = field(repr=False)
    source_ip: str | None = None

    def hold(self, grants: GrantAuthority) -> HeldCredentials:
        """The credentials the wrapper's calls are decided with: the grant checked, and
        the key its holder's (else :class:`GrantError` ``proof_wrong_key``); reads the
        store."""
        return HeldCredentials(grants.hold(self.token, self.key), self.source_ip)


@dataclass(frozen=True)
class HeldCredentials:
    """A wrapper's grant, held with its key (:meth:`GrantAuthority.hold`): each call is
    decided without a proof (:meth:`Enforcer.decide_held_call`)."""

    held: HeldGrant = field(repr=False)
    source_ip: str | None = None

    @property
    def claims(self) -> GrantClaims:
        return self.held.claims

    def target_for(self, server: str, name: str) -> str:
        return f"mcp://{server}/{name}"

    def decide(self, enforcer: Enforcer, call: ToolCall) -> Awaitable[CallVerdict]:
        return enforcer.decide_held_call_on_loop(self.held, call)

    def refusal_use(self, grants: GrantAuthority) -> GrantUse | None:
        return None  # the key was proved when the grant was held: the agent is this process

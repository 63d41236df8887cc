"""Keys, tokens, bundles and issuers generated at run time for identity tests.

Nothing here is a fixed key: every test makes its own. The forging helpers
build tokens the way an attacker would, by hand, so that the verifiers see
exactly the bytes an attack sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from spiffe import JwtBundle

from proctor.config import Settings
from proctor.identity import Manifest, OidcIssuer, jwt_bundle_from_jwks
from proctor.identity.jwks import Fixed
from proctor.identity.request_proofs import BoundRequest
from proctor.jose.dpop import body_hash

TRUST_DOMAIN = "acme.example"
AUDIENCE = "spiffe://acme.example/proctor"
CODER = "spiffe://acme.example/agent/coder"
BUILDER = "spiffe://acme.example/agent/builder"
ISSUER = "https://cluster.acme.example"
OIDC_AUDIENCE = "proctor"
# the request an own-key proof is made for, unless a test names another
REQUEST = BoundRequest("POST", "https://proctor.acme.example/v1/tasks", b'{"purpose":"p"}')


def digest(char: str) -> str:
    return "sha256:" + char * 64


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "model_id": "claude-sonnet-4", "weights_digest": digest("a"),
        "system_prompt_digest": digest("b"), "tools": ("git/git_log", "time/get_current_time"),
        "dependency_lock_digest": digest("c"),
    }
    fields.update(changes)
    return Manifest(**fields)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS put together by hand, with whatever header and signature."""
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()),
                     b64(signature)])


def tamper(token: str, **changes: Any) -> str:
    """The token with its claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims.update(changes)
    return ".".join([header, b64(json.dumps(claims).encode()), signature])


def claims_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64(token.split(".")[1]))
    return result


def alg_none(token: str) -> str:
    """The token's claims under ``alg: none`` with an empty signature."""
    return compact({"alg": "none", "typ": "JWT"}, claims_of(token))


def hs256_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """HS256 keyed with ``secret`` (an attacker uses the public key's bytes)."""
    head = {**header, "alg": "HS256"}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def proof_claims(agent_id: str, now: datetime, *, ttl: int = 120,
                 request: BoundRequest | None = REQUEST, **extra: Any) -> dict[str, Any]:
    """An own-key proof's claims, for ``request`` (None: for no request, as proofs were
    made before they were bound to one); a claim given as None is left out."""
    at = int(now.timestamp())
    claims: dict[str, Any] = {"sub": agent_id, "iss": agent_id, "aud": AUDIENCE, "iat": at,
                              "exp": at + ttl, "jti": f"proof-{secrets.token_urlsafe(12)}"}
    if request is not None:
        claims |= {"htm": request.method, "htu": request.url,
                   "bh": body_hash(request.body or b"")}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: ECKey | OKPKey | RSAKey, alg: str, claims: dict[str, Any],
         **header: Any) -> str:
    return jwt.encode({"alg": alg, **header}, claims, key, algorithms=[alg])


def own_key_proof(key: ECKey | OKPKey, agent_id: str, now: datetime, *,
                  alg: str | None = None, **extra: Any) -> str:
    """A valid own-key proof for ``agent_id``, for :data:`REQUEST` unless ``request=`` names
    another (claims overridable with ``extra``)."""
    chosen = alg or ("ES256" if isinstance(key, ECKey) else "Ed25519")
    return sign(key, chosen, proof_claims(agent_id, now, **extra))


def public_jwk(key: ECKey | OKPKey | RSAKey) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


@dataclass
class SvidAuthority:
    """A SPIRE-like JWT-SVID signer for one trust domain, with its bundle."""

    trust_domain: str = TRUST_DOMAIN
    kid: str = "authority-1"
    key: ECKey | RSAKey = field(default_factory=lambda: ECKey.generate_key("P-256"))

    @property
    def alg(self) -> str:
        return "ES256" if isinstance(self.key, ECKey) else "RS256"

    def bundle(self) -> JwtBundle:
        jwk = {**public_jwk(self.key), "kid": self.kid, "use": "jwt-svid"}
        return jwt_bundle_from_jwks(self.trust_domain, {"keys": [jwk]})

    def svid(self, agent_id: str, now: datetime, *, ttl: int = 300, audience: Any = AUDIENCE,
             **extra: Any) -> str:
        at = int(now.timestamp())
        claims = {"sub": agent_id, "aud": audience, "exp": at + ttl, "iat": at, **extra}
        return sign(self.key, self.alg, {k: v for k, v in claims.items() if v is not None},
                    kid=self.kid, typ="JWT")


def svid_home(home: Path, database_url: str, svids: SvidAuthority) -> Settings:
    """A new home on ``database_url`` that trusts ``svids``' bundle for acme.example, so
    agents may prove themselves by JWT-SVID (``init_home`` run)."""
    from proctor.runtime import init_home  # the whole runtime: only for those who ask

    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain=svids.trust_domain)
    init_home(settings)
    (home / "bundle.json").write_text(json.dumps({"keys": [
        {**public_jwk(svids.key), "kid": svids.kid, "use": "jwt-svid"}]}))
    (home / "identity.toml").write_text(f'[[trust_bundles]]\ntrust_domain = '
                                        f'"{svids.trust_domain}"\njwks_file = "bundle.json"\n')
    return settings


@dataclass
class OidcAuthority:
    """An OIDC issuer (a Kubernetes cluster, say) with an RSA signing key."""

    issuer: str = ISSUER
    audience: str = OIDC_AUDIENCE
    kid: str = "cluster-key-1"
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**public_jwk(self.key), "kid": self.kid, "use": "sig"}]}

    def config(self, subject_template: str | None = None) -> OidcIssuer:
        return OidcIssuer(issuer=self.issuer, audience=self.audience,
                          keys=Fixed(KeySet.import_key_set(self.jwks())),  # type: ignore[arg-type]
                          subject_template=subject_template)

    def claims(self, subject: str, now: datetime, *, ttl: int = 600, **extra: Any
               ) -> dict[str, Any]:
        at = int(now.timestamp())
        claims = {"iss": self.issuer, "aud": [self.audience], "sub": subject, "iat": at,
                  "nbf": at, "exp": at + ttl, **extra}
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, subject: str, now: datetime, **extra: Any) -> str:
        return sign(self.key, "RS256", self.claims(subject, now, **extra), kid=self.kid)

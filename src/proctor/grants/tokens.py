"""Grant tokens: ES256 JWTs written and read with :mod:`proctor.jose`, checked in steps.

Reading (bounded in size and nesting) and signature checking (algorithm
allow-list, key id, signature) are one step, cached per token; claims checking
(issuer, audience, time with bounded leeway) is another and runs on every
check, with the injected clock.

Claims::

    iss   the issuer: spiffe://<trust domain>/proctor
    aud   the deployment's grant audience (setting ``grant_audience``, "proctor" by
          default): one string; a list naming several is refused (``grant_wrong_audience``)
    sub   the agent's SPIFFE ID                  jti   the grant id (a lease node)
    iat, nbf, exp                                task  the task id
    scope the grant scope document               cnf   {"jkt": agent key thumbprint}
    anc   ancestor grant ids, parent first       act   RFC 8693 actor chain (delegation):
          each actor's ``sub`` and ``mfd``, the manifest its own grant was issued under
    wild  the wildcard entries as asked for: a tool they match that appeared after the
          grant was issued is decided then as a new issuance (``scope`` holds the
          tools decided at issuance, each named)
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proctor.errors import DocumentError, GrantError, ScopeError, SigningKeyError
from proctor.grants.keyring import IssuerKey, IssuerKeyring
from proctor.grants.scope import GrantScope
from proctor.jose import b64url_encode, read_compact, sign, verify_signature, write_compact
from proctor.jose.jwk import PrivateKey

__all__ = ["MAX_TOKEN_BYTES", "GrantClaims", "TokenCodec", "token_hash"]

MAX_TOKEN_BYTES = 8192
LEEWAY_SECONDS = 30
_ALLOWED = ("ES256",)
_CACHE_SIZE = 10_000


def token_hash(token: str) -> str:
    """The SHA-256 of a token, base64url: what is stored, never the token."""
    return b64url_encode(hashlib.sha256(token.encode()).digest())


@dataclass(frozen=True, slots=True)
class GrantClaims:
    grant_id: str
    agent_id: str
    task_id: str
    issuer: str
    audience: str
    issued_at: int
    not_before: int
    expires_at: int
    scope: GrantScope
    key_thumbprint: str
    ancestors: tuple[str, ...]
    actor_chain: tuple[str, ...]
    wildcards: GrantScope | None = None
    manifest_digest: str | None = None  # `mfd`: the manifest the agent ran when issued
    # each `act` entry's `mfd`: the manifest each delegator's grant was issued under, as
    # ``actor_chain`` (None: not known, a grant made before they were carried)
    actor_manifests: tuple[str | None, ...] = ()

    @property
    def depth(self) -> int:
        return len(self.ancestors)

    @property
    def line_manifests(self) -> tuple[str | None, ...]:
        """:attr:`actor_manifests`, one for each agent of ``actor_chain``."""
        known = self.actor_manifests[:len(self.actor_chain)]
        return known + (None,) * (len(self.actor_chain) - len(known))

    @property
    def lineage(self) -> tuple[str, ...]:
        """The lease nodes whose revocation revokes this grant: itself, its ancestors,
        its task."""
        return (self.grant_id, *self.ancestors, self.task_id)

    def as_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": self.agent_id,
            "jti": self.grant_id, "iat": self.issued_at, "nbf": self.not_before,
            "exp": self.expires_at, "task": self.task_id, "scope": self.scope.as_json(),
            "cnf": {"jkt": self.key_thumbprint}, "anc": list(self.ancestors),
        }
        act: dict[str, Any] | None = None
        for actor, manifest in reversed(list(zip(self.actor_chain, self.line_manifests,
                                                 strict=True))):
            act = {"sub": actor, **({"mfd": manifest} if manifest is not None else {}),
                   **({"act": act} if act else {})}
        if act:
            claims["act"] = act
        if self.wildcards is not None:
            claims["wild"] = self.wildcards.as_json()
        if self.manifest_digest is not None:
            claims["mfd"] = self.manifest_digest
        return claims

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> GrantClaims:
        try:
            chain: list[str] = []
            manifests: list[str | None] = []
            act = claims.get("act")
            while isinstance(act, Mapping):
                chain.append(str(act["sub"]))
                manifests.append(str(act["mfd"]) if "mfd" in act else None)
                act = act.get("act")
            return cls(
                grant_id=str(claims["jti"]), agent_id=str(claims["sub"]),
                task_id=str(claims["task"]), issuer=str(claims["iss"]),
                audience=_audience_of(claims["aud"]), issued_at=int(claims["iat"]),
                not_before=int(claims["nbf"]), expires_at=int(claims["exp"]),
                scope=GrantScope.from_json(claims["scope"]),
                key_thumbprint=str(claims["cnf"]["jkt"]),
                ancestors=tuple(str(a) for a in claims.get("anc") or ()),
                actor_chain=tuple(chain),
                wildcards=GrantScope.from_json(claims["wild"]) if "wild" in claims else None,
                manifest_digest=str(claims["mfd"]) if "mfd" in claims else None,
                # none known (a token made before they were carried): none, as written
                actor_manifests=tuple(manifests) if any(manifests) else (),
            )
        except (KeyError, TypeError, ValueError, ScopeError) as exc:
            raise GrantError("grant_malformed", "grant claims are incomplete") from exc


def _audience_of(aud: Any) -> str:
    """The one audience a grant names. proctor writes a string; a list (which JWT allows)
    is read only when it names one audience: a grant for other audiences as well would
    be good wherever any of them is checked, so it is refused, whatever else it names."""
    if isinstance(aud, str):
        return aud
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        if len(set(aud)) == 1:
            return str(aud[0])
        raise GrantError("grant_wrong_audience",
                         f"grant names {len(set(aud))} audiences; a grant is for one alone")
    raise TypeError("aud")  # grant_malformed


class TokenCodec:
    """Signs grant claims and checks tokens against the keyring."""

    def __init__(self, keyring: IssuerKeyring, *, issuer: str, audience: str) -> None:
        self._keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self._verified: OrderedDict[str, tuple[str, GrantClaims]] = OrderedDict()
        # the current key, its private half and the token's first segment and dot
        self._header: tuple[IssuerKey, PrivateKey, str] | None = None

    def encode(self, claims: GrantClaims) -> str:
        """The signed token: the header's segment is written once per issuer key (it
        names only the key), the claims' segment and the ES256 signature per grant,
        as :func:`~proctor.jose.write_compact` writes them."""
        key = self._keyring.current()
        header = self._header
        if header is None or header[0] is not key:
            private = key.key.private_key
            if private is None:
                raise SigningKeyError("the current issuer key has no private half")
            prefix = write_compact({"kid": key.kid, "typ": "proctor-grant+jwt"}, {},
                                   private).split(".", 1)[0] + "."
            header = self._header = (key, private, prefix)
        _, signer, prefix = header
        signing_input = prefix + b64url_encode(
            json.dumps(claims.as_claims(), separators=(",", ":")).encode("utf-8"))
        return signing_input + "." + b64url_encode(sign(signer, signing_input.encode("ascii")))

    def decode(self, token: str, *, now: datetime) -> GrantClaims:
        """Verify ``token``'s signature (cached) and claims; raise :class:`GrantError`."""
        claims = self._verify_signature(token)
        self._check_claims(claims, now)
        return claims

    def _verify_signature(self, token: str) -> GrantClaims:
        if len(token) > MAX_TOKEN_BYTES:
            raise GrantError("grant_too_large", f"grant is over {MAX_TOKEN_BYTES} bytes")
        cached = self._verified.get(token)
        if cached is not None:
            kid, claims = cached
            self._keyring.verification_key(kid)  # a retired key stops verifying at once
            return claims
        try:
            jws = read_compact(token, max_bytes=MAX_TOKEN_BYTES, what="the grant")
        except DocumentError as exc:
            raise GrantError("grant_malformed", exc.message) from None
        alg = jws.header.get("alg")
        if alg not in _ALLOWED:
            raise GrantError("grant_algorithm_not_allowed",
                             f"algorithm `{str(alg)[:20]}` is not allowed")
        key = self._keyring.verification_key(str(jws.header.get("kid", ""))[:128])
        try:
            signature = jws.signature_bytes()
        except ValueError:
            raise GrantError("grant_signature_invalid",
                             "grant signature is not base64url") from None
        if not verify_signature(str(alg), key.key.public_key, jws.signing_input, signature):
            raise GrantError("grant_signature_invalid", "grant signature is not valid")
        claims = GrantClaims.from_claims(jws.claims)
        self._verified[token] = (key.kid, claims)
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def _check_claims(self, claims: GrantClaims, now: datetime) -> None:
        if claims.issuer != self.issuer:
            raise GrantError("grant_wrong_issuer", f"grant issuer `{claims.issuer}` is not trusted")
        if claims.audience != self.audience:
            raise GrantError("grant_wrong_audience", f"grant is for audience `{claims.audience}`")
        t = int(now.timestamp())
        if claims.expires_at + LEEWAY_SECONDS <= t:
            raise GrantError("grant_expired", "grant has expired")
        if claims.not_before - LEEWAY_SECONDS > t:
            raise GrantError("grant_not_yet_valid", "grant is not valid yet")


"""Humans signing in with an OIDC provider's tokens (ID or access tokens).

The token must come from a configured issuer, for its audience, with an
algorithm from its allow-list that fits the key its ``kid`` names. The
human's id is one claim (``sub`` by default; ``email`` is common) and the
roles come from another (``roles`` by default), mapped to proctor's roles.
An id that is a SPIFFE ID is refused: agents never sign in as humans. The id
is taken in its canonical form (:mod:`proctor.human_ids`): ``Bob@Acme.example``
signs in as ``bob@acme.example``, and an id with invisible characters or mixed
scripts is refused.

The checks are those agents' proofs get (``proctor.identity.tokens``); the
keys come from a JWKS file, or from the issuer's JWKS URL, fetched at first
use and again (at most every 30 s) when a token names a key not seen yet.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from proctor.clock import Clock, SystemClock
from proctor.documents import parse_json
from proctor.errors import (
    ConfigError,
    ProctorError,
    ProofClaimsError,
    ProofIssuerError,
    ProofKeyUnknownError,
)
from proctor.human_ids import canonical_human_id, human_id_problem
from proctor.identity.jwks import MAX_JWKS_BYTES, read_jwks, split_jwks
from proctor.identity.oidc import decode_issuer_token
from proctor.identity.tokens import peek
from proctor.server.principals import HUMAN_ROLES

__all__ = ["FileKeys", "HumanIssuer", "HumanVerifier", "UrlKeys", "VerifiedHuman",
           "issuer_from_config"]

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 30
_REFETCH_SECONDS = 30.0
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")


class KeySource(Protocol):
    def key_set(self, *, refresh: bool) -> KeySet: ...


@dataclass(frozen=True, slots=True)
class FileKeys:
    """A fixed key set (read from a JWKS file at start)."""

    keys: KeySet

    def key_set(self, *, refresh: bool) -> KeySet:
        return self.keys


class UrlKeys:
    """The issuer's published JWKS, fetched on first use and on unknown key ids."""

    def __init__(self, url: str, clock: Clock, *, timeout: float = 5.0) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"jwks_url `{url}` is not an http(s) URL")
        self.url = url
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None

    def key_set(self, *, refresh: bool) -> KeySet:
        with self._lock:
            due = (self._fetched_at is None
                   or self._clock.monotonic() - self._fetched_at >= _REFETCH_SECONDS)
            if (self._keys is None or refresh) and due:
                self._fetch()
            if self._keys is None:  # never fetched: tried at most every 30 s
                raise ProofKeyUnknownError("the issuer's key set is not available")
            return self._keys

    def _fetch(self) -> None:
        """Fetch the key set; on any failure keep what was known before."""
        self._fetched_at = self._clock.monotonic()
        try:
            with httpx.Client(timeout=self._timeout, follow_redirects=False) as client, \
                    client.stream("GET", self.url) as response:
                response.raise_for_status()
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        log.warning("the key set at %s is over %s bytes", self.url,
                                    MAX_JWKS_BYTES)
                        return
            document = parse_json(body, what="issuer key set", max_bytes=MAX_JWKS_BYTES)
            self._keys = KeySet.import_key_set({"keys": split_jwks(document,
                                                                   "issuer key set")})
        except (httpx.HTTPError, ValueError, TypeError, AttributeError, ProctorError,
                JoseError) as exc:
            log.warning("the key set at %s cannot be used: %s", self.url, type(exc).__name__)


@dataclass(frozen=True, slots=True)
class HumanIssuer:
    """An OIDC provider whose tokens sign humans in, and how its claims map."""

    issuer: str
    audience: str
    keys: KeySource
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    subject_claim: str = "sub"
    role_claim: str = "roles"
    roles: Mapping[str, str] = field(default_factory=lambda: {r: r for r in HUMAN_ROLES})

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ConfigError("an OIDC issuer needs `issuer` and `audience`")
        bad = [a for a in self.algorithms if a not in ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigError(f"OIDC issuer `{self.issuer}`: algorithm `{(bad or [''])[0]}` is "
                              f"not allowed (use {', '.join(ALGORITHMS)})")
        unknown = sorted(set(self.roles) - set(HUMAN_ROLES))
        if unknown:
            raise ConfigError(f"OIDC issuer `{self.issuer}`: `{unknown[0]}` is not a role "
                              f"(roles: {', '.join(HUMAN_ROLES)})")

    def roles_in(self, claims: Mapping[str, Any]) -> frozenset[str]:
        value = claims.get(self.role_claim)
        values = value.split() if isinstance(value, str) else value if isinstance(
            value, list) else []
        present = {v for v in values if isinstance(v, str)}
        return frozenset(role for role, wanted in self.roles.items() if wanted in present)


@dataclass(frozen=True, slots=True)
class VerifiedHuman:
    id: str
    roles: frozenset[str]
    issuer: str
    expires_at: datetime


class HumanVerifier:
    """Checks humans' OIDC tokens against the configured issuers."""

    def __init__(self, issuers: tuple[HumanIssuer, ...]) -> None:
        self._issuers = {i.issuer: i for i in issuers}

    def accepts(self, claims: Mapping[str, Any]) -> bool:
        """True if ``claims`` (unverified) name a human issuer and its audience: such a
        token is checked here, any other goes to the agents' verifiers."""
        name = claims.get("iss")
        issuer = self._issuers.get(name) if isinstance(name, str) else None
        if issuer is None:
            return False
        aud = claims.get("aud")
        return issuer.audience in ([aud] if isinstance(aud, str) else aud or [])

    def verify(self, token: str, *, now: datetime) -> VerifiedHuman:
        unverified = peek(token)
        name = unverified.claims.get("iss")
        issuer = self._issuers.get(name) if isinstance(name, str) else None
        if issuer is None:
            raise ProofIssuerError(f"issuer `{str(name)[:80]}` is not a configured OIDC issuer")
        claims, expires_at = decode_issuer_token(
            token, unverified, issuer=issuer.issuer, audience=issuer.audience,
            algorithms=issuer.algorithms, find_key=_key_finder(issuer), now=now,
            leeway_seconds=LEEWAY_SECONDS)
        subject = claims.get(issuer.subject_claim)
        problem = human_id_problem(subject)
        if problem is not None:
            raise ProofClaimsError(f"the token's `{issuer.subject_claim}` claim {problem}")
        human_id = canonical_human_id(str(subject))
        if human_id.startswith("spiffe://"):
            raise ProofClaimsError("the token names an agent; humans sign in here")
        return VerifiedHuman(human_id, issuer.roles_in(claims), issuer.issuer, expires_at)


def _key_finder(issuer: HumanIssuer) -> Callable[[str | None], Key]:
    """The issuer's key for a ``kid``, fetching its key set again once if it is unknown."""
    def find(kid: str | None) -> Key:
        try:
            return issuer.keys.key_set(refresh=False).get_by_kid(kid)
        except JoseError:
            return issuer.keys.key_set(refresh=True).get_by_kid(kid)
    return find


def issuer_from_config(entry: Mapping[str, Any], base: Path, clock: Clock | None = None
                       ) -> HumanIssuer:
    """A :class:`HumanIssuer` from one ``[[oidc_issuers]]`` table of ``server.toml``."""
    allowed = {"issuer", "audience", "jwks_file", "jwks_url", "algorithms", "subject_claim",
               "role_claim", "roles"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"OIDC issuer entry has unknown key `{unknown[0]}`")
    if ("jwks_file" in entry) == ("jwks_url" in entry):
        raise ConfigError(f"OIDC issuer `{entry.get('issuer')}` needs one of jwks_file, jwks_url")
    keys: KeySource
    if "jwks_url" in entry:
        keys = UrlKeys(str(entry["jwks_url"]), clock or SystemClock())
    else:
        found = split_jwks(read_jwks(base / entry["jwks_file"]), f"JWKS of `{entry['issuer']}`")
        try:
            keys = FileKeys(KeySet.import_key_set({"keys": found}))
        except (JoseError, ValueError) as exc:
            raise ConfigError(f"JWKS of `{entry['issuer']}` is not valid: {exc}") from exc
    roles = entry.get("roles", {r: r for r in HUMAN_ROLES})
    if not isinstance(roles, Mapping) or not all(isinstance(v, str) for v in roles.values()):
        raise ConfigError(f"OIDC issuer `{entry['issuer']}`: `roles` maps a role to a claim value")
    return HumanIssuer(
        issuer=str(entry["issuer"]), audience=str(entry["audience"]), keys=keys,
        algorithms=tuple(entry.get("algorithms", ("RS256", "ES256"))),
        subject_claim=str(entry.get("subject_claim", "sub")),
        role_claim=str(entry.get("role_claim", "roles")), roles=dict(roles),
    )

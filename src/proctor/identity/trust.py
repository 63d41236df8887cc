"""What proctor trusts to vouch for agents: SPIFFE trust bundles and OIDC issuers.

This is operator configuration, not database state: it is reviewed and
rotated like any other config, and a node reads it at start. It lives in
``$PROCTOR_HOME/identity.toml`` (or the file named by
``$PROCTOR_IDENTITY_CONFIG``); key sets are JWKS files beside it::

    audience = "spiffe://acme.example/proctor"   # default: spiffe://<trust-domain>/proctor
    leeway_seconds = 30                          # clock skew allowed, at most 60

    [[trust_bundles]]                            # JWT-SVID authorities per trust domain
    trust_domain = "acme.example"
    jwks_file = "bundles/acme.example.json"      # a SPIFFE bundle or plain JWKS
    # jwks_url = "https://spire.acme.example/bundle"   # or fetched (SPIRE's https_web)

    [[oidc_issuers]]                             # e.g. a Kubernetes cluster, a CI system
    issuer = "https://kubernetes.default.svc"
    audience = "proctor"
    jwks_file = "oidc/cluster.jwks.json"
    algorithms = ["RS256", "ES256"]              # the default
    subject_template = "system:serviceaccount:agents:{name}"

    [attested_manifest]                          # manifest field = workload-token claim
    image_digest = "image_digest"                # a dotted name reads a nested claim
    workflow_ref = "job_workflow_ref"
    required = ["image_digest"]                  # a token without it: `unattested`

Each bundle's and issuer's keys (a file or a URL) are loaded again while the node runs,
as :class:`~proctor.identity.jwks.Refreshing` says: every five minutes, and for a key
id not seen yet at most every 30 s; a set that cannot be loaded again for an hour is
not used (``proof_keys_stale``). A key the trust domain or issuer withdrew stops
signing agents in within five minutes, without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proctor.clock import Clock, SystemClock
from proctor.documents import read_toml
from proctor.errors import ConfigError
from proctor.identity.jwks import Fixed, Source, refreshing, split_jwks
from proctor.identity.manifest import ATTESTED_FIELDS
from proctor.identity.oidc import OidcIssuer, issuer_settings
from proctor.identity.spiffe_id import load_spiffe
from proctor.identity.tokens import DEFAULT_LEEWAY_SECONDS, MAX_LEEWAY_SECONDS

if TYPE_CHECKING:
    from spiffe import JwtBundle

__all__ = [
    "DEFAULT_LEEWAY_SECONDS",
    "MAX_LEEWAY_SECONDS",
    "OidcIssuer",
    "TrustConfig",
    "jwt_bundle_from_jwks",
    "load_trust_config",
]

_CONFIG_FILE = "identity.toml"


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """The trust domain, the audience proofs must name, the leeway, bundles and issuers."""

    trust_domain: str
    audience: str = ""
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    bundles: Mapping[str, Source[JwtBundle]] = field(default_factory=dict)
    issuers: Mapping[str, OidcIssuer] = field(default_factory=dict)
    attested: Mapping[str, str] = field(default_factory=dict)  # manifest field -> claim
    attested_required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted((set(self.attested) | set(self.attested_required))
                         - set(ATTESTED_FIELDS))
        if unknown:
            raise ConfigError(f"`{unknown[0]}` is not a manifest field a platform attests "
                              f"({', '.join(ATTESTED_FIELDS)})")
        missing = [f for f in self.attested_required if f not in self.attested]
        if missing:
            raise ConfigError(f"attested manifest field `{missing[0]}` is required but no "
                              "claim is mapped to it")
        if not self.audience:
            object.__setattr__(self, "audience", f"spiffe://{self.trust_domain}/proctor")
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ConfigError(f"leeway of {self.leeway_seconds} s is outside 0 to "
                              f"{MAX_LEEWAY_SECONDS} s")

    @classmethod
    def build(cls, trust_domain: str, *, audience: str = "",
              leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
              bundles: Iterable[JwtBundle | tuple[str, Source[JwtBundle]]] = (),
              issuers: Iterable[OidcIssuer] = (), attested: Mapping[str, str] | None = None,
              attested_required: Iterable[str] = ()) -> TrustConfig:
        """A config from lists of bundles (a fixed bundle, or a trust domain and where its
        bundle comes from) and issuers, keyed by trust domain and issuer."""
        sources = dict(b if isinstance(b, tuple) else (b.trust_domain.name, Fixed(b))
                       for b in bundles)
        return cls(trust_domain, audience, leeway_seconds, sources,
                   {i.issuer: i for i in issuers},
                   dict(attested or {}), tuple(attested_required))

    def issuer_named(self, issuer: str | None) -> OidcIssuer:
        """The issuer ``issuer``, or the only one configured when ``issuer`` is None."""
        if issuer is None:
            if len(self.issuers) != 1:
                raise ConfigError("name the OIDC issuer: "
                                  f"{len(self.issuers)} issuers are configured")
            return next(iter(self.issuers.values()))
        if issuer not in self.issuers:
            raise ConfigError(f"OIDC issuer `{issuer}` is not configured")
        return self.issuers[issuer]


def jwt_bundle_from_jwks(trust_domain: str, document: Mapping[str, Any]) -> JwtBundle:
    """A JWT bundle from a SPIFFE bundle or JWKS document (only its JWT-SVID keys)."""
    keys = [k for k in split_jwks(document, f"trust bundle of `{trust_domain}`")
            if k.get("use", "jwt-svid") == "jwt-svid"]
    if not keys or not all(isinstance(k.get("kid"), str) and k["kid"] for k in keys):
        raise ConfigError(f"trust bundle of `{trust_domain}` needs JWT-SVID keys, each with a kid")
    # the package loads its Workload API client (gRPC) with it: only when a bundle is read
    load_spiffe()
    from spiffe import JwtBundle, TrustDomain
    from spiffe.errors import PySpiffeError

    try:
        return JwtBundle.parse(TrustDomain(trust_domain), json.dumps({"keys": keys}).encode())
    except PySpiffeError as exc:
        raise ConfigError(f"trust bundle of `{trust_domain}` is not valid: {exc}") from exc


def load_trust_config(home: Path, trust_domain: str, env: Mapping[str, str] | None = None,
                      clock: Clock | None = None) -> TrustConfig:
    """Read ``identity.toml`` (see the module docstring); no file means no bundles or
    issuers. ``clock`` times the loads of key sets again."""
    clock = clock or SystemClock()
    if env is None:
        import os

        env = os.environ
    path = Path(env["PROCTOR_IDENTITY_CONFIG"]) if env.get("PROCTOR_IDENTITY_CONFIG") \
        else home / _CONFIG_FILE
    if not path.is_file():
        if env.get("PROCTOR_IDENTITY_CONFIG"):
            raise ConfigError(f"identity config `{path}` does not exist")
        return TrustConfig(trust_domain)
    data = read_toml(path, what="identity config", error=ConfigError)
    unknown = sorted(set(data) - {"audience", "leeway_seconds", "trust_bundles", "oidc_issuers",
                                  "attested_manifest"})
    if unknown:
        raise ConfigError(f"identity config `{path}` has unknown key `{unknown[0]}`")
    base = path.parent
    try:
        bundles = [_bundle(b, base, clock) for b in data.get("trust_bundles", [])]
        issuers = [_issuer(i, base, clock) for i in data.get("oidc_issuers", [])]
        attested = dict(data.get("attested_manifest", {}))
        required = attested.pop("required", [])
        if not isinstance(required, list) or not all(isinstance(v, str) for v in
                                                     [*required, *attested.values()]):
            raise ValueError("`attested_manifest`: claim names and `required` fields")
        return TrustConfig.build(trust_domain, audience=str(data.get("audience", "")),
                                 leeway_seconds=int(data.get("leeway_seconds",
                                                             DEFAULT_LEEWAY_SECONDS)),
                                 bundles=bundles, issuers=issuers, attested=attested,
                                 attested_required=required)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"identity config `{path}` is not valid: missing or wrong {exc}") from exc


def _bundle(entry: Mapping[str, Any], base: Path, clock: Clock
            ) -> tuple[str, Source[JwtBundle]]:
    """One ``[[trust_bundles]]`` table: its trust domain and where its bundle comes from."""
    unknown = sorted(set(entry) - {"trust_domain", "jwks_file", "jwks_url"})
    if unknown:
        raise ConfigError(f"trust bundle entry has unknown key `{unknown[0]}`")
    domain = str(entry["trust_domain"])
    return domain, refreshing(entry, base, clock, what=f"the trust bundle of `{domain}`",
                              parse=lambda document: jwt_bundle_from_jwks(domain, document))


def _issuer(entry: Mapping[str, Any], base: Path, clock: Clock) -> OidcIssuer:
    """One ``[[oidc_issuers]]`` table: keys from a JWKS file or URL, loaded again."""
    return OidcIssuer(**issuer_settings(entry, base, also={"subject_template"}, clock=clock),
                      subject_template=entry.get("subject_template"))

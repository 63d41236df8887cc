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

    [[oidc_issuers]]                             # e.g. a Kubernetes cluster, a CI system
    issuer = "https://kubernetes.default.svc"
    audience = "proctor"
    jwks_file = "oidc/cluster.jwks.json"
    algorithms = ["RS256", "ES256"]              # the default
    subject_template = "system:serviceaccount:agents:{name}"

No key set is fetched over the network here: a deployment that wants rotation
refreshes the files (SPIRE's bundle endpoint, the issuer's ``jwks_uri``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from spiffe import JwtBundle, TrustDomain
from spiffe.errors import PySpiffeError

from proctor.documents import read_toml
from proctor.errors import ConfigError
from proctor.identity.jwks import read_jwks, split_jwks

__all__ = [
    "DEFAULT_LEEWAY_SECONDS",
    "MAX_LEEWAY_SECONDS",
    "OidcIssuer",
    "TrustConfig",
    "jwt_bundle_from_jwks",
    "load_trust_config",
]

DEFAULT_LEEWAY_SECONDS = 30
MAX_LEEWAY_SECONDS = 60
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
_CONFIG_FILE = "identity.toml"


@dataclass(frozen=True, slots=True)
class OidcIssuer:
    """An issuer of workload tokens (Kubernetes service accounts, CI runners).

    ``subject_template`` gives the ``sub`` an agent registered without an
    explicit subject is expected to present; ``{name}`` is the agent's name and
    the only placeholder, so the template cannot match more than one subject.
    """

    issuer: str
    audience: str
    keys: KeySet
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    subject_template: str | None = None

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ConfigError("an OIDC issuer needs `issuer` and `audience`")
        bad = [a for a in self.algorithms if a not in OIDC_ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigError(f"OIDC issuer `{self.issuer}`: algorithm `{(bad or [''])[0]}` is "
                              f"not allowed (use {', '.join(OIDC_ALGORITHMS)})")
        if self.subject_template is not None:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.subject_template)
                      if f is not None]
            if fields != ["name"]:
                raise ConfigError(f"OIDC issuer `{self.issuer}`: subject template must contain "
                                  "`{name}` once and no other placeholder")

    def subject_for(self, name: str) -> str | None:
        """The subject the template gives agent ``name``, or None without a template."""
        return self.subject_template.format(name=name) if self.subject_template else None


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """The trust domain, the audience proofs must name, the leeway, bundles and issuers."""

    trust_domain: str
    audience: str = ""
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    bundles: Mapping[str, JwtBundle] = field(default_factory=dict)
    issuers: Mapping[str, OidcIssuer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.audience:
            object.__setattr__(self, "audience", f"spiffe://{self.trust_domain}/proctor")
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ConfigError(f"leeway of {self.leeway_seconds} s is outside 0 to "
                              f"{MAX_LEEWAY_SECONDS} s")

    @classmethod
    def build(cls, trust_domain: str, *, audience: str = "",
              leeway_seconds: int = DEFAULT_LEEWAY_SECONDS, bundles: Iterable[JwtBundle] = (),
              issuers: Iterable[OidcIssuer] = ()) -> TrustConfig:
        """A config from lists of bundles and issuers (keyed by trust domain / issuer)."""
        return cls(trust_domain, audience, leeway_seconds,
                   {b.trust_domain.name: b for b in bundles}, {i.issuer: i for i in issuers})

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
    try:
        return JwtBundle.parse(TrustDomain(trust_domain), json.dumps({"keys": keys}).encode())
    except PySpiffeError as exc:
        raise ConfigError(f"trust bundle of `{trust_domain}` is not valid: {exc}") from exc


def load_trust_config(home: Path, trust_domain: str, env: Mapping[str, str] | None = None
                      ) -> TrustConfig:
    """Read ``identity.toml`` (see the module docstring); no file means no bundles or issuers."""
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
    unknown = sorted(set(data) - {"audience", "leeway_seconds", "trust_bundles", "oidc_issuers"})
    if unknown:
        raise ConfigError(f"identity config `{path}` has unknown key `{unknown[0]}`")
    base = path.parent
    try:
        bundles = [jwt_bundle_from_jwks(str(b["trust_domain"]), read_jwks(base / b["jwks_file"]))
                   for b in data.get("trust_bundles", [])]
        issuers = [_issuer(i, base) for i in data.get("oidc_issuers", [])]
        return TrustConfig.build(trust_domain, audience=str(data.get("audience", "")),
                                 leeway_seconds=int(data.get("leeway_seconds",
                                                             DEFAULT_LEEWAY_SECONDS)),
                                 bundles=bundles, issuers=issuers)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"identity config `{path}` is not valid: missing or wrong {exc}") from exc


def _issuer(entry: Mapping[str, Any], base: Path) -> OidcIssuer:
    unknown = sorted(set(entry) - {"issuer", "audience", "jwks_file", "algorithms",
                                   "subject_template"})
    if unknown:
        raise ConfigError(f"OIDC issuer entry has unknown key `{unknown[0]}`")
    keys = split_jwks(read_jwks(base / entry["jwks_file"]), f"JWKS of `{entry['issuer']}`")
    if len(keys) > 1 and not all(isinstance(k.get("kid"), str) for k in keys):
        raise ConfigError(f"JWKS of `{entry['issuer']}` has several keys, so each needs a `kid`")
    try:
        key_set = KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError) as exc:
        raise ConfigError(f"JWKS of `{entry['issuer']}` is not valid: {exc}") from exc
    return OidcIssuer(
        issuer=str(entry["issuer"]), audience=str(entry["audience"]), keys=key_set,
        algorithms=tuple(entry.get("algorithms", ("RS256", "ES256"))),
        subject_template=entry.get("subject_template"),
    )

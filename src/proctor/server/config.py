"""How the control-plane API runs: limits, background intervals, human sign-in.

Operator configuration, read once at start from ``$PROCTOR_HOME/server.toml``
(or the file named by ``$PROCTOR_SERVER_CONFIG``); no file means the defaults
below and no OIDC issuers (humans then use API tokens such as the admin
token made by ``proctor init``)::

    public_url = "https://proctor.acme.example"  # what DPoP proofs name; needed to listen
                                                 # on anything but loopback (see below)
    max_body_bytes = 1048576                     # larger request bodies get 413
    rate_per_second = 50.0                       # per principal, per process (token bucket)
    rate_burst = 200
    sweep_seconds = 30                           # expired leases and proof nonces
    sync_seconds = 5                             # policies, agents, shadow state from the store
    threads = 16                                 # worker threads per process
    trusted_proxies = ["10.0.0.2"]               # read X-Forwarded-For/-Proto from these
                                                 # (addresses or networks) only; default none
    enforcement_points = ["https://api-gw.acme.example/tools"]  # the URLs agents address
                                                 # whose calls an enforcement point asks
                                                 # POST /v1/decide about; default none

    [[oidc_issuers]]                             # humans: an OIDC provider's ID/access tokens
    issuer = "https://login.acme.example"
    audience = "proctor"
    jwks_file = "oidc/login.jwks.json"           # or jwks_url = "https://login.acme.example/jwks"
    algorithms = ["RS256", "ES256"]
    subject_claim = "email"                      # the human's id (default: sub)
    role_claim = "groups"                        # a list or space-separated string (default: roles)
    roles = { admin = "proctor-admins", approver = "payments-approvers" }  # default: same names

Without ``public_url`` a DPoP proof's ``htu`` is checked against the request's own
scheme and ``Host``, which the caller chooses; so ``proctor serve`` refuses to
listen on anything but loopback without it (:func:`check_listen`). The one way
around is to say why the ``Host`` header is safe, and the server warns at start::

    trust_host_header = "the ingress sets Host to proctor.acme.example on every request"

``enforcement_points``: the URLs (``http(s)://host[:port]/path``, no query) at which
agents address an enforcement point that is not proctor's gateway (an API gateway, a
plug-in), so that ``POST /v1/decide`` and ``POST /v1/grants/check`` accept a call's
``target`` (its proof's ``htu``) equal to one of them or under one (``<point>/…``).
Any other target but the route's own URL is refused ``422 proof_target_unknown``: a
caller could otherwise spend there a proof the agent made for another party.

Without ``trusted_proxies`` the client's address is the peer's: what a decision's
``source_ip`` and its audit event carry and what the per-client rate limit counts.
``X-Forwarded-For`` is read only from the proxies named (:mod:`proctor.listening`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proctor.config import config_number, config_whole_number
from proctor.documents import read_toml
from proctor.errors import ConfigError
from proctor.identity.humans import HumanIssuer, check_human_issuers, issuer_from_config
from proctor.listening import require_public_url, trusted_proxies

__all__ = ["ServerConfig", "check_listen", "load_server_config"]

log = logging.getLogger(__name__)

_CONFIG_FILE = "server.toml"
_TYPES: dict[str, type] = {
    "public_url": str, "trust_host_header": str, "max_body_bytes": int,
    "rate_per_second": float, "rate_burst": int, "sweep_seconds": float,
    "sync_seconds": float, "threads": int}
_KEYS = {*_TYPES, "oidc_issuers", "trusted_proxies", "enforcement_points"}


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``proctor serve`` reads besides :class:`~proctor.config.Settings`."""

    public_url: str = ""
    trust_host_header: str = ""
    max_body_bytes: int = 1024 * 1024
    rate_per_second: float = 50.0
    rate_burst: int = 200
    sweep_seconds: float = 30.0
    sync_seconds: float = 5.0
    threads: int = 16
    oidc_issuers: tuple[HumanIssuer, ...] = field(default_factory=tuple)
    trusted_proxies: tuple[str, ...] = ()
    enforcement_points: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1024 <= self.max_body_bytes <= 64 * 1024 * 1024:
            raise ConfigError("max_body_bytes must be between 1 KiB and 64 MiB")
        if self.rate_per_second <= 0 or self.rate_burst < 1:
            raise ConfigError("rate_per_second must be positive and rate_burst at least 1")
        if self.sweep_seconds <= 0 or self.sync_seconds <= 0:
            raise ConfigError("sweep_seconds and sync_seconds must be positive")
        if not 1 <= self.threads <= 256:
            raise ConfigError("threads must be between 1 and 256")
        if self.public_url and not self.public_url.startswith(("https://", "http://")):
            raise ConfigError(f"public_url `{self.public_url}` is not an http(s) URL")
        if self.public_url and self.trust_host_header:
            raise ConfigError("set `public_url` or `trust_host_header`, not both: with "
                              "`public_url` the Host header is never used")
        for point in self.enforcement_points:
            _check_point(point)
        issuers = [i.issuer for i in self.oidc_issuers]
        if len(set(issuers)) != len(issuers):
            raise ConfigError("an OIDC issuer is configured twice")
        check_human_issuers(self.oidc_issuers)  # when read, not at the first sign-in


def load_server_config(home: Path, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Read ``server.toml`` (see the module docstring); no file gives the defaults."""
    if env is None:
        import os

        env = os.environ
    named = env.get("PROCTOR_SERVER_CONFIG")
    path = Path(named) if named else home / _CONFIG_FILE
    if not path.is_file():
        if named:
            raise ConfigError(f"server config `{path}` does not exist")
        return ServerConfig()
    data = read_toml(path, what="server config", error=ConfigError)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"server config `{path}` has unknown key `{unknown[0]}`")
    where = f"server config `{path}`"
    # each key's type as the file gives it: no `int()` of a string, a float or an infinity
    # (an OverflowError and a traceback), no `float()` of NaN (every check of it passes)
    values: dict[str, Any] = {}
    for key, kind in _TYPES.items():
        if key not in data:
            continue
        value = data[key]
        if kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: `{key}` must be a string")
            values[key] = value
        elif kind is int:
            values[key] = config_whole_number(value, key, where)
        else:
            values[key] = config_number(value, key, where)
    values["public_url"] = values.get("public_url", "").rstrip("/")
    values["trust_host_header"] = values.get("trust_host_header", "").strip()
    values["trusted_proxies"] = trusted_proxies(data.get("trusted_proxies"), where=where)
    points = data.get("enforcement_points", [])
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise ConfigError(f"{where}: `enforcement_points` must be a list of URLs")
    values["enforcement_points"] = tuple(p.rstrip("/") for p in points)
    tables = data.get("oidc_issuers", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where}: `oidc_issuers` must be tables (`[[oidc_issuers]]`)")
    for at, entry in enumerate(tables):
        _check_issuer_types(entry, f"{where}: oidc_issuers[{at}]")
    try:
        issuers = tuple(issuer_from_config(entry, path.parent) for entry in tables)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where} is not valid: missing or wrong {exc}") from exc
    return ServerConfig(**values, oidc_issuers=issuers)


def _check_point(point: str) -> None:
    """Refuse an enforcement point that is not an absolute http(s) URL without query."""
    parts = urlsplit(point)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment or point != point.strip() or point.endswith("/"):
        raise ConfigError(f"enforcement point `{point[:200]}` is not an http(s) URL without "
                          "query or trailing `/`")


# an issuer table's keys as the file gives them: str() of a `true`, a `5` or a list is
# another claim or issuer, and a string of algorithms is a list of its letters
_ISSUER_TEXTS = ("issuer", "audience", "jwks_file", "jwks_url", "subject_claim",
                 "role_claim", "human_claim")
_ISSUER_LISTS = ("algorithms", "id_domains")


def _check_issuer_types(entry: Mapping[str, Any], where: str) -> None:
    for key in _ISSUER_TEXTS:
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise ConfigError(f"{where}: `{key}` must be a non-empty string")
    for key in _ISSUER_LISTS:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: `{key}` must be a list of strings")


def check_listen(config: ServerConfig, host: str) -> None:
    """Refuse (:class:`ConfigError`) to serve on ``host`` if it is not loopback and
    ``public_url`` is not set, unless ``trust_host_header`` says why the request's
    ``Host`` may name the server in DPoP proofs; then warn, loudly, at start."""
    if config.trust_host_header and not config.public_url:
        log.warning("public_url is not set: proctor serve on `%s` checks DPoP proofs against "
                    "the Host header of each request, which trust_host_header says is safe "
                    "because: %s", host, config.trust_host_header)
        return
    require_public_url(host, config.public_url, what="`proctor serve`", where="server.toml")

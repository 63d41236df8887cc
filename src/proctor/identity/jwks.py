"""Key sets (JWKS, RFC 7517 §5) of the issuers proctor trusts: from a file or a URL.

A key set that holds a private or symmetric key is refused outright: trust
configuration has no business holding secrets, and a symmetric key is what
HS256-with-the-public-key confusion needs.

An issuer's keys come from a :class:`KeySource`: :class:`FileKeys`, read from a
JWKS file at start, or :class:`UrlKeys`, the issuer's published JWKS, fetched at
first use, again (at most every 30 s) when a token names a key not seen yet, and
again once the set is five minutes old: a key the issuer withdrew (leaked) stops
verifying then, though whoever holds it never names a key proctor has not seen.
Over ``https`` only (``http`` to this host's loopback address alone): whoever can answer a
fetch in clear text chooses the keys, and with them every token the issuer signs, a
human's sign-in with any role among them.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from proctor.clock import Clock
from proctor.documents import parse_json, read_json
from proctor.errors import ConfigError, IdentityError, ProctorError
from proctor.jose import private_members

__all__ = ["MAX_JWKS_BYTES", "FileKeys", "KeySource", "UrlKeys", "import_key_set", "read_jwks",
           "split_jwks"]

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024
REFETCH_SECONDS = 30.0
MAX_AGE_SECONDS = 300.0  # a key set older than this is fetched again before use


def read_jwks(path: Path) -> dict[str, Any]:
    """A JWKS document from ``path``, at most 256 KiB."""
    document = read_json(path, what="key set", error=ConfigError, max_bytes=MAX_JWKS_BYTES)
    if not isinstance(document, dict):
        raise ConfigError(f"key set `{path}` is not a JWKS object")
    return document


def split_jwks(document: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """The keys of a JWKS document; raise if any is private or symmetric."""
    keys = document.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{what} has no `keys`")
    out: list[dict[str, Any]] = []
    for key in keys:
        if not isinstance(key, dict):
            raise ConfigError(f"{what} has a key that is not a JSON object")
        if key.get("kty") == "oct" or private_members(key):
            raise ConfigError(f"{what} holds a private or symmetric key; "
                              "trust configuration takes public keys only")
        out.append(dict(key))
    return out


def import_key_set(document: Mapping[str, Any], what: str) -> KeySet:
    """The public keys of a JWKS document, each with a ``kid`` if there are several."""
    keys = split_jwks(document, what)
    if len(keys) > 1 and not all(isinstance(k.get("kid"), str) for k in keys):
        raise ConfigError(f"{what} has several keys, so each needs a `kid`")
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigError(f"{what} is not valid: {exc}") from exc


class KeySource(Protocol):
    """Where an issuer's keys come from; ``refresh`` asks for a newer set if one may be had."""

    def key_set(self, *, refresh: bool) -> KeySet: ...


@dataclass(frozen=True, slots=True)
class FileKeys:
    """A fixed key set (read from a JWKS file at start)."""

    keys: KeySet

    def key_set(self, *, refresh: bool) -> KeySet:
        return self.keys


def _loopback_http(url: str) -> bool:
    """Whether ``url`` is plain http to this host's loopback address (a local test
    provider, a sidecar), which no one on the network can answer for."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UrlKeys:
    """The issuer's published JWKS, fetched on first use and on unknown key ids."""

    def __init__(self, url: str, clock: Clock, *, timeout: float = 5.0) -> None:
        if not url.startswith("https://") and not _loopback_http(url):
            raise ConfigError(f"jwks_url `{url[:200]}` is not an https URL (plain http is "
                              "for this host's loopback address only: whoever answers a "
                              "fetch in clear text chooses the issuer's keys)")
        self.url = url
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None

    def key_set(self, *, refresh: bool) -> KeySet:
        with self._lock:
            age = (None if self._fetched_at is None
                   else self._clock.monotonic() - self._fetched_at)
            due = age is None or age >= REFETCH_SECONDS
            if ((self._keys is None or refresh) and due) or (age is not None
                                                              and age >= MAX_AGE_SECONDS):
                self._fetch()
            if self._keys is None:  # never fetched: tried at most every 30 s
                raise IdentityError("proof_key_unknown", "the issuer's key set is not available")
            return self._keys

    def _fetch(self) -> None:
        """Fetch the key set; on any failure keep what was known before."""
        import httpx  # here: its import costs about 0.15 s of CPU, paid only by a fetch

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

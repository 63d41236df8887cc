"""Key sets (JWKS, RFC 7517 §5) of the issuers proctor trusts: from a file or a URL.

A key set that holds a private or symmetric key is refused outright: trust
configuration has no business holding secrets, and a symmetric key is what
HS256-with-the-public-key confusion needs.

An issuer's keys (and a trust domain's JWT-SVID bundle) come from a :class:`Refreshing`
source (:func:`refreshing`): a JWKS file read at start, or the issuer's published JWKS
(``jwks_url``), fetched at first use. Either is loaded again once it is five minutes old
and when a token names a key not seen yet: a key the issuer withdrew (leaked) stops
verifying then, though whoever holds it never names a key proctor has not seen. Loads
are at most one per 30 s per source whatever asks, so tokens naming unknown key ids
cause no fetch storm, and one at a time, outside the source's lock: a slow provider holds
up only the callers that need what is being loaded. A failed load keeps the last good
set, for an hour after it was loaded at most: past that, tokens of the issuer are
refused (``proof_keys_stale``) until a load succeeds, so an issuer that cannot be heard
(an attacker who blocks the fetch) does not keep a withdrawn key working. Over ``https``
only (``http`` to this host's loopback address alone): whoever can answer a fetch in
clear text chooses the keys, and with them every token the issuer signs, a human's
sign-in with any role among them.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from proctor.clock import Clock
from proctor.documents import parse_json, read_json
from proctor.errors import ConfigError, IdentityError
from proctor.jose import private_members

__all__ = ["MAX_AGE_SECONDS", "MAX_JWKS_BYTES", "MAX_STALE_SECONDS", "REFETCH_SECONDS",
           "Fixed", "KeySource", "Refreshing", "Source", "check_jwks_url", "fetch_jwks",
           "import_key_set", "read_jwks", "refreshing", "split_jwks"]

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024
REFETCH_SECONDS = 30.0  # at most one load per source in this time, whatever asks
MAX_AGE_SECONDS = 300.0  # a key set older than this is loaded again before use
MAX_STALE_SECONDS = 3600.0  # a key set not loaded again for this long is not used
_WAIT_SECONDS = 10.0  # the longest a caller waits for another's load of what it needs

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


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


class Source(Protocol[T_co]):
    """Where keys come from; ``refresh`` asks for a newer set if one may be had."""

    def current(self, *, refresh: bool) -> T_co: ...


KeySource = Source[KeySet]  # an OIDC issuer's keys


@dataclass(frozen=True, slots=True)
class Fixed(Generic[T]):
    """Keys that never change (built in code: tests, a caller's own keys)."""

    value: T

    def current(self, *, refresh: bool) -> T:
        return self.value


class Refreshing(Generic[T]):
    """A value loaded from outside proctor (a key set, a trust bundle) and loaded again:
    before use once it is :data:`MAX_AGE_SECONDS` old, and when the caller asks (a token
    names a key not seen yet), but never more than once per :data:`REFETCH_SECONDS`,
    whatever asks. A failed load keeps the last good value until it is
    :data:`MAX_STALE_SECONDS` old, then refuses (``proof_keys_stale``): keys no one can
    confirm are not used for ever. ``initial`` is the value loaded at start, if any (a
    file: its errors are the config's).

    One load runs at a time (single flight), outside the lock: a slow or hanging
    provider (a fetch waits up to 5 s) holds up the caller that loads, and those that
    need what it loads (no value yet, or a key not seen yet), never the callers that
    have a usable value."""

    def __init__(self, load: Callable[[], T], clock: Clock, *, what: str,
                 initial: T | None = None) -> None:
        self._load = load
        self._clock = clock
        self.what = what
        self._lock = threading.Lock()
        self._loaded = threading.Condition(self._lock)  # a load under way has ended
        self._loading = False
        self._value = initial
        now = clock.monotonic()
        self._loaded_at: float | None = now if initial is not None else None
        self._tried_at: float | None = now if initial is not None else None

    def current(self, *, refresh: bool) -> T:
        """The value, loaded again first if it is old or ``refresh`` asks (rate-bounded)."""
        with self._lock:
            now = self._clock.monotonic()
            wanted = (self._loaded_at is None or refresh
                      or now - self._loaded_at >= MAX_AGE_SECONDS)
            loads = wanted and not self._loading and (
                self._tried_at is None or now - self._tried_at >= REFETCH_SECONDS)
            if loads:
                self._tried_at, self._loading = now, True
            elif self._loading and (refresh or self._value is None or self._loaded_at is None
                                    or now - self._loaded_at >= MAX_STALE_SECONDS):
                # what it loads is what this caller needs: wait for it, not for a second
                # load (a fetch gives up after its timeout; the wait, after twice that)
                self._loaded.wait_for(lambda: not self._loading, timeout=_WAIT_SECONDS)
        if loads:
            value = None
            try:
                value = self._try_load()
            finally:  # whatever happens, the callers waiting for it go on
                with self._lock:
                    if value is not None:
                        self._value, self._loaded_at = value, now
                    self._loading = False
                    self._loaded.notify_all()
        with self._lock:
            return self._usable(self._clock.monotonic())

    def _usable(self, now: float) -> T:
        """The value held, unless there is none or it is too old to use."""
        if self._value is None or self._loaded_at is None:
            raise IdentityError("proof_key_unknown", f"{self.what} is not available")
        if now - self._loaded_at >= MAX_STALE_SECONDS:
            raise IdentityError("proof_keys_stale",
                                f"{self.what} could not be loaded again for "
                                f"{int(now - self._loaded_at)} s; its keys are not used "
                                "until it can be")
        return self._value

    def _try_load(self) -> T | None:
        """Load the value; on any failure None (what was known before is kept; the log
        says why)."""
        try:
            return self._load()
        except Exception as exc:
            log.warning("%s cannot be loaded: %s", self.what, type(exc).__name__)
            return None


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


def check_jwks_url(url: str) -> str:
    """``url`` if proctor may fetch keys from it: https, or http to loopback only."""
    if not url.startswith("https://") and not _loopback_http(url):
        raise ConfigError(f"jwks_url `{url[:200]}` is not an https URL (plain http is "
                          "for this host's loopback address only: whoever answers a "
                          "fetch in clear text chooses the issuer's keys)")
    return url


def fetch_jwks(url: str, *, timeout: float = 5.0, clock: Clock | None = None
               ) -> dict[str, Any]:
    """The JWKS document at ``url`` (no redirects, at most 256 KiB); raises on failure.
    ``timeout`` bounds each step (connecting, each read) and, with ``clock``, the whole
    body too: a provider trickling bytes does not hold a load for ever."""
    import httpx  # here: its import costs about 0.15 s of CPU, paid only by a fetch

    started = clock.monotonic() if clock is not None else 0.0
    with httpx.Client(timeout=timeout, follow_redirects=False) as client, \
            client.stream("GET", url) as response:
        response.raise_for_status()
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"the key set is over {MAX_JWKS_BYTES} bytes")
            if clock is not None and clock.monotonic() - started > timeout:
                raise TimeoutError(f"the key set took over {timeout:g} s to arrive")
    document = parse_json(body, what="issuer key set", max_bytes=MAX_JWKS_BYTES)
    if not isinstance(document, dict):
        raise ValueError("the key set is not a JWKS object")
    return document


def refreshing(entry: Mapping[str, Any], base: Path, clock: Clock, *, what: str,
               parse: Callable[[Mapping[str, Any]], T]) -> Refreshing[T]:
    """The keys one config table names, ``parse``d from its JWKS document: its
    ``jwks_file`` (beside the config, at ``base``; read now, so its errors are the
    config's) or its ``jwks_url`` (checked now, fetched at first use); exactly one."""
    if ("jwks_file" in entry) == ("jwks_url" in entry):
        raise ConfigError(f"{what} needs one of jwks_file, jwks_url")
    if "jwks_url" in entry:
        url = check_jwks_url(str(entry["jwks_url"]))
        return Refreshing(lambda: parse(fetch_jwks(url, clock=clock)), clock,
                          what=f"{what} (from {url[:200]})")
    path = base / str(entry["jwks_file"])

    def load() -> T:
        return parse(read_jwks(path))

    return Refreshing(load, clock, what=f"{what} (from {path.name})", initial=load())

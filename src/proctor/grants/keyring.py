"""The issuer's signing keys: ES256, encrypted at rest, rotated with overlap.

One key is current and signs new grants. After a rotation the previous key
keeps verifying until the last grant it signed can have expired
(``verify_until``); then it leaves the JWKS and verifies nothing.

Private keys are stored encrypted with AES-256-GCM under a master key (the key
id is the associated data, so a ciphertext cannot be moved to another row).
The master key comes from ``PROCTOR_MASTER_KEY`` (base64url, 32 bytes) or from
``$PROCTOR_HOME/keys/master.key`` (created with mode 0600 on first use).
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey
from sqlalchemy import insert, select, update

from proctor.clock import Clock
from proctor.errors import ConfigError, GrantError
from proctor.store import Store, as_utc
from proctor.store.tables import issuer_keys

__all__ = ["IssuerKey", "IssuerKeyring", "load_master_key"]

_NONCE_BYTES = 12
REFRESH_SECONDS = 30


def load_master_key(home: Path, env: dict[str, str] | None = None) -> bytes:
    """The key-encryption key, from the environment or the home (created if absent)."""
    env = dict(os.environ) if env is None else env
    if env.get("PROCTOR_MASTER_KEY"):
        raw = env["PROCTOR_MASTER_KEY"]
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except ValueError as exc:
            raise ConfigError("PROCTOR_MASTER_KEY is not base64url") from exc
        if len(key) != 32:
            raise ConfigError("PROCTOR_MASTER_KEY must decode to 32 bytes")
        return key
    path = home / "keys" / "master.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise ConfigError(f"master key file `{path.name}` must hold 32 bytes")
    return key


@dataclass(frozen=True, slots=True)
class IssuerKey:
    kid: str
    key: ECKey
    created_at: datetime
    verify_until: datetime | None

    def public_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": "ES256", "use": "sig"}


class IssuerKeyring:
    """Signing keys in the store, cached in memory after the first read."""

    def __init__(self, store: Store, clock: Clock, master_key: bytes) -> None:
        self._store = store
        self._clock = clock
        self._aead = AESGCM(master_key)
        self._keys: dict[str, IssuerKey] = {}
        self._current: str | None = None
        self._read_at: float | None = None

    def current(self) -> IssuerKey:
        """The key that signs new grants; generated on first use."""
        self._refresh_if_stale()
        if self._current is None:
            self.refresh()
        if self._current is None:
            return self.rotate(max_ttl_seconds=0)
        return self._keys[self._current]

    def verification_key(self, kid: str) -> IssuerKey:
        """The key with id ``kid`` if it may still verify; raises ``grant_unknown_key``."""
        self._refresh_if_stale()
        key = self._keys.get(kid)
        if key is None and self._may_refresh_for_unknown():
            self.refresh()
            key = self._keys.get(kid)
        if key is None or (key.verify_until is not None and key.verify_until < self._clock.now()):
            raise GrantError("grant_unknown_key", f"signing key `{kid}` is unknown or expired")
        return key

    def rotate(self, *, max_ttl_seconds: int) -> IssuerKey:
        """Make a new current key; the old one verifies for ``max_ttl_seconds`` more."""
        now = self._clock.now()
        private = ECKey.generate_key("P-256", private=True)
        kid = private.thumbprint()
        pem = private.as_pem(private=True)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, pem, kid.encode())
        with self._store.transaction() as conn:
            conn.execute(
                update(issuer_keys).where(issuer_keys.c.verify_until.is_(None))
                .values(verify_until=now + timedelta(seconds=max_ttl_seconds))
            )
            conn.execute(insert(issuer_keys).values(
                kid=kid, sealed_key=base64.b64encode(sealed).decode(), created_at=now,
                verify_until=None,
            ))
        self.refresh()
        return self._keys[kid]

    def jwks(self) -> dict[str, Any]:
        """The public keys that may verify a live grant, as a JWK Set."""
        self.refresh()
        now = self._clock.now()
        return {"keys": [k.public_jwk() for k in self._keys.values()
                         if k.verify_until is None or k.verify_until >= now]}

    def _refresh_if_stale(self) -> None:
        """Another node may have rotated: re-read the keys now and then."""
        if self._read_at is None or self._clock.monotonic() - self._read_at > REFRESH_SECONDS:
            self.refresh()

    def _may_refresh_for_unknown(self) -> bool:
        """An unknown key id forces a re-read at most once a second (it costs a query
        and a decryption per key, and anyone can send a token with a made-up kid)."""
        return self._read_at is None or self._clock.monotonic() - self._read_at >= 1.0

    def refresh(self) -> None:
        self._read_at = self._clock.monotonic()
        with self._store.reading() as conn:
            rows = conn.execute(select(issuer_keys).order_by(issuer_keys.c.created_at)).all()
        keys: dict[str, IssuerKey] = {}
        current = None
        for row in rows:
            sealed = base64.b64decode(row.sealed_key)
            try:
                pem = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:],
                                         row.kid.encode())
            except Exception as exc:
                raise ConfigError(
                    f"issuer key `{row.kid}` cannot be decrypted: wrong master key?"
                ) from exc
            until = as_utc(row.verify_until) if row.verify_until else None
            keys[row.kid] = IssuerKey(row.kid, ECKey.import_key(pem), as_utc(row.created_at),
                                      until)
            if until is None:
                current = row.kid
        self._keys, self._current = keys, current

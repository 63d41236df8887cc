"""The issuer's signing keys: ES256, encrypted at rest, rotated with overlap.

One key is current and signs new grants. After a rotation the previous key
keeps verifying until the last grant it signed can have expired
(``verify_until``); then it leaves the JWKS and verifies nothing.

Private keys are stored sealed under the master key (:mod:`proctor.sealing`:
AES-256-GCM, the key id as associated data, so a ciphertext cannot be moved to
another row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import insert, select, update

from proctor.clock import Clock
from proctor.errors import ConfigError, GrantError
from proctor.sealing import Sealer, load_master_key
from proctor.store import Store, as_utc
from proctor.store.tables import issuer_keys

__all__ = ["IssuerKey", "IssuerKeyring", "load_master_key"]

REFRESH_SECONDS = 30


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
        self._sealer = Sealer(master_key)
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
        sealed = self._sealer.seal(pem, context=kid.encode())
        with self._store.transaction() as conn:
            conn.execute(
                update(issuer_keys).where(issuer_keys.c.verify_until.is_(None))
                .values(verify_until=now + timedelta(seconds=max_ttl_seconds))
            )
            conn.execute(insert(issuer_keys).values(
                kid=kid, sealed_key=sealed, created_at=now,
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
            try:
                pem = self._sealer.unseal(row.sealed_key, context=row.kid.encode())
            except ConfigError as exc:
                raise ConfigError(
                    f"issuer key `{row.kid}` cannot be decrypted: wrong master key?"
                ) from exc
            until = as_utc(row.verify_until) if row.verify_until else None
            keys[row.kid] = IssuerKey(row.kid, ECKey.import_key(pem), as_utc(row.created_at),
                                      until)
            if until is None:
                current = row.kid
        self._keys, self._current = keys, current

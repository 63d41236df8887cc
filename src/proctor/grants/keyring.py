"""The issuer's signing keys: ES256, encrypted at rest, rotated with overlap.

One key is current and signs new grants. After a rotation the previous key
keeps verifying until the last grant it signed can have expired
(``verify_until``); then it leaves the JWKS and verifies nothing.

Private keys are stored sealed under the master key (:mod:`proctor.sealing`:
AES-256-GCM, the key id as associated data, so a ciphertext cannot be moved to
another row).

The same keys sign the audit log's checkpoints (:meth:`IssuerKeyring.current_signer`).
Keys are never deleted, so :meth:`IssuerKeyring.checkpoint_verifiers` can check a
checkpoint for as long as it exists, long after its key stopped verifying grants.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import insert, select, update

from proctor.clock import Clock
from proctor.errors import ConfigError, GrantError, SigningKeyError, StoreError
from proctor.jose import thumbprint
from proctor.keys import LocalSigner, PublicKeyVerifier, Verifier, verifiers_for
from proctor.sealing import Sealer, load_master_key
from proctor.store import Store, as_utc
from proctor.store.tables import issuer_keys

__all__ = ["IssuerKey", "IssuerKeyring", "load_master_key"]

REFRESH_SECONDS = 30
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # the verify_until of a key that verifies no grant


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
        # The keys and the current key id, swapped as one value: another thread
        # never sees new keys with an old current id, or the reverse.
        self._state: tuple[dict[str, IssuerKey], str | None] = ({}, None)
        self._read_at: float | None = None
        self._first_use = threading.Lock()

    def current(self) -> IssuerKey:
        """The key that signs new grants; generated on first use."""
        self._refresh_if_stale()
        if self._state[1] is None:
            self.refresh()
        keys, current = self._state
        if current is None:
            return self._first_key()
        return keys[current]

    def _first_key(self) -> IssuerKey:
        """Make the first key. Unlike :meth:`rotate` it retires nothing, so a key
        another thread or node made at the same moment keeps verifying."""
        with self._first_use:
            self.refresh()
            keys, current = self._state
            if current is not None:
                return keys[current]
            return self._add_key(retire_after_seconds=None)

    def current_signer(self) -> LocalSigner:
        """The current key as one immutable signer (a :class:`proctor.keys.SignerSource`).

        Take one per signature: the ``kid`` it writes into a payload is the key
        that signs it, even if another node rotates meanwhile.
        """
        private = self.current().key.private_key
        if private is None:
            raise SigningKeyError("the current issuer key has no private half")
        return LocalSigner(private)

    def checkpoint_verifiers(self) -> dict[str, Verifier]:
        """The public halves of every key the keyring holds, re-read from the store.

        For signed audit checkpoints, which must verify forever: unlike
        :meth:`verification_key` and :meth:`jwks` (grants), ``verify_until`` does
        not apply. The key ids are computed from the keys themselves.
        """
        self.refresh()
        return verifiers_for(PublicKeyVerifier(k.key.public_key)
                             for k in self._state[0].values())

    def retired_row(self, signer: LocalSigner) -> dict[str, Any]:
        """The ``issuer_keys`` row of ``signer``'s key, sealed, as a key that signs nothing
        new and verifies no grant: to insert in a transaction of the caller's (an
        operator's audited import, :mod:`proctor.oversight.key_import`)."""
        return {"kid": signer.kid, "created_at": self._clock.now(), "verify_until": _NEVER,
                "sealed_key": self._sealer.seal(signer.to_pem(), context=signer.kid.encode())}

    def import_retired(self, signer: LocalSigner) -> IssuerKey:
        """Add ``signer``'s key, sealed, as a key that signs nothing new and verifies no
        grant, so that what it signed before (audit checkpoints) still verifies.

        Idempotent: a key the keyring already holds is left as it is. Nothing in proctor
        calls it implicitly: an operator imports a key (``proctor audit import-key``).
        """
        if signer.kid not in self._state[0]:
            self.refresh()
        if signer.kid not in self._state[0]:
            try:
                with self._store.transaction() as conn:
                    conn.execute(insert(issuer_keys).values(**self.retired_row(signer)))
            except StoreError:
                self.refresh()  # another process may have imported it first
                if signer.kid not in self._state[0]:
                    raise
            self.refresh()
        return self._state[0][signer.kid]

    def verification_key(self, kid: str) -> IssuerKey:
        """The key with id ``kid`` if it may still verify; raises ``grant_unknown_key``."""
        self._refresh_if_stale()
        key = self._state[0].get(kid)
        if key is None and self._may_refresh_for_unknown():
            self.refresh()
            key = self._state[0].get(kid)
        if key is None or (key.verify_until is not None and key.verify_until < self._clock.now()):
            raise GrantError("grant_unknown_key", f"signing key `{kid}` is unknown or expired")
        return key

    def rotate(self, *, max_ttl_seconds: int) -> IssuerKey:
        """Make a new current key; the old one verifies for ``max_ttl_seconds`` more."""
        return self._add_key(retire_after_seconds=max_ttl_seconds)

    def _add_key(self, *, retire_after_seconds: int | None) -> IssuerKey:
        now = self._clock.now()
        private = ECKey.generate_key("P-256", private=True)
        kid = thumbprint(private.as_dict(private=False))
        pem = private.as_pem(private=True)
        sealed = self._sealer.seal(pem, context=kid.encode())
        with self._store.transaction() as conn:
            if retire_after_seconds is not None:
                conn.execute(
                    update(issuer_keys).where(issuer_keys.c.verify_until.is_(None))
                    .values(verify_until=now + timedelta(seconds=retire_after_seconds))
                )
            conn.execute(insert(issuer_keys).values(
                kid=kid, sealed_key=sealed, created_at=now,
                verify_until=None,
            ))
        self.refresh()
        return self._state[0][kid]

    def jwks(self) -> dict[str, Any]:
        """The public keys that may verify a live grant, as a JWK Set."""
        self.refresh()
        now = self._clock.now()
        return {"keys": [k.public_jwk() for k in self._state[0].values()
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
        """Re-read every key. The read time is set only once the keys are in place, so
        a concurrent caller never takes an empty key list for a fresh one."""
        started = self._clock.monotonic()
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
        self._state = (keys, current)
        self._read_at = started

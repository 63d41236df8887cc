"""Sealing values at rest under the home's master key (AES-256-GCM).

A sealed value is the base64 of ``nonce (12 bytes) || ciphertext || tag``. The
associated data (``context``) binds it to the place it is stored — an issuer
key's id, a secret's name — so a sealed value copied into another row does not
open there.

The master key comes from ``PROCTOR_MASTER_KEY`` (base64url, 32 bytes) or from
``$PROCTOR_HOME/keys/master.key`` (created with mode 0600 on first use).

>>> sealer = Sealer(bytes(32))
>>> sealed = sealer.seal(b"hunter2", context=b"secret:db")
>>> sealer.unseal(sealed, context=b"secret:db")
b'hunter2'
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proctor.errors import ConfigError
from proctor.jose import b64url_decode

__all__ = ["MASTER_KEY_BYTES", "Sealer", "load_master_key"]

MASTER_KEY_BYTES = 32
_NONCE_BYTES = 12
_TO_URLSAFE = str.maketrans("+/", "-_")


def load_master_key(home: Path, env: dict[str, str] | None = None) -> bytes:
    """The key-encryption key, from the environment or the home (created if absent)."""
    env = dict(os.environ) if env is None else env
    if env.get("PROCTOR_MASTER_KEY"):
        # base64url as documented; padding, surrounding whitespace and the standard
        # alphabet's `+` and `/` are tolerated, any other character is refused
        raw = env["PROCTOR_MASTER_KEY"].strip().rstrip("=").translate(_TO_URLSAFE)
        try:
            key = b64url_decode(raw)
        except ValueError:
            raise ConfigError("PROCTOR_MASTER_KEY is not base64url") from None
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigError("PROCTOR_MASTER_KEY must decode to 32 bytes")
        return key
    path = home / "keys" / "master.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(MASTER_KEY_BYTES))
    key = path.read_bytes()
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(f"master key file `{path.name}` must hold 32 bytes")
    return key


class Sealer:
    """Encrypts and decrypts values under one master key."""

    __slots__ = ("_aead",)

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ConfigError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    def seal(self, plaintext: bytes, *, context: bytes) -> str:
        """``plaintext`` encrypted with a fresh nonce, bound to ``context``, as base64."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context)
        return base64.b64encode(sealed).decode("ascii")

    def unseal(self, sealed: str, *, context: bytes) -> bytes:
        """The plaintext of ``sealed``; raises :class:`ConfigError` when it does not open
        (another master key, another context, or altered bytes)."""
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise ConfigError("sealed value cannot be decrypted: wrong master key?") from exc

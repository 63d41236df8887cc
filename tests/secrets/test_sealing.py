"""Sealing under the master key: what the secret store and the issuer keyring share."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from proctor.errors import ConfigError
from proctor.sealing import Sealer, load_master_key


def test_a_sealed_value_opens_only_with_its_key_and_context() -> None:
    sealer = Sealer(secrets.token_bytes(32))
    sealed = sealer.seal(b"hunter2", context=b"secret:db")
    assert b"hunter2" not in base64.b64decode(sealed)
    assert sealer.unseal(sealed, context=b"secret:db") == b"hunter2"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        sealer.unseal(sealed, context=b"secret:other")
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        Sealer(secrets.token_bytes(32)).unseal(sealed, context=b"secret:db")


def test_sealing_twice_gives_different_ciphertexts() -> None:
    sealer = Sealer(secrets.token_bytes(32))
    assert sealer.seal(b"v", context=b"c") != sealer.seal(b"v", context=b"c")


@pytest.mark.parametrize("sealed", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_garbage_does_not_open(sealed: str) -> None:
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        Sealer(secrets.token_bytes(32)).unseal(sealed, context=b"c")


def test_a_master_key_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        Sealer(b"short")


def test_the_master_key_is_created_once_with_owner_only_access(tmp_path: Path) -> None:
    first = load_master_key(tmp_path, env={})
    assert load_master_key(tmp_path, env={}) == first
    assert (tmp_path / "keys" / "master.key").stat().st_mode & 0o077 == 0
    from_env = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    assert load_master_key(tmp_path, env={"PROCTOR_MASTER_KEY": from_env}) == bytes(range(32))
    with pytest.raises(ConfigError, match="32 bytes"):
        load_master_key(tmp_path, env={"PROCTOR_MASTER_KEY": "c2hvcnQ"})

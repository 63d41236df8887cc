"""A PostgreSQL connection of the store notices a stalled network: libpq's TCP
keepalives and ``tcp_user_timeout`` are set on every connection the pool opens (as
libpq itself reports them), derived from the lock timeout, unless the URL sets them."""

from __future__ import annotations

import pytest

from proctor.store import open_store

pytestmark = pytest.mark.postgres


def _parameters(url: str, lock_timeout: float) -> dict[str, str]:
    store = open_store(url, lock_timeout_seconds=lock_timeout)
    try:
        proxy = store.engine.raw_connection()
        try:
            connection = proxy.driver_connection
            assert connection is not None
            return dict(connection.info.get_parameters())
        finally:
            proxy.close()
    finally:
        store.engine.dispose()


def test_every_connection_carries_keepalives_and_a_tcp_user_timeout_from_the_lock_timeout(
        postgres_url: str) -> None:
    parameters = _parameters(postgres_url, 4.5)
    assert {name: parameters.get(name) for name in (
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout")} == {"keepalives": "1", "keepalives_idle": "5",
                                 "keepalives_interval": "2", "keepalives_count": "3",
                                 "tcp_user_timeout": "9000"}


def test_a_bound_the_url_sets_is_kept(postgres_url: str) -> None:
    separator = "&" if "?" in postgres_url else "?"
    parameters = _parameters(f"{postgres_url}{separator}keepalives_idle=77&tcp_user_timeout=1234",
                             2)
    assert parameters.get("keepalives_idle") == "77"
    assert parameters.get("tcp_user_timeout") == "1234"
    assert parameters.get("keepalives_interval") == "1"

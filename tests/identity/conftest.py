"""A registry on each database, with a trust bundle and an OIDC issuer generated per test
(the issuer's RSA key made once per worker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from proctor.clock import FrozenClock, SystemClock
from proctor.identity import AgentRegistry, Authenticator, TrustConfig
from proctor.store import open_store

from .factories import AUDIENCE, TRUST_DOMAIN, OidcAuthority, SvidAuthority


@pytest.fixture
def wall_clock() -> FrozenClock:
    """A frozen clock at the wall-clock time the test starts.

    The spiffe package checks a JWT-SVID's ``exp`` against the system clock, so
    tokens that must pass it are made at the real time; proctor's own checks
    still use this frozen clock, which tests move.
    """
    return FrozenClock(SystemClock().now().replace(microsecond=0))


@pytest.fixture
def svid_authority() -> SvidAuthority:
    return SvidAuthority()


@pytest.fixture(scope="session")
def oidc_signing_key() -> RSAKey:
    """The RSA key of the tests' OIDC issuer, made once per worker: making one takes about
    50 ms, and most tests that open a registry never sign with it. A test that needs a
    key no other test has makes its own (``OidcAuthority()``)."""
    return RSAKey.generate_key(2048)


@pytest.fixture
def oidc_authority(oidc_signing_key: RSAKey) -> OidcAuthority:
    return OidcAuthority(key=oidc_signing_key)


@pytest.fixture
def trust(svid_authority: SvidAuthority, oidc_authority: OidcAuthority) -> TrustConfig:
    return TrustConfig.build(
        TRUST_DOMAIN, audience=AUDIENCE, bundles=[svid_authority.bundle()],
        issuers=[oidc_authority.config("system:serviceaccount:agents:{name}")],
    )


@pytest.fixture
def registry(database_url: str, wall_clock: FrozenClock, trust: TrustConfig
             ) -> Iterator[AgentRegistry]:
    store = open_store(database_url)
    try:
        yield AgentRegistry(store, wall_clock, trust)
    finally:
        store.close()


@pytest.fixture
def authenticator(registry: AgentRegistry, wall_clock: FrozenClock) -> Authenticator:
    return Authenticator(registry, clock=wall_clock)


@pytest.fixture
def p256_key() -> ECKey:
    return ECKey.generate_key("P-256")


@pytest.fixture
def ed25519_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def snapshot(registry: AgentRegistry) -> list[dict[str, Any]]:
    """Everything the registry holds, to show a refused input changed nothing."""
    return [agent.as_json() for agent in registry.list_agents()]

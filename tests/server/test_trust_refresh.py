"""Agents' trust bundles and workload issuers' keys are loaded again while proctor runs:
a key the trust domain or issuer withdrew stops signing agents in, a set that cannot be
loaded again is used for an hour at most, and unknown key ids cause no fetch storm."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from proctor.clock import FrozenClock
from proctor.config import Settings
from proctor.identity import JwtSvidProof, OidcProof
from proctor.runtime import Runtime, open_runtime
from tests.identity.factories import OidcAuthority, SvidAuthority, manifest, public_jwk

from .conftest import BASE_URL, make_app
from .test_authentication import assert_problem
from .test_oidc_humans import Provider, bearer, provider  # noqa: F401 - the JWKS endpoint

pytestmark = pytest.mark.anyio

AGENT = "spiffe://acme.example/agent/coder"
HELPER = "spiffe://acme.example/agent/helper"


@dataclass
class Home:
    """The identity.toml of a node: two JWT-SVID authorities and two workload keys."""

    settings: Settings
    old: SvidAuthority
    new: SvidAuthority
    cluster: OidcAuthority
    rotated: OidcAuthority

    def write(self, *, svids: list[SvidAuthority], oidc: list[OidcAuthority]) -> None:
        home = self.settings.home
        (home / "bundle.json").write_text(json.dumps({"keys": [
            {**public_jwk(a.key), "kid": a.kid, "use": "jwt-svid"} for a in svids]}))
        (home / "cluster.jwks.json").write_text(json.dumps({"keys": [
            {**public_jwk(a.key), "kid": a.kid, "use": "sig"} for a in oidc]}))


@pytest.fixture
def home(settings: Settings) -> Home:
    made = Home(settings, SvidAuthority(kid="authority-1"),
                SvidAuthority(kid="authority-2", key=ECKey.generate_key("P-256")),
                OidcAuthority(kid="cluster-key-1"),
                OidcAuthority(kid="cluster-key-2", key=RSAKey.generate_key(2048)))
    made.write(svids=[made.old, made.new], oidc=[made.cluster, made.rotated])
    (settings.home / "identity.toml").write_text(
        '[[trust_bundles]]\ntrust_domain = "acme.example"\njwks_file = "bundle.json"\n\n'
        f'[[oidc_issuers]]\nissuer = "{made.cluster.issuer}"\n'
        f'audience = "{made.cluster.audience}"\njwks_file = "cluster.jwks.json"\n')
    return made


@pytest.fixture
def node(settings: Settings, home: Home, frozen: FrozenClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, clock=frozen)
    try:
        runtime.registry.register(AGENT, owner="bob@acme.example", proof=JwtSvidProof(),
                                  manifest=manifest())
        runtime.registry.register(HELPER, owner="bob@acme.example",
                                  proof=OidcProof(issuer=home.cluster.issuer, subject="helper"),
                                  manifest=manifest())
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
async def client(node: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = make_app(node)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as http:
        yield http


async def whoami(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/whoami", headers=bearer(token))


async def test_a_key_the_trust_domain_or_issuer_withdrew_stops_signing_agents_in(
        client: httpx.AsyncClient, home: Home, frozen: FrozenClock) -> None:
    # A leaked JWT-SVID authority and a leaked workload-token key are taken out of the
    # trust bundle and the issuer's key set (the files are rotated, as SPIRE's bundle
    # endpoint or the issuer's jwks_uri say). They were read at start only: the leaked
    # keys signed the agents in until a restart (found by review). They are loaded
    # again once five minutes old now.
    assert (await whoami(client, home.old.svid(AGENT, frozen.now()))).json()["id"] == AGENT
    assert (await whoami(client, home.cluster.token("helper", frozen.now()))
            ).json()["id"] == HELPER
    home.write(svids=[home.new], oidc=[home.rotated])
    frozen.advance(seconds=301)
    now = frozen.now()
    assert_problem(await whoami(client, home.old.svid(AGENT, now)), 401, "proof_key_unknown")
    assert_problem(await whoami(client, home.cluster.token("helper", now)), 401,
                   "proof_key_unknown")
    assert (await whoami(client, home.new.svid(AGENT, now))).json()["id"] == AGENT
    assert (await whoami(client, home.rotated.token("helper", now))).json()["id"] == HELPER


async def test_a_token_signed_in_before_its_key_was_withdrawn_stops_signing_in(
        client: httpx.AsyncClient, home: Home, frozen: FrozenClock) -> None:
    # Whoever holds a leaked authority or workload key mints tokens that live long (no
    # lifetime is imposed on JWT-SVIDs or workload tokens) and signs in with each once
    # before the key is withdrawn. The API remembered a verified workload proof until
    # it expired, without asking whether its key was still trusted: those tokens kept
    # signing the agents in for as long as they said (found by review). A remembered
    # proof is verified again once it is a minute old now.
    now = frozen.now()
    svid = home.old.svid(AGENT, now, ttl=86400)
    workload = home.cluster.token("helper", now, ttl=86400)
    for token, agent in ((svid, AGENT), (workload, HELPER)):
        assert (await whoami(client, token)).json()["id"] == agent
    home.write(svids=[home.new], oidc=[home.rotated])
    frozen.advance(seconds=301)  # the sets are loaded again: the keys are gone
    for token in (svid, workload):
        assert_problem(await whoami(client, token), 401, "proof_key_unknown")


async def test_a_key_set_that_cannot_be_loaded_again_is_used_for_an_hour_at_most(
        client: httpx.AsyncClient, home: Home, frozen: FrozenClock) -> None:
    # The bundle file turns unreadable (a half-written rotation, a broken sync): the
    # last good bundle is kept, for an hour after it was loaded; then the trust domain's
    # JWT-SVIDs are refused with their own code until a load succeeds again.
    (home.settings.home / "bundle.json").write_text("{")
    frozen.advance(seconds=301)
    assert (await whoami(client, home.old.svid(AGENT, frozen.now()))).status_code == 200
    frozen.advance(seconds=3300)
    assert_problem(await whoami(client, home.old.svid(AGENT, frozen.now())), 401,
                   "proof_keys_stale")
    home.write(svids=[home.old], oidc=[home.cluster])
    frozen.advance(seconds=31)
    assert (await whoami(client, home.old.svid(AGENT, frozen.now()))).status_code == 200


async def test_unknown_key_ids_cause_no_fetch_storm_and_a_fetched_set_is_used(
        settings: Settings, provider: Provider, frozen: FrozenClock) -> None:  # noqa: F811
    # An agents' issuer may publish its keys (jwks_url) now; tokens naming key ids the
    # issuer never had fetch the set again at most once per 30 s, whatever their number.
    (settings.home / "identity.toml").write_text(
        f'[[oidc_issuers]]\nissuer = "https://login.acme.example"\naudience = "proctor-api"\n'
        f'jwks_url = "{provider.url}"\n')
    runtime = open_runtime(settings, clock=frozen)
    try:
        runtime.registry.register(HELPER, owner="bob@acme.example",
                                  proof=OidcProof(issuer="https://login.acme.example",
                                                  subject="helper"), manifest=manifest())
        app, _ = make_app(runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE_URL) as http:
            now = int(frozen.now().timestamp())
            assert (await whoami(http, provider.token(now, sub="helper"))).json()["id"] == HELPER
            assert provider.fetches == 1
            stranger = RSAKey.generate_key(2048)
            for n in range(10):
                assert_problem(await whoami(http, provider.token(
                    now, sub="helper", kid=f"guess-{n}", key=stranger)), 401, "proof_key_unknown")
            assert provider.fetches == 1
            frozen.advance(seconds=31)
            assert_problem(await whoami(http, provider.token(
                int(frozen.now().timestamp()), sub="helper", kid="guess-x", key=stranger)),
                401, "proof_key_unknown")
            assert provider.fetches == 2
    finally:
        runtime.close()


def test_the_config_refuses_a_bundle_with_two_sources_or_unknown_keys(
        settings: Settings, home: Home, frozen: FrozenClock) -> None:
    from proctor.errors import ConfigError
    from proctor.identity import load_trust_config

    path: Path = settings.home / "identity.toml"
    for table in ('jwks_file = "bundle.json"\njwks_url = "https://spire.acme.example/b"\n',
                  'jwks_url = "http://spire.acme.example/b"\n',
                  'jwks_file = "bundle.json"\nrefresh = 0\n'):
        path.write_text(f'[[trust_bundles]]\ntrust_domain = "acme.example"\n{table}')
        with pytest.raises(ConfigError):
            load_trust_config(settings.home, "acme.example", env={}, clock=frozen)

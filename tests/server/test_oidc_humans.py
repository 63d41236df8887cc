"""Humans signing in with an OIDC provider's tokens: keys from the provider's JWKS URL
(served here by a real local HTTP server), id and roles from configurable claims."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from proctor.audit import ActorType, EventFilter, search_events
from proctor.clock import FrozenClock
from proctor.config import Settings
from proctor.errors import RequestError
from proctor.identity import OidcProof
from proctor.identity.humans import issuer_from_config
from proctor.runtime import Runtime, open_runtime
from proctor.server import ApiTokens, ServerConfig, create_app
from tests.identity.factories import manifest, sign

from .conftest import BASE_URL, make_app
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

ISSUER = "https://login.acme.example"


@dataclass
class Provider:
    """An OIDC provider: signing keys, and a JWKS endpoint on 127.0.0.1."""

    keys: dict[str, RSAKey] = field(default_factory=lambda: {"k1": RSAKey.generate_key(2048)})
    fetches: int = 0
    url: str = ""
    status: int = 200
    served: bytes | None = None  # what the JWKS endpoint answers instead of the keys

    def jwks(self) -> bytes:
        self.fetches += 1
        if self.served is not None:
            return self.served
        return json.dumps({"keys": [{**k.as_dict(private=False), "kid": kid, "use": "sig"}
                                    for kid, k in self.keys.items()]}).encode()

    def token(self, now: int, *, kid: str = "k1", key: RSAKey | None = None,
              **claims: Any) -> str:
        body = {"iss": ISSUER, "aud": "proctor-api", "sub": "00u1", "iat": now, "exp": now + 300,
                "email": "erin@acme.example", "groups": ["proctor-admins"], **claims}
        return sign(key or self.keys[kid], "RS256", {k: v for k, v in body.items()
                                                     if v is not None}, kid=kid)


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = provider.jwks()
            self.send_response(provider.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider.url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    yield provider
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
async def client(runtime: Runtime, provider: Provider, frozen: FrozenClock
                 ) -> AsyncIterator[httpx.AsyncClient]:
    issuer = issuer_from_config({
        "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
        "algorithms": ["RS256"], "subject_claim": "email", "role_claim": "groups",
        "roles": {"admin": "proctor-admins", "approver": "payments-approvers"},
    }, Path(), frozen)
    app, _ = make_app(runtime, ServerConfig(oidc_issuers=(issuer,)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_human_signs_in_with_the_roles_the_provider_grants(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    now = int(frozen.now().timestamp())
    me = await client.get("/v1/whoami", headers=bearer(provider.token(now)))
    assert me.json() == {"type": "human", "id": "erin@acme.example", "roles": ["admin"],
                         "method": "oidc", "owner": None}
    dave = provider.token(now, email="dave@acme.example", groups=["payments-approvers",
                                                                   "staff"])
    assert (await client.get("/v1/whoami", headers=bearer(dave))).json()["roles"] == [
        "approver"]
    assert (await client.get("/v1/agents", headers=bearer(dave))).status_code == 200
    assert provider.fetches == 1


async def test_a_human_is_known_by_the_canonical_form_of_the_providers_id(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    now = int(frozen.now().timestamp())
    for spelling in ("Erin@ACME.example", "\uff25rin@acme.example"):  # full-width E
        me = await client.get("/v1/whoami", headers=bearer(provider.token(now, email=spelling)))
        assert me.json()["id"] == "erin@acme.example"
    for hidden in ("erin\u200d@acme.example", "\u0435rin@acme.example"):  # Cyrillic e
        refused = await client.get("/v1/whoami",
                                   headers=bearer(provider.token(now, email=hidden)))
        assert_problem(refused, 401, "proof_claims_invalid")


async def test_a_human_without_a_mapped_role_is_authenticated_but_refused(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock,
        runtime: Runtime) -> None:
    token = provider.token(int(frozen.now().timestamp()), email="mallory@acme.example",
                           groups=["staff"])
    assert (await client.get("/v1/whoami", headers=bearer(token))).json()["roles"] == []
    assert_problem(await client.get("/v1/agents", headers=bearer(token)), 403, "forbidden")
    refused = search_events(runtime.store, EventFilter(actor_type=ActorType.HUMAN))
    assert [(e.event["actor"]["id"], e.event["outcome"]) for e in refused] == [
        ("mallory@acme.example", "refused")]


async def test_bad_provider_tokens_get_their_specific_codes(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    now = int(frozen.now().timestamp())
    impostor = RSAKey.generate_key(2048)
    cases = [
        (provider.token(now, key=impostor), "proof_invalid_signature"),
        (provider.token(now, exp=now - 60), "proof_expired"),
        (provider.token(now, email="spiffe://acme.example/agent/coder"), "proof_claims_invalid"),
        # a human named as the system would have their actions recorded as the system's
        (provider.token(now, email="system:oversight"), "proof_claims_invalid"),
        # the id of `proctor init`'s admin token, in any spelling: its holder's alone
        (provider.token(now, email="local-admin"), "proof_claims_invalid"),
        (provider.token(now, email="Local-Admin"), "proof_claims_invalid"),
        (provider.token(now, email=None), "proof_claims_invalid"),
        (provider.token(now, kid="k9", key=impostor), "proof_key_unknown"),
        (provider.token(now, iss="https://other.example"), "proof_wrong_issuer"),
    ]
    for token, code in cases:
        assert_problem(await client.get("/v1/whoami", headers=bearer(token)), 401, code)
    # an unknown key id refetches the key set at most every 30 seconds
    assert provider.fetches == 1


async def test_a_provider_token_whose_audience_is_not_text_or_a_list_is_a_401_not_a_500(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    now = int(frozen.now().timestamp())
    for audience in (5, 1.5, True, {"proctor-api": 1}):
        token = provider.token(now, aud=audience)
        assert_problem(await client.get("/v1/whoami", headers=bearer(token)), 401,
                       "proof_wrong_issuer")  # not for this audience: not a sign-in token


async def test_a_rotated_provider_key_is_picked_up_from_the_jwks_url(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    now = int(frozen.now().timestamp())
    assert (await client.get("/v1/whoami", headers=bearer(provider.token(now)))
            ).status_code == 200
    provider.keys["k2"] = RSAKey.generate_key(2048)
    rotated = provider.token(now, kid="k2")
    assert_problem(await client.get("/v1/whoami", headers=bearer(rotated)), 401,
                   "proof_key_unknown")
    frozen.advance(seconds=31)
    assert (await client.get("/v1/whoami", headers=bearer(rotated))).status_code == 200
    assert provider.fetches == 2


async def test_a_failing_provider_refuses_sign_in_and_is_not_hammered(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    provider.status = 503
    token = provider.token(int(frozen.now().timestamp()))
    for _ in range(3):
        assert_problem(await client.get("/v1/whoami", headers=bearer(token)), 401,
                       "proof_key_unknown")
    assert provider.fetches == 1  # tried again at most every 30 s
    provider.status = 200
    frozen.advance(seconds=31)
    assert (await client.get("/v1/whoami", headers=bearer(token))).status_code == 200
    assert provider.fetches == 2


async def test_a_provider_key_set_nested_too_deep_refuses_sign_in_and_is_not_a_500(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    provider.served = b'{"keys": ' + b"[" * 6000 + b"]" * 6000 + b"}"
    token = provider.token(int(frozen.now().timestamp()))
    assert_problem(await client.get("/v1/whoami", headers=bearer(token)), 401,
                   "proof_key_unknown")
    provider.served = None
    frozen.advance(seconds=31)
    assert (await client.get("/v1/whoami", headers=bearer(token))).status_code == 200


async def test_an_agents_workload_token_never_signs_in_as_a_human(
        settings: Settings, provider: Provider, frozen: FrozenClock) -> None:
    # One provider for people and for workloads, with one audience (Entra ID, Okta):
    # the agent registered for subject `svc-deployer` of the issuer presents its own
    # workload token, which carries a role claim (an app role given to the workload).
    # It is the agent's token: never a human's sign-in, whatever roles it carries
    # (found by review: it signed in as the human `svc-deployer`, an approver).
    jwks = settings.home / "provider.jwks.json"
    jwks.write_text(json.dumps({"keys": [{**provider.keys["k1"].as_dict(private=False),
                                          "kid": "k1", "use": "sig"}]}))
    (settings.home / "identity.toml").write_text(
        f'[[oidc_issuers]]\nissuer = "{ISSUER}"\naudience = "proctor-api"\n'
        f'jwks_file = "{jwks.name}"\n')
    runtime = open_runtime(settings, clock=frozen)
    try:
        runtime.registry.register(
            "spiffe://acme.example/agent/deployer", owner="bob@acme.example",
            proof=OidcProof(issuer=ISSUER, subject="svc-deployer"), manifest=manifest())
        issuer = issuer_from_config({
            "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
            "algorithms": ["RS256"], "roles": {"approver": "approver"}}, Path(), frozen)
        app, _ = make_app(runtime, ServerConfig(oidc_issuers=(issuer,)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE_URL) as http:
            now = int(frozen.now().timestamp())
            workload = provider.token(now, sub="svc-deployer", email=None, groups=None,
                                      roles=["approver"])
            assert_problem(await http.get("/v1/whoami", headers=bearer(workload)), 401,
                           "proof_claims_invalid")
            assert_problem(await http.get("/v1/approvals", headers=bearer(workload)), 401,
                           "proof_claims_invalid")
            person = provider.token(now, sub="dave@acme.example", roles=["approver"])
            me = await http.get("/v1/whoami", headers=bearer(person))
            assert (me.json()["type"], me.json()["id"], me.json()["roles"]) == (
                "human", "dave@acme.example", ["approver"])
    finally:
        runtime.close()


async def test_a_token_another_client_was_given_never_signs_in_as_its_human(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    # A provider may list several audiences in one token (an audience mapper adding
    # `proctor-api` to the tokens of the team's dashboard). The dashboard, or whoever it
    # hands its token on to, then signed in to proctor as the human, an admin here
    # (found by review). OIDC Core 3.1.3.7: with several audiences, the token is ours
    # only if it was issued to us (`azp`).
    now = int(frozen.now().timestamp())
    for azp, aud in ((None, ["dashboard", "proctor-api"]), ("dashboard", ["proctor-api", "x"]),
                     (None, ["proctor-api", {"not": "text"}])):
        shared = provider.token(now, aud=aud, azp=azp)
        assert_problem(await client.get("/v1/whoami", headers=bearer(shared)), 401,
                       "proof_wrong_audience")
        assert_problem(await client.get("/v1/agents", headers=bearer(shared)), 401,
                       "proof_wrong_audience")
    ours = provider.token(now, aud=["dashboard", "proctor-api"], azp="proctor-api")
    assert (await client.get("/v1/whoami", headers=bearer(ours))).json()["id"] == \
        "erin@acme.example"
    # one audience, ours: an access token for proctor's API that a client (a CLI) asked
    # for carries that client as `azp`, and is ours
    for token in (provider.token(now, aud=["proctor-api", "proctor-api"]),
                  provider.token(now, aud="proctor-api", azp="proctor-cli")):
        assert (await client.get("/v1/whoami", headers=bearer(token))).status_code == 200


async def test_an_email_the_provider_has_not_verified_never_names_a_human(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    # The human's id is the `email` claim here. A provider that lets a user set an
    # address it has not verified says so (`email_verified: false`); such a token named
    # whoever's address the user typed: Bob, an approver, signed in as Erin and approved
    # his own agent's calls as someone else (found by review; the "nOAuth" class).
    now = int(frozen.now().timestamp())
    for unverified in (False, "false", "FALSE"):
        token = provider.token(now, email_verified=unverified, groups=["payments-approvers"])
        assert_problem(await client.get("/v1/whoami", headers=bearer(token)), 401,
                       "proof_claims_invalid")
    for verified in (True, "true", None):  # a provider that never says is unchanged
        token = provider.token(now, email_verified=verified)
        assert (await client.get("/v1/whoami", headers=bearer(token))).json()["id"] == \
            "erin@acme.example"


async def test_a_key_the_provider_withdrew_stops_signing_humans_in(
        client: httpx.AsyncClient, provider: Provider, frozen: FrozenClock) -> None:
    # The provider takes a leaked key out of its key set (its other key stays). The key
    # set was fetched again only for a key id not seen yet, which whoever holds the
    # leaked key never sends: its tokens signed anyone in, with any role, until a restart
    # (found by review). A key set is now fetched again once it is five minutes old.
    provider.keys["k2"] = RSAKey.generate_key(2048)
    now = int(frozen.now().timestamp())
    assert (await client.get("/v1/whoami", headers=bearer(provider.token(now)))
            ).status_code == 200
    leaked = provider.keys.pop("k1")
    frozen.advance(seconds=301)
    now = int(frozen.now().timestamp())
    forged = provider.token(now, key=leaked, groups=["proctor-admins"])
    assert_problem(await client.get("/v1/whoami", headers=bearer(forged)), 401,
                   "proof_key_unknown")
    assert (await client.get("/v1/whoami", headers=bearer(provider.token(now, kid="k2")))
            ).status_code == 200
    assert provider.fetches == 2


async def test_an_unregistered_workloads_token_never_signs_in_as_a_human(
        settings: Settings, provider: Provider, frozen: FrozenClock) -> None:
    # One provider for people and workloads, one audience. A workload no agent is
    # registered for asks for a token with its client credentials; the provider gives
    # the application's roles (an app role `approver`). It signed in as the human named
    # by its client id, an approver (found by review; 85e3852 refused registered agents'
    # tokens only). Tokens that say they are an application's are refused now, as the
    # common providers write them, and `human_claim` lets a deployer name a claim only
    # people's tokens carry.
    issuer = issuer_from_config({
        "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
        "algorithms": ["RS256"], "roles": {"approver": "approver"}}, Path(), frozen)
    runtime = open_runtime(settings, clock=frozen)
    try:
        app, _ = make_app(runtime, ServerConfig(oidc_issuers=(issuer,)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE_URL) as http:
            now = int(frozen.now().timestamp())
            app_only: dict[str, Any] = {"email": None, "groups": None, "roles": ["approver"]}
            for claims in ({"sub": "5f1c-oid", "idtyp": "app", "oid": "5f1c-oid"},  # Entra
                           {"sub": "0oa9client", "cid": "0oa9client"},  # Okta
                           {"sub": "ci-bot@clients", "azp": "ci-bot",  # Auth0
                            "gty": "client-credentials"},
                           {"sub": "payments-svc", "client_id": "payments-svc"},  # RFC 9068
                           {"sub": "8d0e-uuid", "azp": "ci",  # Keycloak
                            "preferred_username": "service-account-ci"}):
                workload = provider.token(now, **{**app_only, **claims})
                assert_problem(await http.get("/v1/approvals", headers=bearer(workload)), 401,
                               "proof_claims_invalid")
            person = provider.token(now, sub="dave@acme.example", azp="proctor-cli",
                                    preferred_username="dave", roles=["approver"])
            me = await http.get("/v1/whoami", headers=bearer(person))
            assert (me.json()["type"], me.json()["id"], me.json()["roles"]) == (
                "human", "dave@acme.example", ["approver"])
        strict = issuer_from_config({
            "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
            "algorithms": ["RS256"], "roles": {"approver": "approver"},
            "human_claim": "email"}, Path(), frozen)
        app = create_app(runtime, ServerConfig(oidc_issuers=(strict,)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE_URL) as http:
            now = int(frozen.now().timestamp())
            unmarked = provider.token(now, sub="svc-7", email=None, roles=["approver"])
            assert_problem(await http.get("/v1/whoami", headers=bearer(unmarked)), 401,
                           "proof_claims_invalid")
            person = provider.token(now, sub="dave@acme.example", roles=["approver"])
            assert (await http.get("/v1/whoami", headers=bearer(person))).status_code == 200
    finally:
        runtime.close()


async def test_two_human_issuers_never_name_the_same_human(
        runtime: Runtime, settings: Settings, provider: Provider, frozen: FrozenClock) -> None:
    # Two providers sign humans in (the company's, a partner's). A human was their id
    # alone: the partner's `erin@acme.example` was the company's Erin, owner and
    # approver alike (found by review). With several human issuers each now names the
    # email domains its people are in, no domain twice, and a token naming anyone else
    # is refused.
    from proctor.errors import ConfigError
    from proctor.identity.humans import HumanVerifier

    partner = RSAKey.generate_key(2048)
    jwks = settings.home / "partner.jwks.json"
    jwks.write_text(json.dumps({"keys": [{**partner.as_dict(private=False), "kid": "p1",
                                          "use": "sig"}]}))

    def issuers(ours: list[str] | None, theirs: list[str] | None) -> tuple[Any, Any]:
        common = {"audience": "proctor-api", "algorithms": ["RS256"],
                  "subject_claim": "email", "role_claim": "groups",
                  "roles": {"admin": "proctor-admins"}}
        return (issuer_from_config({"issuer": ISSUER, "jwks_url": provider.url, **common,
                                    **({"id_domains": ours} if ours else {})},
                                   Path(), frozen),
                issuer_from_config({"issuer": "https://partner.example", "jwks_file":
                                    jwks.name, **common,
                                    **({"id_domains": theirs} if theirs else {})},
                                   settings.home, frozen))

    for ours, theirs in ((None, None), (["acme.example"], None),
                         (["acme.example"], ["partner.example", "Acme.example"])):
        with pytest.raises(ConfigError):
            HumanVerifier(issuers(ours, theirs))
    app, _ = make_app(runtime, ServerConfig(oidc_issuers=issuers(["acme.example"],
                                                                 ["partner.example"])))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as http:
        now = int(frozen.now().timestamp())
        body = {"iss": "https://partner.example", "aud": "proctor-api", "sub": "p-9",
                "iat": now, "exp": now + 300, "groups": ["proctor-admins"]}
        erin = sign(partner, "RS256", {**body, "email": "erin@acme.example"}, kid="p1")
        assert_problem(await http.get("/v1/whoami", headers=bearer(erin)), 401,
                       "proof_claims_invalid")
        pat = sign(partner, "RS256", {**body, "email": "pat@partner.example"}, kid="p1")
        assert (await http.get("/v1/whoami", headers=bearer(pat))).json()["id"] == \
            "pat@partner.example"
        assert (await http.get("/v1/whoami", headers=bearer(provider.token(now)))
                ).json()["id"] == "erin@acme.example"
        for outside in ("pat@partner.example", "acme.example", "@acme.example"):
            outsider = provider.token(now, email=outside)  # not an address in its domains
            assert_problem(await http.get("/v1/whoami", headers=bearer(outsider)), 401,
                           "proof_claims_invalid")


async def test_an_api_token_for_a_human_outside_the_issuers_domains_never_signs_in(
        runtime: Runtime, provider: Provider, frozen: FrozenClock) -> None:
    """Where the human issuers declare their people's domains, an API token naming a
    human outside them is refused at each use, however it was made (by a library caller
    that named no issuers, or before the domains were declared): that human would share
    the namespace of the people a provider vouches for. The bootstrap admin's works."""
    issuer = issuer_from_config({
        "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
        "algorithms": ["RS256"], "subject_claim": "email", "role_claim": "groups",
        "roles": {"admin": "proctor-admins"}, "id_domains": ["acme.example"],
    }, Path(), frozen)
    app, admin = make_app(runtime, ServerConfig(oidc_issuers=(issuer,)))  # proctor init's
    tokens = ApiTokens(runtime.store, runtime.clock)
    outside = tokens.create("erin@evil.example", {"admin"}, issuers=())
    inside = tokens.create("dave@acme.example", {"auditor"}, issuers=())
    with pytest.raises(RequestError) as refused:
        tokens.create("erin@evil.example", {"admin"}, issuers=(issuer,))
    assert "id_domains" in refused.value.message
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as http:
        refused_use = await http.get("/v1/whoami", headers=bearer(outside.token))
        assert_problem(refused_use, 401, "api_token_invalid")
        assert "id_domains" in refused_use.json()["detail"]
        for token, human in ((inside.token, "dave@acme.example"), (admin, "local-admin")):
            me = await http.get("/v1/whoami", headers=bearer(token))
            assert me.status_code == 200, me.text
            assert me.json()["id"] == human

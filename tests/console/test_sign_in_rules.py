"""An open console session is held to today's sign-in rules at each request, by the check
the API makes of its human at each use (``RequestAuthenticator.human_refusal``): one
opened with an API token for a human outside the human issuers' ``id_domains``, or with a
provider's token for a person the rules refuse now (the bootstrap admin's reserved id, a
domain declared since), is ended at its next request, said so on the page (401, the
API's code) and audited as the API's refusals are; nothing the request asked is done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from proctor.audit import ActorType, EventFilter, search_events
from proctor.clock import FrozenClock
from proctor.identity.humans import BOOTSTRAP_ADMIN, HumanIssuer, issuer_from_config
from proctor.runtime import Runtime
from proctor.server import ApiTokens, ServerConfig, create_app
from proctor.server.console import ConsoleSessions
from proctor.server.console.sessions import COOKIE
from tests.server.conftest import BASE_URL, make_app
from tests.server.test_oidc_humans import ISSUER, Provider, provider

from .conftest import sign_in

__all__ = ["provider"]

pytestmark = pytest.mark.anyio


def _issuer(provider: Provider, frozen: FrozenClock, **more: Any) -> HumanIssuer:
    return issuer_from_config({
        "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
        "algorithms": ["RS256"], "subject_claim": "email", "role_claim": "groups",
        "roles": {"admin": "proctor-admins", "approver": "payments-approvers"}, **more,
    }, Path(), frozen)


def _client(app: FastAPI, cookie: str | None = None) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
    if cookie is not None:
        client.cookies.set(COOKIE, cookie, path="/console")
    return client


async def _ended(runtime: Runtime, app: FastAPI, cookie: str, human: str, code: str,
                 says: str) -> None:
    """The session of ``cookie`` is refused at its next request on ``app``: a 401 page
    naming ``code`` and ``says``, its cookie dropped, the session ended in the store (the
    same cookie again: the sign-in form) and one refusal of ``human`` audited."""
    async with _client(app, cookie) as client:
        page = await client.get("/console/approvals")
        assert page.status_code == 401, page.text
        assert code in page.text and says in page.text and "signed out" in page.text
        dropped = page.headers["set-cookie"]
        assert dropped.startswith(f"{COOKIE}=") and "Max-Age=0" in dropped, dropped
    async with _client(app, cookie) as client:  # the cookie kept: the session is over
        again = await client.get("/console/approvals")
        assert again.status_code == 303 and "/console/login" in again.headers["location"]
    refused = [e.event for e in search_events(runtime.store, EventFilter(
        actor_type=ActorType.HUMAN), limit=1000) if e.event["action"] == "console.session"]
    assert [(e["actor"]["id"], e["outcome"], e["decision"]["code"]) for e in refused] == [
        (human, "refused", code)]
    assert refused[0]["detail"]["ended"] is True
    assert says in str(refused[0]["decision"]["reasons"])
    assert cookie not in str(refused[0])


async def test_an_api_token_session_outside_the_issuers_domains_ends_at_its_next_request(
        runtime: Runtime, provider: Provider, frozen: FrozenClock) -> None:
    before, admin = make_app(runtime)  # no human issuer yet: any human's token signs in
    erin = ApiTokens(runtime.store, runtime.clock).create("erin@evil.example", {"approver"},
                                                          issuers=())
    cookies = {}
    for name, token in (("erin", erin.token), ("admin", admin)):
        async with _client(before) as client:
            assert (await sign_in(client, token)).status_code == 303
            assert (await client.get("/console/approvals")).status_code == 200
            cookies[name] = client.cookies[COOKIE]
    # the deployment declares its people's domains (a restart with a new server.toml)
    after = create_app(runtime, ServerConfig(oidc_issuers=(
        _issuer(provider, frozen, id_domains=["acme.example"]),)))
    await _ended(runtime, after, cookies["erin"], "erin@evil.example", "api_token_invalid",
                 "id_domains")
    async with _client(after, cookies["admin"]) as client:  # the bootstrap admin's works
        assert (await client.get("/console/approvals")).status_code == 200


async def test_a_provider_session_the_rules_refuse_now_ends_at_its_next_request(
        runtime: Runtime, provider: Provider, frozen: FrozenClock) -> None:
    app, _ = make_app(runtime, ServerConfig(oidc_issuers=(_issuer(provider, frozen),)))
    now = int(frozen.now().timestamp())
    token = provider.token(now, email="dave@acme.example", groups=["payments-approvers"])
    async with _client(app) as client:
        assert (await sign_in(client, token)).status_code == 303
        dave = client.cookies[COOKIE]
    # a session for the bootstrap admin's id, as a provider's token opened one before that
    # id was reserved
    admin, _ = ConsoleSessions(runtime.store, runtime.clock).open(
        BOOTSTRAP_ADMIN, frozenset({"admin"}), method="oidc")
    await _ended(runtime, app, admin, BOOTSTRAP_ADMIN, "proof_claims_invalid",
                 BOOTSTRAP_ADMIN)
    async with _client(app, dave) as client:  # a person the rules take goes on
        assert (await client.get("/console/approvals")).status_code == 200
    # the issuer names its people's domains since: dave's is not one of them
    later = create_app(runtime, ServerConfig(oidc_issuers=(
        _issuer(provider, frozen, id_domains=["partner.example"]),)))
    async with _client(later, dave) as client:
        page = await client.get("/console/approvals")
        assert page.status_code == 401 and "id_domains" in page.text

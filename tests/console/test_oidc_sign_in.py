"""Signing in to the console with an OIDC provider's token: the human's id and roles come
from the provider, and the session ends when the token would have."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proctor.clock import FrozenClock
from proctor.identity.humans import issuer_from_config
from proctor.runtime import Runtime
from proctor.server import ServerConfig
from tests.server.conftest import BASE_URL, make_app
from tests.server.test_oidc_humans import ISSUER, Provider, provider

from .conftest import sign_in

__all__ = ["provider"]

pytestmark = pytest.mark.anyio


async def test_an_oidc_token_opens_a_session_that_ends_with_the_token(
        runtime: Runtime, provider: Provider, frozen: FrozenClock) -> None:
    issuer = issuer_from_config({
        "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
        "algorithms": ["RS256"], "subject_claim": "email", "role_claim": "groups",
        "roles": {"approver": "payments-approvers"},
    }, Path(), frozen)
    app, _ = make_app(runtime, ServerConfig(oidc_issuers=(issuer,)))
    now = int(frozen.now().timestamp())
    token = provider.token(now, email="dave@acme.example", groups=["payments-approvers"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as client:
        form = await client.get("/console/login")
        assert ISSUER in form.text  # the form names the configured issuer
        signed = await sign_in(client, token)
        assert signed.status_code == 303
        page = await client.get("/console/approvals")
        assert page.status_code == 200
        assert "dave@acme.example" in page.text and ">approver<" in page.text
        assert token not in page.text
        frozen.advance(seconds=301)  # the OIDC token's exp
        assert (await client.get("/console/approvals")).status_code == 303



async def test_a_fractional_exp_still_ends_the_session_with_the_token(
        runtime: Runtime, provider: Provider, frozen: FrozenClock) -> None:
    # `exp` is any JSON number; a fractional one was ignored and the session lasted 8 hours.
    issuer = issuer_from_config({
        "issuer": ISSUER, "audience": "proctor-api", "jwks_url": provider.url,
        "algorithms": ["RS256"], "subject_claim": "email", "role_claim": "groups",
        "roles": {"approver": "payments-approvers"},
    }, Path(), frozen)
    app, _ = make_app(runtime, ServerConfig(oidc_issuers=(issuer,)))
    now = int(frozen.now().timestamp())
    token = provider.token(now, exp=now + 300.5, email="dave@acme.example",
                           groups=["payments-approvers"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as client:
        signed = await sign_in(client, token)
        assert signed.status_code == 303, signed.text
        assert (await client.get("/console/approvals")).status_code == 200
        frozen.advance(seconds=302)
        assert (await client.get("/console/approvals")).status_code == 303

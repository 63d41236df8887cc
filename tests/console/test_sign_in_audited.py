"""A console sign-in or sign-out commits with its audit event, in one transaction: the
session was opened, then its ``console.login`` event written and a failure only logged,
so a sign-in the log could not hold still opened a session, and a process that died
between the two left a session with nothing in the log saying who opened it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from proctor.store.tables import console_sessions
from tests.server.test_human_changes_audited import _CrashError, _dies_after_its_first_commit
from tests.server.test_unaudited_changes import audit_down

from .conftest import BASE_URL, Api, csrf_of, sign_in

pytestmark = pytest.mark.anyio


def _client(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url=BASE_URL)


def _sessions(api: Api) -> list[Any]:
    with api.runtime.store.reading() as conn:
        return list(conn.execute(select(console_sessions)))


def _events(api: Api, action: str) -> list[Mapping[str, Any]]:
    return [e.event for e in api.events(action=action)]


async def test_a_sign_in_the_audit_log_cannot_hold_opens_no_session(agents: Api) -> None:
    api = agents
    async with _client(api) as client:
        form = await client.get("/console/login")  # before: its cookie and CSRF token
        with audit_down(api.runtime.store):
            signed = await client.post("/console/login", data={
                "token": api.admin_token, "csrf": csrf_of(form.text),
                "next": "/console/approvals"})
        assert signed.status_code == 503, signed.text
        assert "audit_unavailable" in signed.text
        assert (await client.get("/console/approvals")).status_code == 303  # signed out
    assert _sessions(api) == []
    assert _events(api, "console.login") == []


async def test_a_sign_out_the_audit_log_cannot_hold_ends_the_session_all_the_same(
        agents: Api) -> None:
    api = agents
    async with _client(api) as client:
        assert (await sign_in(client, api.admin_token)).status_code == 303
        page = await client.get("/console/approvals")
        with audit_down(api.runtime.store):
            out = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 503, out.text
        assert (await client.get("/console/approvals")).status_code == 303  # ended
    assert [row.revoked_at is not None for row in _sessions(api)] == [True]
    assert _events(api, "console.logout") == []


async def test_a_process_that_dies_right_after_a_sign_in_committed_leaves_its_event(
        agents: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = agents
    async with _client(api) as client:
        form = await client.get("/console/login")
        _dies_after_its_first_commit(monkeypatch)
        with pytest.raises(_CrashError):
            await client.post("/console/login", data={
                "token": api.admin_token, "csrf": csrf_of(form.text),
                "next": "/console/approvals"})
        monkeypatch.undo()
    [session] = _sessions(api)
    [event] = _events(api, "console.login")
    assert (event["actor"]["type"], event["actor"]["id"], event["outcome"]) == (
        "human", session.human_id, "signed_in")

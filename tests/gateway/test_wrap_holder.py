"""``proctor mcp wrap`` holds its agent's grant and key itself: the key is checked against
the grant once, as the wrapper starts, and its calls are decided without a proof each,
with every other check kept; the HTTP gateway, whose agents are elsewhere, still takes a
proof with every call.

On SQLite alone: what holding changes in a decision (no proof, no nonce, the event's
``holder``, the use limit) is tested on both backends in
``tests/enforcement/test_held_calls.py``; here the subject is the wrapper's and the
HTTP gateway's wiring."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import func, select

from proctor.audit import EventFilter, iter_events
from proctor.clock import FrozenClock, SystemClock
from proctor.enforcement import HELD_IN_PROCESS
from proctor.errors import ProctorError
from proctor.gateway import GrantAuth
from proctor.gateway.client import rpc_method
from proctor.grants import GrantScope
from proctor.jose import b64url_decode
from proctor.store import Store
from proctor.store.tables import proof_nonces
from tests.conftest import sqlite_only
from tests.gateway.conftest import UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import Gate, echo_through_gate, gateway_on, wrapped

pytestmark = [pytest.mark.anyio, sqlite_only]


def _nonces(store: Store) -> int:
    with store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(proof_nonces)).scalar_one())


def _echo_events(store: Store) -> list[tuple[str, str | None]]:
    """(outcome, detail.holder) of every decided echo, in order."""
    return [(e.event["outcome"], e.event["detail"].get("holder"))
            for e in iter_events(store, EventFilter(action="tool:test/echo"))]


async def test_the_wrapper_refuses_to_start_with_a_key_that_is_not_the_grants(
        deployment: Deployment) -> None:
    with pytest.raises(ProctorError) as refused:
        async with wrapped(deployment, deployment.grant(), UPSTREAM, server="test",
                           key=ec.generate_private_key(ec.SECP256R1())):
            pytest.fail("the wrapper served")
    assert refused.value.code == "proof_wrong_key"
    assert "\n" not in refused.value.message  # the command line prints it as one line


async def test_the_wrappers_calls_store_no_nonce_are_audited_as_held_and_max_uses_holds(
        deployment: Deployment) -> None:
    task = deployment.task()
    grant = deployment.runtime.grants.issue(
        task.id, GrantScope.from_json({"tools": [{"tool": "test/*"}]}), max_uses=2)
    store = deployment.runtime.store
    async with wrapped(deployment, grant, UPSTREAM, server="test") as client:
        for text in ("one", "two"):
            result = await client.call_tool("echo", {"text": text})
            assert result.structured_content is not None
            assert result.structured_content["text"] == text
        with pytest.raises(MCPError) as refused:
            await client.call_tool("echo", {"text": "three"})
        assert refused.value.error.data["reason"] == "grant_uses_exhausted"
    assert _echo_events(store) == [("allowed", HELD_IN_PROCESS), ("allowed", HELD_IN_PROCESS),
                                   ("denied", HELD_IN_PROCESS)]
    assert _nonces(store) == 0


class _ProofOnlyWhenAsked(GrantAuth):
    """The agent's bearer on every request, and its proofs; a call's proof only while
    ``proving`` (each kept in ``call_proofs``)."""

    proving = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.call_proofs: list[str] = []

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response,
                                                              None]:
        for sent in super().auth_flow(request):
            if rpc_method(sent.content) == "tools/call":
                if self.proving:
                    self.call_proofs.append(sent.headers["DPoP"])
                else:
                    del sent.headers["DPoP"]
            yield sent


async def test_the_http_gateway_still_takes_a_proof_with_every_call(
        deployment: Deployment, tmp_path: Path) -> None:
    grant = deployment.grant()
    clock = FrozenClock(SystemClock().now())
    auth = _ProofOnlyWhenAsked(grant.token, deployment.key, clock)
    store = deployment.runtime.store
    gate = Gate(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, _), \
                httpx2.AsyncClient(auth=auth, timeout=WAIT) as http, \
                streamable_http_client(f"{public}/mcp/test", http_client=http) as (r, w), \
                ClientSession(r, w) as client:
            await client.initialize()
            result = await echo_through_gate(client, gate, "proven", _nothing)
            assert not isinstance(result, MCPError), result
            auth.proving = False
            with pytest.raises(MCPError) as refused:
                await client.call_tool("echo", {"text": "not proven"})
            assert refused.value.error.data["reason"] == "proof_missing"
    # the proven call's nonce is stored (so are those the door took for the requests
    # around it: initialize, the listing, the notifications)
    [proven] = auth.call_proofs
    jti = json.loads(b64url_decode(proven.split(".")[1]))["jti"]
    with store.reading() as conn:
        assert conn.execute(select(func.count()).select_from(proof_nonces).where(
            proof_nonces.c.nonce.endswith(f":{jti}"))).scalar_one() == 1
    assert _echo_events(store) == [("allowed", None), ("denied", None)]


async def _nothing() -> None:
    pass

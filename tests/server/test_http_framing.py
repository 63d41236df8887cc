"""``proctor serve``'s HTTP protocol in front of the real API, on a real socket: a
``POST /v1/decide`` whose framing two readers could read two ways, or whose body never
comes whole, is refused before anything is decided, and the server goes on answering.
(The refusals one by one, on both servers' protocols: ``test_asgi.py``.)"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvicorn

from proctor.server.asgi import NoDelayHttpToolsProtocol
from tests.raw_http import exchange
from tests.server.conftest import BASE_URL, SUPPORT, Api

pytestmark = pytest.mark.anyio

WAIT = 30
TOOL = "crm/lookup_customer"


class _QuickBodies(NoDelayHttpToolsProtocol):
    body_timeout_seconds = 0.2


@asynccontextmanager
async def _served(api: Api) -> AsyncIterator[int]:
    """The API served by uvicorn as ``proctor serve`` runs it (a body timeout of 0.2 s);
    yields its port."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(api.app, http=_QuickBodies, lifespan="off",
                                           log_level="error"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        with anyio.fail_after(WAIT):
            while not server.started:
                await asyncio.sleep(0.01)
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, WAIT)
        listening.close()


async def _decide_request(api: Api) -> tuple[bytes, bytes]:
    """The head lines (no end) and body of a ``POST /v1/decide`` policy allows."""
    grant = await api.grant(SUPPORT, [{"tool": "crm/*"}])
    proof = api.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/decide")
    body = json.dumps({"token": grant["token"], "proof": proof,
                       "call": {"tool": TOOL, "args": {"customer_id": "c-1"}}}).encode()
    head = (b"POST /v1/decide HTTP/1.1\r\nHost: proctor.test\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            + b"".join(b"%s: %s\r\n" % (name.encode(), value.encode())
                       for name, value in api.bearer(SUPPORT, "POST", "/v1/decide",
                                                     body).items()))
    return head, body


def _decisions(api: Api) -> list[Any]:
    return api.events(action=f"tool:{TOOL}")


async def test_a_decide_request_chunked_after_gzip_is_refused_400_and_nothing_decided(
        agents: Api) -> None:
    head, body = await _decide_request(agents)
    async with _served(agents) as port:
        # httptools read `gzip, chunked` as chunked and the call was decided; a proxy in
        # front, reading the body as gzip, sees another request
        answer = await exchange(port, head + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                                 + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(
            b"Invalid HTTP request received.")
        assert _decisions(agents) == []
        # the same call, framed plainly, is decided
        allowed = await exchange(port, head + b"Content-Length: %d\r\n\r\n" % len(body)
                                  + body)
    assert allowed.startswith(b"HTTP/1.1 200 ")
    assert json.loads(allowed.partition(b"\r\n\r\n")[2])["decision"] == "allow"
    assert len(_decisions(agents)) == 1


async def test_a_decide_request_whose_body_stops_is_answered_408_and_nothing_decided(
        agents: Api) -> None:
    head, body = await _decide_request(agents)
    async with _served(agents) as port:
        answer = await exchange(port, head + b"Content-Length: %d\r\n\r\n" % len(body)
                                 + body[:-10])
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"
        assert _decisions(agents) == []
        # the server goes on
        whoami = await exchange(port, b"GET /v1/whoami HTTP/1.1\r\nHost: proctor.test\r\n"
                                 b"Authorization: %s\r\nConnection: close\r\n\r\n"
                                 % agents.admin["Authorization"].encode())
    assert whoami.startswith(b"HTTP/1.1 200 ")


async def test_an_http_0_9_request_line_is_refused_505(agents: Api) -> None:
    async with _served(agents) as port:
        answer = await exchange(port, b"GET /v1/whoami\r\nHost: proctor.test\r\n"
                                 b"Authorization: %s\r\n\r\n"
                                 % agents.admin["Authorization"].encode())
    assert answer.startswith(b"HTTP/1.1 505 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "http_version_unsupported"


async def test_a_body_over_the_limit_announced_with_expect_100_continue_is_refused_413(
        agents: Api) -> None:
    head, _ = await _decide_request(agents)
    async with _served(agents) as port:
        answer = await exchange(port, head + b"Content-Length: 99999999\r\n"
                                 b"Expect: 100-continue\r\n\r\n")
    # refused at once, without asking for the body
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"100 Continue" not in answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_too_large"
    assert _decisions(agents) == []


async def test_credentials_sent_as_a_trailer_are_refused_400_and_nothing_decided(
        agents: Api) -> None:
    head, body = await _decide_request(agents)
    without, _, credentials = head.rpartition(b"Authorization: ")
    async with _served(agents) as port:
        # the head has no Authorization; the chunked body's trailer has: httptools added
        # it to the request's headers, and the call was authenticated and decided
        answer = await exchange(port, without + b"Transfer-Encoding: chunked\r\n\r\n"
                                + b"%x\r\n%s\r\n0\r\nAuthorization: %s\r\n"
                                % (len(body), body, credentials))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert _decisions(agents) == []

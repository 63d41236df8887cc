"""``proctor gateway``'s HTTP protocol in front of the real gateway, on a real socket: a
request whose framing two readers could read two ways, an HTTP/0.9 or HTTP/2.0 request
line, a head too large or a body that never comes whole is refused before the gateway
sees it (or, for the body, ends the request), and the gateway goes on serving agents.
(The refusals one by one, on both servers' protocols: ``tests/server/test_asgi.py``.)"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from proctor.server.asgi import NoDelayHttpToolsProtocol
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway
from tests.raw_http import exchange

pytestmark = pytest.mark.anyio

_CALL = (b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": '
         b'"2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}')


async def _exchange(public: str, data: bytes) -> bytes:
    address = urlsplit(public)
    return await exchange(address.port or 80, data, host=address.hostname or "", wait=WAIT)


def _head(public: str, *lines: bytes) -> bytes:
    host = urlsplit(public).netloc.encode()
    return (b"POST /mcp/test HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\n" % host + b"".join(
                line + b"\r\n" for line in lines))


async def _echo(deployment: Deployment, public: str) -> object:
    auth = GrantAuth(deployment.grant().token, deployment.key, SystemClock())
    async with httpx2.AsyncClient(auth=auth, timeout=WAIT) as http, streamable_http_client(
            f"{public}/mcp/test", http_client=http) as (read, write), ClientSession(
            read, write) as session:
        await session.initialize()
        return (await session.call_tool("echo", {"text": "still here"})).structured_content


async def test_ambiguous_framing_and_other_versions_are_refused_and_the_gateway_goes_on(
        deployment: Deployment) -> None:
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public:
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(_CALL), _CALL)
            for request, status in (
                    # uvicorn's parsers took these and handed them to the gateway
                    (_head(public, b"Transfer-Encoding: chunked").replace(
                        b"HTTP/1.1", b"HTTP/1.0") + b"\r\n" + chunked, 400),
                    (_head(public).replace(b"HTTP/1.1", b"HTTP/2.0")
                     + b"Content-Length: %d\r\n\r\n" % len(_CALL) + _CALL, 505),
                    (_head(public, b"X-A: a", b" folded", b"Content-Length: %d" % len(_CALL))
                     + b"\r\n" + _CALL, 400),
                    (_head(public, *[b"X-A: a"] * 101) + b"\r\n", 431),
                    (_head(public, b"X-A: a\x01") + b"Content-Length: 0\r\n\r\n", 400),
                    (_head(public, b"Transfer-Encoding: chunked") + b"\r\n"
                     + chunked.removesuffix(b"\r\n") + b"X-Trailer: t\r\n\r\n", 400),
                    # refused before too
                    (_head(public, b"Transfer-Encoding: gzip, chunked") + b"\r\n" + chunked,
                     400)):
                answer = await _exchange(public, request)
                assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
                assert b"connection: close\r\n" in answer.lower()
            assert await _echo(deployment, public) == {"text": "still here", "count": 1}


def _signed(deployment: Deployment, public: str) -> list[bytes]:
    """An agent's Authorization and DPoP header lines for a POST of ``_CALL``."""
    auth = GrantAuth(deployment.grant().token, deployment.key, SystemClock())
    signed = next(auth.auth_flow(httpx2.Request("POST", f"{public}/mcp/test", content=_CALL)))
    return [b"%s: %s" % (name.encode(), signed.headers[name].encode())
            for name in ("Authorization", "DPoP")]


async def test_a_body_declared_over_the_limit_is_refused_413_without_100_continue(
        deployment: Deployment) -> None:
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public:
            # the gateway asked for the body (100 Continue) and read it up to the limit
            answer = await _exchange(public, _head(public, *_signed(deployment, public),
                                                   b"Content-Length: 99999999",
                                                   b"Expect: 100-continue") + b"\r\n")
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
            assert b"100 Continue" not in answer
            assert b"connection: close\r\n" in answer.lower()  # the body is never read
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["data"][
                "reason"] == "message_too_large"
            assert await _echo(deployment, public) == {"text": "still here", "count": 1}


async def test_a_body_that_never_comes_whole_is_answered_408_and_the_gateway_goes_on(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NoDelayHttpToolsProtocol, "body_timeout_seconds", 0.2)
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public:
            # an agent's request, its body cut short
            answer = await _exchange(public, _head(public, *_signed(deployment, public),
                                                   b"Content-Length: %d" % len(_CALL))
                                     + b"\r\n" + _CALL[:-10])
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:300]
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"
            assert await _echo(deployment, public) == {"text": "still here", "count": 1}

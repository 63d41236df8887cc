"""The HTTP protocols ``proctor serve`` gives uvicorn: Nagle's algorithm is off on every
connection, also on a listening socket bound the way uvicorn binds it for several
workers (where asyncio would leave it on, and each response would wait for a
delayed ACK); and with httptools, a request head past 16 KiB is refused as uvicorn's
h11 protocol refuses it, also one that never ends (httptools has no limit of its own)."""

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
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proctor.server.asgi import (
    BODY_TIMEOUT_SECONDS,
    HEAD_TIMEOUT_SECONDS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    NoDelayH11Protocol,
    NoDelayHttpToolsProtocol,
)
from tests.raw_http import exchange

pytestmark = pytest.mark.anyio

WAIT = 10


async def _app(scope: dict[str, object], receive: object, send: object) -> None:
    assert callable(send) and callable(receive)
    if scope["type"] != "http":
        return
    size = 0
    while True:  # the whole body, whatever its size
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok %d" % size})


@asynccontextmanager
async def _serving(protocol: type[asyncio.Protocol], *, keep_alive: int = 5,
                   app: Any = _app) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    listening = socket.socket(family=socket.AF_INET)  # as uvicorn binds it for workers
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, lifespan="off",
                                           log_level="error", timeout_keep_alive=keep_alive))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        with anyio.fail_after(WAIT):
            while not server.started:
                await asyncio.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, WAIT)
        listening.close()


async def _nodelay_of_accepted_connection(protocol: type[asyncio.Protocol]) -> int:
    async with _serving(protocol) as (server, port):
        with anyio.fail_after(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"ok 0")
            (connection,) = server.server_state.connections
            accepted = connection.transport.get_extra_info("socket")
            value: int = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()
            await writer.wait_closed()
    return value


async def _answer(protocol: type[asyncio.Protocol], *writes: bytes) -> bytes:
    """What the server answers to ``writes`` sent on one connection, up to its close (an
    empty answer if it reset the connection instead)."""
    async with _serving(protocol) as (_server, port):
        with anyio.fail_after(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for data in writes:
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:  # refused while still sending
                pass
            try:
                answer = await reader.read()
            except ConnectionError:
                answer = b""
            writer.close()
            return answer


@pytest.mark.parametrize(("plain", "ours"), [(H11Protocol, NoDelayH11Protocol),
                                             (HttpToolsProtocol, NoDelayHttpToolsProtocol)])
async def test_nagle_is_off_on_connections_proctor_serve_accepts(
        plain: type[asyncio.Protocol], ours: type[asyncio.Protocol]) -> None:
    assert await _nodelay_of_accepted_connection(plain) == 0  # the problem
    assert await _nodelay_of_accepted_connection(ours) != 0


async def test_a_head_still_incomplete_past_16_kib_is_refused_400_as_h11_refuses_it() -> None:
    unfinished = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES
    assert (await _answer(H11Protocol, unfinished)).startswith(b"HTTP/1.1 400")
    answer = await _answer(NoDelayHttpToolsProtocol, unfinished)
    assert answer.startswith(b"HTTP/1.1 400")
    assert answer.endswith(b"Invalid HTTP request received.")


async def test_a_header_that_never_ends_is_refused_before_it_is_all_read() -> None:
    # 1 MiB of one header's value, never finished: httptools would keep every byte of it
    # and never answer (this test then times out)
    writes = [b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: "] + [b"a" * 8192] * 128
    answer = await _answer(NoDelayHttpToolsProtocol, *writes)
    # the 400, or a reset if it came while the rest was still being sent
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("protocol", [H11Protocol, NoDelayHttpToolsProtocol])
async def test_a_head_under_the_limit_and_a_large_body_are_read_as_before(
        protocol: type[asyncio.Protocol]) -> None:
    body = b"b" * 300_000
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 200)
               + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    answer = await _answer(protocol, request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"ok 300000\r\n0\r\n\r\n")


async def test_pipelined_requests_on_one_connection_are_all_answered() -> None:
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(2000))
    answer = await _answer(NoDelayHttpToolsProtocol, requests + b"GET / HTTP/1.1\r\n"
                           b"Host: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200") == 2001


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
])
@pytest.mark.parametrize("protocol", [H11Protocol, NoDelayHttpToolsProtocol])
async def test_a_request_with_two_hosts_or_none_in_http_1_1_is_refused_400_as_h11_refuses_it(
        protocol: type[asyncio.Protocol], head: bytes) -> None:
    answer = await _answer(protocol, head)
    assert answer.startswith(b"HTTP/1.1 400")
    assert answer.endswith(b"Invalid HTTP request received.")


@pytest.mark.parametrize("protocol", [H11Protocol, NoDelayHttpToolsProtocol])
async def test_one_host_or_none_in_http_1_0_is_answered(protocol: type[asyncio.Protocol]) -> None:
    assert (await _answer(protocol, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert (await _answer(protocol, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          )).startswith(b"HTTP/1.1 200")


async def test_a_pipelined_request_with_a_second_host_is_refused() -> None:
    # in one read, httptools meets the bad head before the first request is answered:
    # uvicorn answers the parser's error at once, as for any other (the first may be lost)
    answer = await _answer(NoDelayHttpToolsProtocol, b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /2 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200") <= 1
    assert answer.endswith(b"Invalid HTTP request received.")


@pytest.mark.parametrize("writes", [
    pytest.param((b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n"
                  b"X-A: a\r\n b\r\n\r\n",), id="pipelined-in-one-read"),
    pytest.param((b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nX-A: a",
                  b"\r\n b", b"\r\n", b"\r\n"), id="pipelined-head-in-pieces"),
])
async def test_h11_checks_a_head_that_came_behind_an_answered_request(
        writes: tuple[bytes, ...]) -> None:
    # the raw head (an obs-fold h11 would mend) is checked once a read could have made it
    # whole, or once the request before it is answered, not on every read
    answer, called = await _answer_and_requests(NoDelayH11Protocol, *writes)
    assert called == [b"/1"]
    assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in answer


class _QuickHeads(NoDelayHttpToolsProtocol):
    head_timeout_seconds = 0.2


class _QuickH11Heads(NoDelayH11Protocol):
    head_timeout_seconds = 0.2


async def _closed_after(protocol: type[asyncio.Protocol], *writes: bytes) -> bytes:
    """What the server sends on a connection that writes ``writes`` and then waits, up to
    the server's close (the test fails at WAIT if it never closes)."""
    # uvicorn's keep-alive (its 5 s by default) would close an idle connection after a
    # response too: longer than the test waits, so only the head's time limit can
    async with _serving(protocol, keep_alive=10 * WAIT) as (_server, port):
        return await exchange(port, *writes, wait=WAIT)


_QUICK = [_QuickHeads, _QuickH11Heads]


@pytest.mark.parametrize("protocol", _QUICK)
async def test_a_connection_that_sends_no_head_is_closed_when_the_head_times_out(
        protocol: type[asyncio.Protocol]) -> None:
    assert HEAD_TIMEOUT_SECONDS <= 60
    assert await _closed_after(protocol) == b""


@pytest.mark.parametrize("protocol", _QUICK)
async def test_a_head_sent_slowly_is_closed_when_it_times_out_and_an_answered_one_is_not_cut(
        protocol: type[asyncio.Protocol]) -> None:
    assert await _closed_after(protocol, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a") == b""
    # a whole head is answered; the next head, begun and never ended, is closed
    answer = await _closed_after(protocol, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok 0\r\n0\r\n\r\n")


@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
@pytest.mark.parametrize("target", [b"http://elsewhere.example/mcp", b"//elsewhere/mcp",
                                    b"elsewhere.example:443", b"mcp"])
async def test_a_request_target_that_is_not_a_path_is_refused_400(
        protocol: type[asyncio.Protocol], target: bytes) -> None:
    # httptools routed `POST http://elsewhere.example/mcp` to `/mcp`, whatever its host
    answer = await _answer(protocol, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 0\r\n\r\n")
    if target.startswith(b"//"):  # a path of its own (origin form), served
        assert answer.startswith(b"HTTP/1.1 200")
        return
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    if target.startswith(b"http:") or protocol is NoDelayH11Protocol:
        # httptools' own parser refuses an authority or a bare name as a target
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_target_invalid"


_SMUGGLED = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
             b"GET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
async def test_a_request_with_content_length_and_transfer_encoding_is_refused_400(
        protocol: type[asyncio.Protocol]) -> None:
    # plain h11 frames it by Transfer-Encoding and answers the request hidden in it
    # (a proxy framing by Content-Length would not have seen that one)
    assert (await _answer(H11Protocol, _SMUGGLED)).count(b"HTTP/1.1 200") == 2
    answer = await _answer(protocol, _SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400") and b"200" not in answer.split(b"\r\n")[0]
    # one answer, uvicorn's to a request it cannot read (h11 writes it chunked)
    assert answer.count(b"HTTP/1.1 ") == 1 and b"Invalid HTTP request received." in answer


# Heads both servers refuse (proctor.server.framing), with what each parser did before:
# httptools took the first five and the Host ones, h11 the second, third and the next
# six and the Host ones
_REFUSED_HEADS = [
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n", 400, id="gzip-then-chunked"),
    pytest.param(b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n", 400, id="chunked-in-http-1.0"),
    pytest.param(b"GET /\r\nHost: x\r\n\r\n", None, id="http-0.9-request-line"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, id="http-0.9"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="http-2.0"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: a\r\n" * 101 + b"\r\n", 431,
                 id="101-fields"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 17_000 + b"\r\n\r\n", 431,
                 id="17-kib-field-in-one-read"),
    pytest.param(b"GET /" + b"a" * 17_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431,
                 id="17-kib-target-in-one-read"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400, id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", 400, id="bare-lf"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, id="ctl-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400, id="del-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: user@evil.example\r\n\r\n", 400, id="host-userinfo"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="host-space"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: evil.example/x\r\n\r\n", 400, id="host-path"),
    # httptools read no body after it (the application saw none), nor the next request
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
                 b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhello"
                 b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="upgrade-h2c"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
                 b"\r\n\r\n", 400, id="upgrade-websocket"),
    # h11 handed CONNECT to the application (and would switch protocols on its 2xx);
    # httptools refuses it
    pytest.param(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 400, id="connect"),
    # refused before too, by both: kept so
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
                 b"\r\nhelloX", 400, id="two-content-lengths"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, id="nul-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, id="cr-in-value"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nhello",
                 400, id="identity"),
]


async def _answer_and_requests(protocol: type[asyncio.Protocol], *writes: bytes
                               ) -> tuple[bytes, list[bytes]]:
    """The answer to ``writes`` (on one connection) up to the server's close, and the
    paths the application was called for."""
    called: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["raw_path"])
        await _app(scope, receive, send)

    async with _serving(protocol, app=app) as (_server, port):
        answer = await exchange(port, *writes, wait=WAIT)
    return answer, called


@pytest.mark.parametrize(("head", "status"), _REFUSED_HEADS)
@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
async def test_an_ambiguous_or_oversized_head_is_refused_and_the_connection_closed(
        protocol: type[asyncio.Protocol], head: bytes, status: int | None) -> None:
    answer, called = await _answer_and_requests(protocol, head)
    assert called == []
    assert answer.count(b"HTTP/1.1 ") == 1 and b"connection: close\r\n" in answer.lower()
    # the request line without a version: h11 cannot read it (400), httptools reads it
    # as HTTP/0.9 (505)
    expected = status or (400 if protocol is NoDelayH11Protocol else 505)
    assert answer.startswith(b"HTTP/1.1 %d " % expected), answer[:200]
    if expected != 400:
        problem = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert problem["status"] == expected
        assert problem["code"] == {431: "request_head_too_large",
                                   505: "http_version_unsupported"}[expected]
    elif b"upgrade" in head.lower():
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "upgrade_unsupported"


@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
async def test_heads_at_the_limits_and_chunked_bodies_are_answered(
        protocol: type[asyncio.Protocol]) -> None:
    many = b"".join(b"X-%d: a\r\n" % i for i in range(MAX_HEADERS - 2))
    for request in (
            b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close\r\n\r\n",
            b"GET /" + b"a" * (MAX_HEAD_BYTES - 100) + b" HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]:8765\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: xn--bcher-kva.example:80\r\nConnection: close\r\n\r\n"):
        answer, called = await _answer_and_requests(protocol, request)
        assert answer.startswith(b"HTTP/1.1 200") and len(called) == 1, answer[:200]


class _QuickBodies(NoDelayHttpToolsProtocol):
    body_timeout_seconds = 0.2


class _QuickH11Bodies(NoDelayH11Protocol):
    body_timeout_seconds = 0.2


@pytest.mark.parametrize("protocol", [_QuickBodies, _QuickH11Bodies])
async def test_a_body_sent_slowly_is_answered_408_and_closed_when_it_times_out(
        protocol: type[asyncio.Protocol]) -> None:
    # the head whole, then 2 of 10 bytes of the body and nothing more: the application
    # waits for the rest until the body's time limit ends the request
    async with _serving(protocol, keep_alive=10 * WAIT) as (_server, port):
        answer = await exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                                b"\r\nab", wait=WAIT)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"
    assert BODY_TIMEOUT_SECONDS <= 60


@pytest.mark.parametrize("protocol", [_QuickBodies, _QuickH11Bodies])
async def test_a_whole_body_is_never_cut_by_its_time_limit(
        protocol: type[asyncio.Protocol]) -> None:
    # a body in two reads, then a response after a wait longer than the limit
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            while (await receive()).get("more_body"):
                pass
            await asyncio.sleep(0.5)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})

    async with _serving(protocol, keep_alive=10 * WAIT, app=slow) as (_server, port):
        answer = await exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                b"Connection: close\r\n\r\nab", b"cd", wait=WAIT)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"late\r\n0\r\n\r\n")


@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
async def test_nothing_after_a_request_with_connection_close_is_read_as_a_request(
        protocol: type[asyncio.Protocol]) -> None:
    answer, called = await _answer_and_requests(
        protocol, b"GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert called == [b"/1"] and answer.count(b"HTTP/1.1 200") == 1


@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
async def test_trailer_fields_after_a_chunked_body_are_refused_before_the_body_ends(
        protocol: type[asyncio.Protocol]) -> None:
    ended: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        if message["type"] == "http.request":  # the body's end: what the route would read
            ended.append(list(scope["headers"]))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    async with _serving(protocol, app=app) as (_server, port):
        answer = await exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                b"chunked\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer "
                                b"t\r\n\r\n", wait=WAIT)
    # httptools ended the body with the trailer among the request's headers
    assert ended == []
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("protocol", [NoDelayH11Protocol, NoDelayHttpToolsProtocol])
@pytest.mark.parametrize("trailer", [b"X-Endless: " + b"a" * (1 << 20),  # one field
                                     b"X-A: b\r\n" * (1 << 17)])  # 131,072 fields
async def test_a_trailer_that_never_ends_is_refused_before_it_is_all_read(
        protocol: type[asyncio.Protocol], trailer: bytes) -> None:
    # 1 MiB of trailer, never finished: httptools kept every byte of it (in one value,
    # or each field appended to the request's headers), the body's time limit only
    # cutting it 30 s later (this test then times out)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    writes = [head] + [trailer[i:i + 8192] for i in range(0, len(trailer), 8192)]
    answer = await _answer(protocol, *writes)
    # the 400, or a reset if it came while the rest was still being sent
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")

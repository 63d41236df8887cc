"""An HTTP upstream's POSTs on the gateway's own HTTP/1.1 connections
(proctor.gateway.http11): read to the end and reused, closed when they cannot be, and an
answer never taken from bytes that came after the previous one. The upstream here is a
real TCP server that writes exactly the bytes each test scripts."""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import httpx2
import pytest

from proctor.gateway import http11
from proctor.gateway.http11 import Http11Transport
from proctor.gateway.keepalive import keepalive_client
from tests.gateway.conftest import WAIT

pytestmark = pytest.mark.anyio

Answer = Callable[[int, bytes], Awaitable[bytes | None]]  # (connection, request) -> bytes
After = Callable[[int], bytes | None]  # (connection) -> more bytes, or None to end it


def _ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "content-type: application/json",
            f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _chunked(*parts: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" \
           b"transfer-encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class Upstream:
    """A TCP server answering each request on a connection with ``answer``; it counts
    the connections and closes one when ``answer`` returns None. ``after`` (on an
    upstream apart only: it blocks) is called once an answer is written: what it returns
    is written next, unasked, or the connection ended (with a reset if ``resets``);
    ``acted`` is set when that is done."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.url = ""
        self.close_after = False
        self.closed = asyncio.Event()
        self.after: After | None = None
        self.resets = False
        self.acted = threading.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                written = await self.answer(number, request)
                if written is None:
                    break
                writer.write(written)
                await writer.drain()
                if self.close_after:
                    break
                if self.after is not None:
                    more = self.after(number)
                    if more is None:
                        if self.resets:  # the close a reset, as an aborting server's
                            writer.get_extra_info("socket").setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        writer.close()
                        await writer.wait_closed()
                        self.acted.set()
                        return
                    writer.write(more)
                    await writer.drain()
                    self.acted.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()


@asynccontextmanager
async def upstream(answer: Answer) -> AsyncIterator[Upstream]:
    served = Upstream(answer)
    server = await asyncio.start_server(served._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    served.url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield served
    finally:
        server.close()


@contextmanager
def upstream_apart(answer: Answer) -> Iterator[Upstream]:
    """The scripted upstream on an event loop of its own, in a thread: the test's loop can
    stand still (block) while the upstream acts, as a busy gateway's loop does, so that
    what the upstream sends is on the socket and not yet read by the loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    opened = upstream(answer)
    served = asyncio.run_coroutine_threadsafe(opened.__aenter__(), loop).result(WAIT)
    try:
        yield served
    finally:
        async def stop() -> None:
            await opened.__aexit__(None, None, None)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


def _unread_on_idle(transport: Http11Transport) -> None:
    """Block (the test's loop with it) until the idle connection's socket holds what the
    upstream did after its answer: there, and not yet read by the loop."""
    [connection] = transport._idle
    assert connection.transport is not None
    sock = connection.transport.get_extra_info("socket")
    assert select.select([sock], [], [], WAIT)[0]


async def _empty(connection: int, request: bytes) -> bytes:
    """An upstream's answer to anything: an empty JSON object."""
    return _ok(b"{}")


@pytest.fixture
def one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool holds one connection at most."""
    monkeypatch.setattr(http11, "MAX_CONNECTIONS", 1)


def _client(read: float = WAIT, pool: float = WAIT) -> httpx2.AsyncClient:
    return keepalive_client({}, httpx2.Timeout(WAIT, read=read, pool=pool))


async def _post(client: httpx2.AsyncClient, url: str, body: bytes = b'{"id":1}') -> bytes:
    with anyio.fail_after(WAIT):
        response = await client.post(url, content=body)
    return response.content


async def test_posts_with_a_length_or_chunked_answer_go_over_one_connection() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        if request.endswith(b'"chunked"'):
            return _chunked(b"data: ", b'{"a":1}\n\n')
        return _ok(b'{"a":1}')

    async with upstream(answer) as served, _client() as client:
        assert await _post(client, served.url) == b'{"a":1}'
        assert await _post(client, served.url, b'"chunked"') == b'data: {"a":1}\n\n'
        assert await _post(client, served.url) == b'{"a":1}'
    assert served.connections == 1


async def test_an_answer_that_says_connection_close_is_not_reused() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        return _ok(b"{}", "connection: close")

    async with upstream(answer) as served, _client() as client:
        await _post(client, served.url)
        await _post(client, served.url)
    assert served.connections == 2


async def test_a_connection_the_upstream_closed_while_idle_is_not_used_again() -> None:
    transport = Http11Transport(httpx2.AsyncHTTPTransport())
    async with upstream(_empty) as served, httpx2.AsyncClient(transport=transport) as client:
        served.close_after = True  # the upstream ends each connection after its answer
        assert await _post(client, served.url) == b"{}"
        with anyio.fail_after(WAIT):
            await served.closed.wait()
            while transport._idle and not transport._idle[0].is_lost:
                await anyio.sleep(0.01)  # the loop hears of the close
        # a post on the closed connection would be lost: a new one is made
        assert await _post(client, served.url) == b"{}"
    assert served.connections == 2


async def test_an_answer_never_comes_from_bytes_sent_after_the_previous_one() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        # a second, unasked answer right behind the first: were it kept in the parser, the
        # next request would be answered with it
        return _ok(b'"asked"') + _ok(b'"smuggled"') if connection == 1 else _ok(b'"asked"')

    async with upstream(answer) as served, _client() as client:
        assert await _post(client, served.url) == b'"asked"'
        assert await _post(client, served.url) == b'"asked"'
    assert served.connections == 2


async def test_a_body_closed_before_its_end_closes_its_connection() -> None:
    async def first_part(connection: int, request: bytes) -> bytes:
        if connection > 1:
            return _ok(b"{}")
        return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")

    transport = Http11Transport(httpx2.AsyncHTTPTransport())
    async with upstream(first_part) as served, httpx2.AsyncClient(transport=transport) as client:
        with anyio.fail_after(WAIT):
            async with client.stream("POST", served.url, content=b"{}") as response:
                assert await response.aiter_raw().__anext__() == b"hello"
            assert transport._open == 0
            assert await _post(client, served.url) == b"{}"
    assert served.connections == 2


async def test_an_upstream_silent_past_the_read_timeout_is_a_read_timeout() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError

    async with upstream(answer) as served, _client(read=0.05) as client:
        with anyio.fail_after(WAIT), pytest.raises(httpx2.ReadTimeout):
            await client.post(served.url, content=b"{}")


async def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        return b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b'"final"')

    async with upstream(answer) as served, _client() as client:
        assert await _post(client, served.url) == b'"final"'
        assert await _post(client, served.url) == b'"final"'
    assert served.connections == 1


@pytest.mark.parametrize("written", [b"HTTP/1.1 abc OK\r\n\r\n", b"not http at all\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"])
async def test_a_malformed_or_cut_answer_is_a_protocol_error(written: bytes) -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        return written

    async with upstream(answer) as served, _client() as client:
        served.close_after = True
        with anyio.fail_after(WAIT), pytest.raises(httpx2.RemoteProtocolError):
            await client.post(served.url, content=b"{}")


async def test_an_upstream_that_closes_without_answering_is_a_protocol_error() -> None:
    async def answer(connection: int, request: bytes) -> bytes | None:
        return None

    async with upstream(answer) as served, _client() as client:
        with anyio.fail_after(WAIT), pytest.raises(httpx2.RemoteProtocolError):
            await client.post(served.url, content=b"{}")


async def test_a_body_larger_than_the_high_water_mark_is_read_whole() -> None:
    body = bytes(range(256)) * (4 * http11.HIGH_WATER // 256)

    async def answer(connection: int, request: bytes) -> bytes:
        return _ok(body)

    async with upstream(answer) as served, keepalive_client(
            {}, httpx2.Timeout(WAIT), max_answer_bytes=len(body)) as client:
        with anyio.fail_after(WAIT):
            async with client.stream("POST", served.url, content=b"{}") as response:
                got = b""
                async for part in response.aiter_raw():
                    got += part
                    await anyio.sleep(0)  # read slower than it comes
        assert got == body
        assert await _post(client, served.url) == body
    assert served.connections == 1


@pytest.mark.usefixtures("one_connection")
async def test_a_request_waits_for_a_free_connection_up_to_the_pool_timeout() -> None:
    async with upstream(_empty) as served, _client(pool=0.05) as client:
        with anyio.fail_after(WAIT):
            async with client.stream("POST", served.url, content=b"{}") as held:
                with pytest.raises(httpx2.PoolTimeout):
                    await client.post(served.url, content=b"{}")
                await held.aread()
            assert await _post(client, served.url) == b"{}"
    assert served.connections == 1


async def test_a_get_and_a_streamed_body_go_through_httpx_own_pool() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        return _ok(request.split(b" ", 1)[0])

    async def streamed() -> AsyncIterator[bytes]:
        yield b"{}"

    transport = Http11Transport(httpx2.AsyncHTTPTransport())
    async with upstream(answer) as served, httpx2.AsyncClient(transport=transport) as client:
        with anyio.fail_after(WAIT):
            assert (await client.get(served.url)).content == b"GET"
            assert (await client.post(served.url, content=streamed(),
                                      headers={"content-length": "2"})).content == b"POST"
            assert (await client.post(served.url, content=b"{}")).content == b"POST"
        assert transport._open == 1  # only the last one is its own


async def _two_posts_around(after_first: bytes | None, *,
                            resets: bool = False) -> tuple[list[bytes], list[int]]:
    """Two posts to an upstream apart that answers ``"asked"``; once the first post's
    connection is idle, the upstream writes ``after_first`` on it (None: ends it) while
    the test's loop stands still. The two answers, and the connection each request the
    upstream read came on."""
    seen: list[int] = []

    async def answer(connection: int, request: bytes) -> bytes:
        seen.append(connection)
        return _ok(b'"asked"')

    go = threading.Event()

    def after(connection: int) -> bytes | None:
        go.wait(WAIT)
        return after_first if connection == 1 else b""

    transport = Http11Transport(httpx2.AsyncHTTPTransport())
    with upstream_apart(answer) as served:
        served.after = after
        served.resets = resets
        async with httpx2.AsyncClient(transport=transport) as client:
            answers = [await _post(client, served.url)]
            go.set()
            assert served.acted.wait(WAIT)
            _unread_on_idle(transport)
            answers.append(await _post(client, served.url))
    return answers, seen


async def test_an_end_the_loop_has_not_read_yet_is_seen_before_the_connection_is_reused(
        ) -> None:
    # the idle connection's keep-alive timeout, say
    answers, seen = await _two_posts_around(None)
    assert answers == [b'"asked"', b'"asked"']
    assert seen == [1, 2]  # the second post sent once, on a new connection


async def test_bytes_sent_after_an_answer_and_not_yet_read_are_never_the_next_answer() -> None:
    answers, seen = await _two_posts_around(_ok(b'"smuggled"'))
    assert answers == [b'"asked"', b'"asked"']
    assert seen == [1, 2]


async def test_a_request_refused_with_a_reset_at_its_write_is_sent_once_on_a_new_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the reset comes after the check before reuse (a race the poll narrows, never closes):
    # the check sees only what the loop has read
    monkeypatch.setattr(http11._Connection, "is_reusable",
                        property(lambda self: self.is_idle_and_open))
    answers, seen = await _two_posts_around(None, resets=True)
    assert answers == [b'"asked"', b'"asked"']
    assert seen == [1, 2]


async def test_a_request_the_upstream_read_and_ended_unanswered_is_not_sent_again() -> None:
    seen: list[bytes] = []

    async def answer(connection: int, request: bytes) -> bytes | None:
        seen.append(request)
        return _ok(b"{}") if len(seen) == 1 else None

    async with upstream(answer) as served, _client() as client:
        assert await _post(client, served.url) == b"{}"
        with anyio.fail_after(WAIT), pytest.raises(httpx2.RemoteProtocolError):
            await client.post(served.url, content=b'{"id":2}')
    assert [request.endswith(b'{"id":2}') for request in seen] == [False, True]
    assert served.connections == 1


@pytest.mark.usefixtures("one_connection")
async def test_a_waiter_cancelled_as_a_connection_is_handed_on_ends_and_passes_it_on() -> None:
    transport = Http11Transport(httpx2.AsyncHTTPTransport())
    async with upstream(_empty) as served, httpx2.AsyncClient(
            transport=transport, timeout=httpx2.Timeout(WAIT)) as client:
        with anyio.fail_after(WAIT):
            async with client.stream("POST", served.url, content=b"{}") as held:
                first = asyncio.ensure_future(client.post(served.url, content=b"{}"))
                while len(transport._waiting) < 1:
                    await anyio.sleep(0)
                second = asyncio.ensure_future(client.post(served.url, content=b"{}"))
                while len(transport._waiting) < 2:
                    await anyio.sleep(0)
                await held.aclose()  # unread: the connection's place is handed to the first
                first.cancel()  # waiter, which is cancelled before it runs
            assert (await second).content == b"{}"  # not left to the pool timeout
            with pytest.raises(asyncio.CancelledError):
                await first
    assert served.connections == 2


@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True})])
async def test_posts_go_over_one_connection_on_uvloop_too() -> None:
    async def answer(connection: int, request: bytes) -> bytes:
        return _ok(b'{"a":1}')

    async with upstream(answer) as served, _client() as client:
        for _ in range(3):
            assert await _post(client, served.url) == b'{"a":1}'
    assert served.connections == 1

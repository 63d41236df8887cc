"""An HTTP upstream's POSTs over plain HTTP/1.1 connections of the gateway's own.

Every request the gateway sends an HTTP upstream (its posted calls, and the SDK
transport's posts: ``initialize``, listings, calls with progress) went through httpx's
connection pool (httpcore): per request, a pool lock, two socket writes (the head,
then the body), and for each read a timeout scope and anyio's stream around an
asyncio transport. That was most of the CPU of a plain call's upstream side.
:class:`Http11Transport` sends a ``POST`` to an ``http://`` upstream on an asyncio
connection of its own: the request written once (head and body in one write), the
response read through h11 (the same parser httpcore uses, with httpcore's head limit),
the connection kept for the next request once its response was read to the end.

What it keeps of httpcore's behaviour: at most :data:`MAX_CONNECTIONS` connections
(a request waits for one, up to the pool timeout: ``PoolTimeout``), at most
:data:`MAX_IDLE` kept idle; the request's connect, read and write timeouts
(``ConnectTimeout``, ``ReadTimeout``, ``WriteTimeout``); a connection the upstream
closed while idle is not used again, nor one with anything unasked on it: besides what
the event loop has received, the socket is polled (zero timeout, as httpcore's
``is_readable``) just before it is reused, since an end (an idle upstream's keep-alive
timeout) or stray bytes may have come after the loop's last read; a response closed
before its end closes its connection; 1xx answers are skipped; errors are httpx's (``ConnectError``,
``ReadError``, ``RemoteProtocolError``), which the callers already handle. At most
:data:`HIGH_WATER` bytes are held unread: past that the connection stops reading until
the body's reader catches up (the caps on answers are counted above this transport,
by :class:`~proctor.gateway.keepalive.KeepAliveTransport`).

A request is sent again, once and on a new connection, only when no upstream can have
acted on it (a ``tools/call`` is not idempotent): when the reused connection's first
write of the request failed with the peer's reset (``ECONNRESET``, ``EPIPE``) before
any byte was read. A write refused at once left nothing of the request on the wire.
(That is seen where the event loop's write tries the socket at once and closes the
transport on its failure, as asyncio's does, on which ``proctor gateway`` runs; on a
loop whose failure comes later (uvloop may), it is not told apart from a reset after
the request: no retry there, only the poll.) A
connection the poll finds ended or readable is dropped before anything is written, and
another taken. A request written whole and then met by an end or a reset without an
answer is not sent again: the upstream may have read it; it fails (``RemoteProtocolError``
or ``ReadError``: ``upstream_unavailable``) as httpcore's does.

Everything else goes to the inner transport (httpcore's pool) as before: ``https://``
(TLS) upstreams, the SDK's ``GET`` stream and ``DELETE``, and a request whose body is
a stream rather than bytes.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator
from typing import Any, NoReturn, cast

import h11
import httpx2

__all__ = ["HIGH_WATER", "MAX_CONNECTIONS", "MAX_IDLE", "Http11Transport"]

MAX_CONNECTIONS = 100  # httpcore's default limits
MAX_IDLE = 20
MAX_HEAD_BYTES = 100 * 1024  # httpcore's h11 limit on an incomplete event (a response's head)
HIGH_WATER = 256 * 1024  # bytes received and not yet read, past which reading pauses


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: bytes as they come, handed to h11 as it asks."""

    def __init__(self, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.transport: asyncio.Transport | None = None
        self.is_lost = False
        self.lost_with: Exception | None = None
        self._poll: select.poll | None = None
        self._received: list[bytes] = []
        self._held = 0
        self._eof = False
        self._eof_given = False  # to h11
        self._paused = False
        self._write_paused = False
        self._waiter: asyncio.Future[None] | None = None

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's (which is no subclass of asyncio.Transport): the same calls
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()  # registered once: a reuse's check is one syscall
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self._received.append(data)
        self._held += len(data)
        if self._held > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        self.lost_with = exc
        self._eof = True
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the request's side

    @property
    def is_idle_and_open(self) -> bool:
        """Whether the connection can carry a new request: open, nothing received since
        its last response ended, both sides of h11 ready for the next cycle."""
        parser = self.parser
        return (not self.is_lost and not self._eof and not self._received
                and parser.our_state is h11.IDLE and parser.their_state is h11.IDLE
                and not parser.trailing_data[0])

    @property
    def is_reusable(self) -> bool:
        """Whether the idle connection may carry a request now: :attr:`is_idle_and_open`,
        its transport not closing, and nothing readable on its socket that the event loop
        has not read yet (an end, a reset, stray bytes)."""
        transport = self.transport
        return (self.is_idle_and_open and transport is not None
                and not transport.is_closing()
                and self._poll is not None and not self._poll.poll(0))

    def send(self, data: bytes) -> bool:
        """Write ``data``; False if the transport closed itself in the write (asyncio's
        first ``send`` on the socket failed: nothing of ``data`` left)."""
        transport = self.transport
        assert transport is not None
        transport.write(data)
        return not transport.is_closing()

    async def lost(self, timeout: float | None) -> Exception | None:
        """Wait for the transport's end; the error it ended with."""
        while not self.is_lost:
            await self._wait(timeout, httpx2.WriteTimeout, "timed out writing the request")
        return self.lost_with

    async def drained(self, timeout: float | None) -> None:
        """Wait while asyncio holds more of the request than its high-water mark (as a
        stream writer's ``drain``)."""
        while self._write_paused and not self.is_lost:
            await self._wait(timeout, httpx2.WriteTimeout, "timed out writing the request")

    async def next_event(self, timeout: float | None) -> Any:
        """h11's next event, reading as it needs; h11's errors raise as httpx's."""
        parser = self.parser
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx2.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            if self._received:
                data = b"".join(self._received)
                self._received.clear()
                self._held = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                parser.receive_data(data)
            elif self._eof and not self._eof_given:
                self._eof_given = True
                parser.receive_data(b"")  # h11 says what an end here means
            elif self._eof:
                raise httpx2.RemoteProtocolError("the upstream closed the connection")
            else:
                await self._wait(timeout, httpx2.ReadTimeout, "timed out reading the response")

    async def _wait(self, timeout: float | None, error: type[httpx2.TimeoutException],
                    message: str) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()

        def timed_out() -> None:
            if not waiter.done():
                waiter.set_exception(error(message))

        timer = None if timeout is None else loop.call_later(timeout, timed_out)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.is_lost = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx2.AsyncByteStream):
    """A response's body, read from its connection; the connection goes back to the
    pool once the body was read to its end, and is closed if it was not."""

    def __init__(self, pool: Http11Transport, connection: _Connection,
                 timeout: float | None) -> None:
        self._pool = pool
        self._connection = connection
        self._timeout = timeout
        self._ended = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._released:
            raise httpx2.StreamClosed()
        try:
            while not self._ended:
                event = await self._connection.next_event(self._timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._ended = True
                else:  # ConnectionClosed before the end: h11 raised for a framed body
                    raise httpx2.RemoteProtocolError("the response ended early")
        except BaseException:
            self._release(reuse=False)
            raise

    async def aclose(self) -> None:
        self._release(reuse=self._ended)

    def _release(self, *, reuse: bool) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection, reuse=reuse)


class Http11Transport(httpx2.AsyncBaseTransport):
    """``POST`` to ``http://`` over connections of its own; anything else to ``inner``."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner
        self._idle: list[_Connection] = []
        self._open = 0  # connections made and not yet closed, idle ones included
        self._waiting: list[asyncio.Future[bool]] = []
        self._is_closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        body = _body_of(request)
        if url.scheme != "http" or request.method != "POST" or body is None:
            return await self._inner.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        connection = await self._send(request, body, timeouts)
        try:
            await connection.drained(timeouts.get("write"))
            while True:
                event = await connection.next_event(read_timeout)
                if isinstance(event, h11.Response):
                    break
                if not isinstance(event, h11.InformationalResponse):
                    raise httpx2.RemoteProtocolError("the upstream closed the connection "
                                                     "without a response")
        except BaseException as exc:
            self.release(connection, reuse=False)
            _raise_as_httpx(exc)
        return httpx2.Response(
            event.status_code, headers=event.headers.raw_items(),
            stream=_Body(self, connection, read_timeout),
            extensions={"http_version": b"HTTP/" + event.http_version,
                        "reason_phrase": event.reason})

    async def _send(self, request: httpx2.Request, body: bytes,
                    timeouts: dict[str, float | None]) -> _Connection:
        """A connection with ``request`` written to it; written a second time, on another
        connection, only by the rule in the module's docstring."""
        url = request.url
        origin = (url.host, url.port or 80)
        is_retry = False
        while True:
            connection, is_reused = await self._acquire(origin, request, timeouts)
            try:
                is_sent = connection.send(_request_bytes(connection.parser, request, body))
                if is_sent or not is_reused or is_retry:
                    return connection  # a failed write is found by the read: no answer
                error = await connection.lost(timeouts.get("write"))
            except BaseException as exc:
                self.release(connection, reuse=False)
                _raise_as_httpx(exc)
            self.release(connection, reuse=False)
            if not isinstance(error, ConnectionResetError | BrokenPipeError):
                raise httpx2.WriteError(f"the request could not be written: {error}",
                                        request=request)
            is_retry = True

    async def _acquire(self, origin: tuple[str, int], request: httpx2.Request,
                       timeouts: dict[str, float | None]) -> tuple[_Connection, bool]:
        """An idle connection to ``origin`` (and True), or a new one (and False); waits (up
        to the pool timeout) while :data:`MAX_CONNECTIONS` are open and none is idle."""
        loop = asyncio.get_running_loop()
        pool = timeouts.get("pool")
        deadline = None if pool is None else loop.time() + pool
        while True:
            if self._is_closed:
                raise httpx2.PoolTimeout("the connections are closed", request=request)
            while self._idle:
                connection = self._idle.pop()
                if connection.origin == origin and connection.is_reusable:
                    return connection, True
                self._drop(connection)
            if self._open < MAX_CONNECTIONS:
                return await self._connect(origin, request, timeouts.get("connect")), False
            waiter: asyncio.Future[bool] = loop.create_future()  # True: one came free
            self._waiting.append(waiter)
            timer = None if deadline is None else loop.call_at(deadline, _time_out, waiter)
            try:
                if not await waiter:
                    raise httpx2.PoolTimeout("no connection to the upstream came free in "
                                             "time", request=request)
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result():
                    self._wake_one()  # cancelled as it was woken: the next waiter goes instead
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiting:
                    self._waiting.remove(waiter)

    async def _connect(self, origin: tuple[str, int], request: httpx2.Request,
                       timeout: float | None) -> _Connection:
        self._open += 1
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(origin), origin[0], origin[1]), timeout)
        except BaseException as exc:
            self._open -= 1
            self._wake_one()
            if isinstance(exc, TimeoutError):
                raise httpx2.ConnectTimeout("timed out connecting to the upstream",
                                            request=request) from None
            if isinstance(exc, OSError):
                raise httpx2.ConnectError(str(exc), request=request) from exc
            raise
        return connection

    def release(self, connection: _Connection, *, reuse: bool) -> None:
        """``connection`` is done with: kept for the next request if its exchange ended
        cleanly and both sides may go on, else closed."""
        if reuse and not self._is_closed and not connection.is_lost:
            try:
                connection.parser.start_next_cycle()  # refuses if either side must close
            except h11.LocalProtocolError:
                reuse = False
        if reuse and connection.is_idle_and_open and len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
            self._wake_one()
            return
        self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.pop(0)
            if not waiter.done():
                waiter.set_result(True)
                return

    async def aclose(self) -> None:
        self._is_closed = True
        while self._idle:
            self._drop(self._idle.pop())
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(True)
        await self._inner.aclose()


def _request_bytes(parser: h11.Connection, request: httpx2.Request, body: bytes) -> bytes:
    """The request's head, body and end, as one write."""
    head = h11.Request(method=b"POST", target=request.url.raw_path or b"/",
                       headers=request.headers.raw)
    data = parser.send(head) or b""
    if body:
        data += parser.send(h11.Data(data=body)) or b""
    return data + (parser.send(h11.EndOfMessage()) or b"")


def _raise_as_httpx(exc: BaseException) -> NoReturn:
    """``exc`` in httpx's terms where it is h11's or the socket's; else as it is."""
    if isinstance(exc, h11.LocalProtocolError):  # a header h11 refuses to send
        raise httpx2.LocalProtocolError(str(exc)) from exc
    if isinstance(exc, OSError):
        raise httpx2.WriteError(str(exc)) from exc
    raise exc


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


def _body_of(request: httpx2.Request) -> bytes | None:
    """The request's body if it is bytes in memory (else None: the inner transport
    streams it)."""
    try:
        return request.content
    except httpx2.RequestNotRead:
        return None

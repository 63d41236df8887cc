"""What uvicorn runs: the application as each ``proctor serve`` worker process builds it
from the environment (``PROCTOR_HOME``, ``PROCTOR_DATABASE_URL``,
``PROCTOR_SERVER_CONFIG``), and the HTTP protocol it speaks.

``proctor serve`` parses HTTP/1.1 with httptools (uvicorn's C-backed parser; h11, in
pure Python, took about a quarter of the event loop's CPU per ``POST /v1/decide``) and
runs uvicorn's default loop, uvloop where it is installed. For uvicorn by hand::

    uvicorn --factory proctor.server.asgi:app_from_env \\
        --http proctor.server.asgi:NoDelayHttpToolsProtocol
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from fastapi import FastAPI
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["HEAD_TIMEOUT_SECONDS", "MAX_HEAD_BYTES", "NoDelayH11Protocol",
           "NoDelayHttpToolsProtocol", "app_from_env"]

MAX_HEAD_BYTES = 16 * 1024
"""How much of a request head (request line and headers) ``proctor serve`` takes in
before the head is whole: h11's own limit, which uvicorn's h11 protocol applies and
httptools does not have."""

HEAD_TIMEOUT_SECONDS = 30.0
"""How long ``proctor serve`` waits for a request head to be whole, from the
connection's start or the head's first byte; then the connection is closed."""

_INVALID = "Invalid HTTP request received."  # uvicorn's words for a request it cannot read


class _BadHostError(Exception):
    """A request head with two Host headers, or none where HTTP/1.1 needs one."""


def app_from_env() -> FastAPI:
    """Open the runtime of the configured home and serve it; the app closes it on exit."""
    # imported here: `proctor serve --workers N` imports this module for its protocol, and
    # its own process never builds the app (FastAPI and the routes: 0.7 s of CPU)
    from proctor.config import load_settings
    from proctor.runtime import open_runtime
    from proctor.server.app import create_app
    from proctor.server.config import load_server_config

    settings = load_settings()
    config = load_server_config(settings.home)
    return create_app(open_runtime(settings), config, owns_runtime=True)


def _no_delay(transport: asyncio.Transport) -> None:
    """Nagle's algorithm off on a TCP connection.

    With several workers uvicorn binds the listening socket itself, without naming
    TCP as its protocol, and asyncio then leaves Nagle's algorithm on for the
    connections it accepts: a response's head and body go out as two small writes,
    and the second waits for the client's delayed ACK (40 ms on Linux) on every
    request of a keep-alive connection. (uvloop turns it off itself.)
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol (pure Python) with Nagle's algorithm off on every
    connection, and the time limit on a request head of
    :class:`NoDelayHttpToolsProtocol` (``proctor gateway`` speaks it)."""

    head_timeout_seconds = HEAD_TIMEOUT_SECONDS

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)
        self._head_timer = _timed_head(self, None)
        self.conn.next_event = _unambiguous(self.conn.next_event)  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer = _head_done(self._head_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # h11 leaves IDLE when a request's head is whole; after a response, the next
        # request's wait is uvicorn's keep-alive until its first byte comes
        if self.conn.their_state is h11.IDLE:
            self._head_timer = _timed_head(self, self._head_timer)
        else:
            self._head_timer = _head_done(self._head_timer)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # the next head's wait: also when its first bytes came with the request answered
        # (one read, already in h11's buffer: no data_received will start its timer)
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._head_timer = _timed_head(self, self._head_timer)


def _unambiguous(next_event: Callable[[], Any]) -> Callable[[], Any]:
    """h11's ``next_event``, refusing a request with both Content-Length and
    Transfer-Encoding: h11 frames it by Transfer-Encoding and reads on, where a proxy in
    front framing it by Content-Length would see another request in the body (request
    smuggling; RFC 9112 6.1 has the server reject it, or close the connection after).
    Raised as h11's own error, uvicorn answers it 400 and closes, as httptools does."""
    def checked() -> Any:
        event = next_event()
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")
        return event
    return checked


def _timed_head(protocol: NoDelayH11Protocol | NoDelayHttpToolsProtocol,
                timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle:
    """``timer``, or a new one that closes ``protocol``'s connection when a head is not
    whole in time."""
    if timer is not None:
        return timer
    transport = protocol.transport

    def timed_out() -> None:
        if not transport.is_closing():
            protocol.logger.debug("a request head was not whole in time: connection closed")
            transport.close()
    return protocol.loop.call_later(protocol.head_timeout_seconds, timed_out)


def _head_done(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """None, ``timer`` cancelled: the head came whole (or the connection went)."""
    if timer is not None:
        timer.cancel()
    return None


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with Nagle's algorithm off on every connection, and
    h11's limit on a request head: a head still incomplete after more than
    :data:`MAX_HEAD_BYTES` of it came in is answered 400 and the connection closed, as
    uvicorn's h11 protocol answers it.

    httptools keeps a header's pieces until the header is whole, and uvicorn keeps the
    URL and every header: without a limit a client could grow a worker's memory without
    end by never finishing its head. A read is counted to the open head when all of it
    is that head's: it came while the head was open, or between two requests and began
    only this one. The share of a read that also ended an earlier request (pipelining)
    is not known, and not counted: such a head is refused at most one read later (a read
    is at most 256 KiB).

    And a time limit on a head (:data:`HEAD_TIMEOUT_SECONDS`, from the connection's
    start or the head's first byte): uvicorn times out a connection only between two
    requests (its keep-alive), never one that sends nothing or a head a byte at a time,
    so a client could hold as many connections as the process has descriptors. The
    connection is then closed (uvicorn has no answer for it, nor h11).
    """

    head_timeout_seconds = HEAD_TIMEOUT_SECONDS

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_message = False
        self._head_open = False
        self._head_read = 0  # bytes of the open head, from the reads counted
        self._messages = 0
        self._heads = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)
        self._head_timer = _timed_head(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer = _head_done(self._head_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_message, messages, heads = self._in_message, self._messages, self._heads
        super().data_received(data)
        if not self._head_open or self.transport.is_closing():
            return
        if messages == self._messages or (not in_message and self._messages == messages + 1
                                          and heads == self._heads):
            self._head_read += len(data)  # all of it is the open head's
        if self._head_read > MAX_HEAD_BYTES:
            self.logger.warning(_INVALID)
            self.send_400_response(_INVALID)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_timer = _timed_head(self, self._head_timer)
        self._in_message = self._head_open = True
        self._head_read = 0
        self._messages += 1

    def on_headers_complete(self) -> None:
        self._head_timer = _head_done(self._head_timer)
        self._head_open = False
        self._heads += 1
        # h11 refuses a request with two Host headers, or none in HTTP/1.1 (RFC 9112
        # 3.2: a 400), httptools takes either: a proof's htu is made of the first Host,
        # where something in front may have read another. Raised in the parser's
        # callback, it is the parser's error: uvicorn answers it 400, as h11's
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() != "1.0"):
            raise _BadHostError
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

"""What uvicorn runs: the application as each ``proctor serve`` worker process builds it
from the environment (``PROCTOR_HOME``, ``PROCTOR_DATABASE_URL``,
``PROCTOR_SERVER_CONFIG``), and the HTTP protocol it speaks.

``proctor serve`` parses HTTP/1.1 with httptools (uvicorn's C-backed parser; h11, in
pure Python, took about a quarter of the event loop's CPU per ``POST /v1/decide``) and
runs uvicorn's default loop, uvloop where it is installed; ``proctor gateway`` parses with
the same protocol, on asyncio. For uvicorn by hand::

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

from proctor.server.framing import (
    BODY_TIMEOUT_SECONDS,
    HEAD_TIMEOUT_SECONDS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    Refusal,
    head_refusal,
    raw_head_refusal,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["BODY_TIMEOUT_SECONDS", "HEAD_TIMEOUT_SECONDS", "MAX_HEADERS", "MAX_HEAD_BYTES",
           "NoDelayH11Protocol", "NoDelayHttpToolsProtocol", "app_from_env"]

_INVALID = "Invalid HTTP request received."  # uvicorn's words for a request it cannot read
_MALFORMED = Refusal(None, "")  # the parser's own 400


class _RefusedError(Exception):
    """A head :mod:`proctor.server.framing` refuses, raised in httptools' callback: the
    parser's error, which uvicorn answers with :meth:`send_400_response`."""


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
    connection, the time limits on a request's head and body and the refusals of
    :mod:`proctor.server.framing` (``proctor gateway`` spoke it until December 2026; both
    servers now speak :class:`NoDelayHttpToolsProtocol`)."""

    head_timeout_seconds = HEAD_TIMEOUT_SECONDS
    body_timeout_seconds = BODY_TIMEOUT_SECONDS

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: Refusal | None = None
        # whether the buffer may hold a whole head not yet checked: a head ends with a
        # LF, so the read that makes it whole has one (or it came pipelined behind an
        # answered request); a head sent a byte a read is not copied and scanned again
        # on every read (5.7 against 1.6 us a read for 16 KiB, measured)
        self._unchecked = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)
        self._head_timer = _timed_head(self, None)
        self.conn.next_event = self._checked(self.conn.next_event)  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer = _cancelled(self._head_timer)
        self._body_timer = _cancelled(self._body_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unchecked = self._unchecked or b"\n" in data
        super().data_received(data)
        # h11 leaves IDLE when a request's head is whole; after a response, the next
        # request's wait is uvicorn's keep-alive until its first byte comes
        state = self.conn.their_state
        if state is h11.IDLE:
            self._head_timer = _timed_head(self, self._head_timer)
        else:
            self._head_timer = _cancelled(self._head_timer)
        if state is h11.SEND_BODY and not self.transport.is_closing():
            self._body_timer = _timed_body(self, self._body_timer)
        else:
            self._body_timer = _cancelled(self._body_timer)

    def on_response_complete(self) -> None:
        self._unchecked = True  # the next head may be in the buffer already
        super().on_response_complete()
        # the next head's wait: also when its first bytes came with the request answered
        # (one read, already in h11's buffer: no data_received will start its timer)
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._head_timer = _timed_head(self, self._head_timer)

    def send_400_response(self, msg: str) -> None:
        if not _sent_refusal(self):
            super().send_400_response(msg)

    def _checked(self, next_event: Callable[[], Any]) -> Callable[[], Any]:
        """h11's ``next_event``, refusing what :mod:`proctor.server.framing` refuses,
        raised as h11's own error: uvicorn answers it (:meth:`send_400_response`) and
        closes. h11 frames a request with both Content-Length and Transfer-Encoding by
        the latter and reads on, where a proxy in front framing it by Content-Length
        would see another request in the body (RFC 9112 6.1 has the server reject it)."""
        conn = self.conn

        def checked() -> Any:
            if conn.their_state is h11.IDLE and self._unchecked:  # a head, maybe whole
                self._unchecked = False
                self._refusal = raw_head_refusal(conn.trailing_data[0])
                if self._refusal is not None:
                    raise h11.RemoteProtocolError("a head h11 would mend")
            event = next_event()
            if isinstance(event, h11.EndOfMessage) and event.headers:
                # trailer fields: uvicorn drops them, httptools would add them to the
                # request's headers; refused on both, as no proxy in front checked them
                self._refusal = None
                raise h11.RemoteProtocolError("trailer fields")
            if isinstance(event, h11.Request):
                # CONNECT: h11 would switch protocols on its 2xx; httptools refuses it
                self._refusal = _MALFORMED if event.method == b"CONNECT" else head_refusal(
                    event.http_version.decode("ascii"), event.target, event.headers)
                if self._refusal is not None:
                    raise h11.RemoteProtocolError("a head proctor refuses")
            return event
        return checked


def _sent_refusal(protocol: NoDelayH11Protocol | NoDelayHttpToolsProtocol) -> bool:
    """Answer the connection's refusal, if it has one of its own, and close; False if it
    has none (the parser's 400 is uvicorn's). A refusal met once the application has
    begun its answer (in a body, say) only closes the connection: a 400 written there
    would be read as part of that answer."""
    refusal, protocol._refusal = protocol._refusal, None
    cycle = protocol.cycle
    if cycle is not None and cycle.response_started and not cycle.response_complete:
        protocol.transport.close()
        return True
    if refusal is None or refusal.code is None:
        return False
    protocol.logger.debug("a request refused: %s", refusal.code)
    protocol.transport.write(refusal.response())
    protocol.transport.close()
    return True


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


_BODY_TIMED_OUT = Refusal("request_timeout", "the request body did not come whole in "
                          f"{BODY_TIMEOUT_SECONDS:g} s after its head")


def _timed_body(protocol: NoDelayH11Protocol | NoDelayHttpToolsProtocol,
                timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle:
    """``timer``, or a new one that answers 408 (if the application has not begun its
    answer) and closes ``protocol``'s connection when a body is not whole in time: a
    client trickling a body holds a connection and an application task otherwise."""
    if timer is not None:
        return timer
    transport = protocol.transport

    def timed_out() -> None:
        if transport.is_closing():
            return
        protocol.logger.debug("a request body was not whole in time: connection closed")
        cycle = protocol.cycle
        # not while an earlier request's answer may be going out (httptools queues a
        # pipelined request whose head came during it): the connection is only closed
        if cycle is not None and not cycle.response_started \
                and not getattr(protocol, "pipeline", None):
            transport.write(_BODY_TIMED_OUT.response())
        if cycle is not None:  # the application's receive answers http.disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        transport.close()
    return protocol.loop.call_later(protocol.body_timeout_seconds, timed_out)


def _cancelled(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """None, ``timer`` cancelled: the head (or body) came whole, or the connection went."""
    if timer is not None:
        timer.cancel()
    return None


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with Nagle's algorithm off on every connection, the
    refusals of :mod:`proctor.server.framing`, and h11's limit on a request head: a head
    still incomplete after more than :data:`MAX_HEAD_BYTES` of it came in is answered
    400 and the connection closed, as uvicorn's h11 protocol answers it.

    httptools keeps a header's pieces until the header is whole, and uvicorn keeps the
    URL and every header: without a limit a client could grow a worker's memory without
    end by never finishing its head. A read is counted to the open head when all of it
    is that head's: it came while the head was open, or between two requests and began
    only this one. The share of a read that also ended an earlier request (pipelining)
    is not known, and not counted: such a head is refused at most one read later (a read
    is at most 256 KiB).

    And time limits: on a head (:data:`HEAD_TIMEOUT_SECONDS`, from the connection's
    start or the head's first byte): uvicorn times out a connection only between two
    requests (its keep-alive), never one that sends nothing or a head a byte at a time,
    so a client could hold as many connections as the process has descriptors. The
    connection is then closed (uvicorn has no answer for it, nor h11). On a body
    (:data:`BODY_TIMEOUT_SECONDS` from the head's end), started only when a read ends
    with a body still open: 408 and the connection closed.
    """

    head_timeout_seconds = HEAD_TIMEOUT_SECONDS
    body_timeout_seconds = BODY_TIMEOUT_SECONDS

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_message = False
        self._head_open = False
        self._head_read = 0  # bytes of the open head, from the reads counted
        self._messages = 0
        self._heads = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: Refusal | None = None
        self._chunk_events = 0  # chunk heads, body parts and chunk ends parsed
        self._chunk_head_last = False  # the last of them a chunk's head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)
        self._head_timer = _timed_head(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer = _cancelled(self._head_timer)
        self._body_timer = _cancelled(self._body_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_message, messages, heads = self._in_message, self._messages, self._heads
        chunk_events, after_chunk_head = self._chunk_events, self._chunk_head_last
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self._head_open:
            if self._in_message and self._body_timer is None:  # a body still to come
                self._body_timer = _timed_body(self, None)
            if after_chunk_head and chunk_events == self._chunk_events and self._in_message \
                    and len(data) > 2:
                # a whole read after a chunk's head, none of it that chunk's data: the
                # last chunk's trailer fields (httptools keeps a field's value whole
                # until the next field or the body's end calls on_header), refused
                # below as they come rather than read to their end
                self.logger.warning(_INVALID)
                self.send_400_response(_INVALID)
            return
        if messages == self._messages or (not in_message and self._messages == messages + 1
                                          and heads == self._heads):
            self._head_read += len(data)  # all of it is the open head's
        if self._head_read > MAX_HEAD_BYTES:
            self.logger.warning(_INVALID)
            self.send_400_response(_INVALID)

    def send_400_response(self, msg: str) -> None:
        if not _sent_refusal(self):
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_timer = _timed_head(self, self._head_timer)
        self._in_message = self._head_open = True
        self._head_read = 0
        self._messages += 1

    def on_headers_complete(self) -> None:
        self._head_timer = _cancelled(self._head_timer)
        self._head_open = False
        self._heads += 1
        # Raised in the parser's callback, a refusal is the parser's error: uvicorn
        # answers it (send_400_response) before the application runs. httptools takes
        # two Host headers or none in HTTP/1.1 (a proof's htu is made of the first Host,
        # where something in front may have read another), `Transfer-Encoding: gzip,
        # chunked` as chunked, and HTTP/0.9 and HTTP/2.0 request lines
        self._refusal = head_refusal(self.parser.get_http_version(), self.url, self.headers)
        if self._refusal is not None:
            raise _RefusedError
        super().on_headers_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools gives a chunked body's trailer fields to on_header, and uvicorn adds
        # them to the request's headers (the list the application already holds): a
        # field no proxy in front checked, such as an Authorization the head did not
        # have. Refused at the first, before the application has the body's end
        if self._in_message and not self._head_open:
            raise _RefusedError
        super().on_header(name, value)

    def on_chunk_header(self) -> None:
        self._chunk_events += 1
        self._chunk_head_last = True

    def on_body(self, body: bytes) -> None:
        self._chunk_events += 1
        self._chunk_head_last = False
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._chunk_events += 1
        self._chunk_head_last = False

    def on_message_complete(self) -> None:
        self._in_message = self._chunk_head_last = False
        self._body_timer = _cancelled(self._body_timer)
        super().on_message_complete()

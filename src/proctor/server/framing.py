"""What proctor's HTTP servers refuse in a request's framing, before any application
sees the request: the checks ``proctor serve`` and ``proctor gateway`` (both on
httptools: :class:`~proctor.server.asgi.NoDelayHttpToolsProtocol`) make on a head, in this
order, and :class:`~proctor.server.asgi.NoDelayH11Protocol` makes on h11, whatever parser
read it.

1. A version other than HTTP/1.0 or HTTP/1.1 (an HTTP/0.9 request line without one, a
   ``HTTP/2.0`` or ``HTTP/1.2`` over HTTP/1 framing): 505 ``http_version_unsupported``.
2. A head of more than :data:`MAX_HEADERS` header fields, or more than
   :data:`MAX_HEAD_BYTES` of request target, names and values: 431
   ``request_head_too_large`` (a head still incomplete past that size is refused 400 as
   it comes in, by h11 and by :class:`~proctor.server.asgi.NoDelayHttpToolsProtocol`).
3. Framing two readers could read two ways (request smuggling, RFC 9112 6.1 and 6.3):
   both ``Content-Length`` and ``Transfer-Encoding``; a ``Transfer-Encoding`` other than
   one field of exactly ``chunked`` (``gzip, chunked`` is read as chunked by httptools,
   and refused by h11); ``Transfer-Encoding`` in an HTTP/1.0 request; two ``Host``
   fields, or none in HTTP/1.1, or one that is not ``host[:port]`` (RFC 9112 3.2): 400,
   the parser's own answer to a request it cannot read (``Invalid HTTP request
   received.``), and the connection closed. (Two different
   ``Content-Length`` values, obs-fold lines, a bare LF or CR, a control character in a
   field are refused by the parsers themselves, or for h11 by :func:`raw_head_refusal`.)
4. A request asking to switch protocols (a ``Connection`` field with the ``upgrade``
   token: a WebSocket handshake, ``Upgrade: h2c``): 400 ``upgrade_unsupported``. Neither
   server switches protocols (both run uvicorn with ``ws="none"``), and httptools reads
   nothing after such a head: no body (the application saw an empty one) and no
   request pipelined behind it (left unanswered until the connection timed out).
   ``CONNECT``: 400 (httptools refuses it itself; h11 handed it to the application).
5. Trailer fields after a chunked body: 400 (httptools added them to the request's
   headers, which the application reads once the body is whole), as they come: a
   trailer is not read to its end (httptools keeps a field whole until the next).

A refusal is answered with ``Connection: close`` and the connection closed: after a head
the server would not read, it cannot know where the next request starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from proctor.codes import Code, http_status

__all__ = ["BODY_TIMEOUT_SECONDS", "HEAD_TIMEOUT_SECONDS", "MAX_HEADERS", "MAX_HEAD_BYTES",
           "Refusal", "head_refusal", "raw_head_refusal"]

MAX_HEAD_BYTES = 16 * 1024
"""How much of a request head (request target, header names and values) the servers
take: h11's own limit on a head that is not yet whole, applied to whole heads too."""

MAX_HEADERS = 100
"""How many header fields a request head may have (Apache's default)."""

HEAD_TIMEOUT_SECONDS = 30.0
"""How long the servers wait for a request head to be whole, from the connection's
start or the head's first byte; then the connection is closed."""

BODY_TIMEOUT_SECONDS = 30.0
"""How long the servers wait for a request body to be whole once its head is; then the
request is answered 408 ``request_timeout`` (if no answer has begun) and the connection
closed."""

_VERSIONS = frozenset({"1.0", "1.1"})
_BARE_LF = re.compile(rb"(?<!\r)\n")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not HTAB, CR, LF
_HEAD_END = re.compile(rb"\n\r?\n")
# RFC 9112 3.2: uri-host [ ":" port ] (an IP literal, or a name or IPv4 address of
# unreserved, sub-delims and %-escapes), or empty
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused. ``code`` None: the parser's own 400."""

    code: Code | None
    detail: str

    def response(self) -> bytes:
        """The whole answer, as written on the connection before it is closed."""
        assert self.code is not None
        status = http_status(self.code)
        phrase = HTTPStatus(status).phrase
        body = json.dumps({"type": f"urn:proctor:problem:{self.code}", "title": phrase,
                           "status": status, "detail": self.detail, "code": self.code},
                          separators=(",", ":")).encode()
        return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


_MALFORMED = Refusal(None, "")
_TARGET = Refusal("request_target_invalid", "the request target must be a path (origin "
                  "form, RFC 9112 3.2.1), not a URL or an authority")
_UPGRADE = Refusal("upgrade_unsupported", "this server does not switch protocols: send the "
                   "request without `Connection: upgrade`")


def head_refusal(version: str, target: bytes, headers: Sequence[tuple[bytes, bytes]]
                 ) -> Refusal | None:
    """Why a parsed head is refused (``headers`` with lower-case names), or None."""
    if version not in _VERSIONS:
        return Refusal("http_version_unsupported",
                       f"HTTP/{version[:8]} is not served here (HTTP/1.0 and 1.1 are)")
    if len(headers) > MAX_HEADERS:
        return Refusal("request_head_too_large",
                       f"the request has more than {MAX_HEADERS} header fields")
    size = len(target)
    hosts = lengths = encodings = 0
    chunked = upgrade = False
    host = b""
    for name, value in headers:
        size += len(name) + len(value) + 4  # ": " and CRLF
        if name == b"host":
            hosts += 1
            host = value
        elif name == b"content-length":
            lengths += 1
        elif name == b"transfer-encoding":
            encodings += 1
            chunked = value.strip(b" \t").lower() == b"chunked"
        elif name == b"connection":
            upgrade = upgrade or b"upgrade" in (token.strip(b" \t").lower()
                                                for token in value.split(b","))
    if size > MAX_HEAD_BYTES:
        return Refusal("request_head_too_large",
                       f"the request head is over {MAX_HEAD_BYTES} bytes")
    if hosts > 1 or (hosts == 0 and version != "1.0") or _HOST.fullmatch(host) is None:
        return _MALFORMED
    if encodings and (lengths or encodings > 1 or not chunked or version == "1.0"):
        return _MALFORMED
    if not target.startswith(b"/") and target != b"*":
        # httptools routes `POST http://elsewhere/mcp` to `/mcp` (h11 to a path of that
        # whole text, not found): neither server is a proxy, and the host in such a target
        # was never compared with the `Host` header DNS-rebinding protection checks
        return _TARGET
    if upgrade:
        return _UPGRADE
    return None


def raw_head_refusal(buffered: bytes) -> Refusal | None:
    """Why the head at the start of ``buffered`` is refused for what its parser (h11)
    would take and mend: an obs-fold line (a field continued on the next line, which
    h11 joins and a proxy may read as a field of its own), a bare LF (h11 takes it for
    CRLF) or a control character other than HTAB in a field (h11 keeps it; httptools
    refuses all three). None if the head is fine or not yet whole."""
    end = _HEAD_END.search(buffered)
    if end is None:
        return None
    head = buffered[:end.end()]
    if b"\n " in head or b"\n\t" in head or _BARE_LF.search(head) is not None \
            or _CONTROL.search(head) is not None:
        return _MALFORMED
    return None

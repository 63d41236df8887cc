"""Local collectors for the streaming tests: a syslog receiver over TCP (RFC 6587 octet
counting) and an HTTP endpoint, each on a fixed loopback port so that it can be stopped
and started again where the stream left it. Each records the ``seq`` of every event it
stored, in arrival order, and lets a test wait for a count (bounded)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SEQ = re.compile(rb'seq="(\d+)"')


class Received:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self._changed = threading.Condition()

    def add(self, seqs: list[int], body: Any = None, headers: dict[str, str] | None = None
            ) -> None:
        with self._changed:
            self.seqs.extend(seqs)
            if body is not None:
                self.bodies.append(body)
            if headers is not None:
                self.headers.append(headers)
            self._changed.notify_all()

    def wait_for(self, count: int, *, timeout: float = 30.0) -> list[int]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(set(self.seqs)) >= count, timeout), (
                f"only {len(set(self.seqs))} of {count} events arrived")
            return list(self.seqs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class SyslogReceiver:
    """Reads octet-counted RFC 5424 frames; each one's ``seq`` goes to ``received``."""

    def __init__(self, port: int, received: Received) -> None:
        self.port, self.received = port, received
        self.messages: list[bytes] = []
        self._server: _Server | None = None
        self._connections: list[socket.socket] = []

    def start(self) -> SyslogReceiver:
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                receiver._connections.append(self.request)
                buffer = b""
                while True:
                    try:
                        chunk = self.request.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                    while b" " in buffer:
                        length, rest = buffer.split(b" ", 1)
                        if len(rest) < int(length):
                            break
                        message, buffer = rest[:int(length)], rest[int(length):]
                        receiver.messages.append(message)
                        found = _SEQ.search(message)
                        assert found is not None
                        receiver.received.add([int(found.group(1))])

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections.clear()


class HttpReceiver:
    """Takes POSTed batches (a JSON array, or Splunk HEC objects one per line)."""

    def __init__(self, port: int, received: Received,
                 status: Callable[[], int] = lambda: 200) -> None:
        self.port, self.received, self.status = port, received, status
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.status()
                if status == 200:
                    if body.startswith(b"["):
                        events = json.loads(body)
                        seqs = [e["unmapped"]["proctor"]["seq"] for e in events]
                    else:
                        events = [json.loads(line) for line in body.splitlines()]
                        seqs = [e["event"]["unmapped"]["proctor"]["seq"] for e in events]
                    receiver.received.add(seqs, events, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

"""A real HTTP receiver on a local port, recording what it was sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)  # answers, in order; then 200
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, *, timeout: float = 60.0) -> list[Received]:
        """Wait (bounded) until ``count`` requests have arrived; what arrived."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout), (
                f"{len(self.received)} of {count} deliveries arrived")
            return list(self.received)


@contextmanager
def receiver(statuses: list[int] | None = None, *, port: int = 0,
             hold_first: threading.Event | None = None) -> Iterator[Receiver]:
    """``hold_first``: the first request is recorded, then answered only once it is set
    (a sender stopped meanwhile never hears the answer)."""
    state = Receiver("", list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with state.arrived:
                state.received.append(Received(
                    {k.lower(): v for k, v in self.headers.items()}, body))
                status = state.statuses.pop(0) if state.statuses else 200
                state.arrived.notify_all()
                first = len(state.received) == 1
            if first and hold_first is not None:
                hold_first.wait(120)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/proctor"
    # shutdown() waits for serve_forever's next look at its flag: 0.5 s by default
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_until(condition: Callable[[], bool], *, timeout: float = 60.0) -> None:
    """Wait (bounded) for another thread to make ``condition`` true."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        pause.wait(0.01)

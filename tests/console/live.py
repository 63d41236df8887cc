"""A real server on a loopback port the OS chose: uvicorn serving ``create_app`` in a
thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from proctor.runtime import Runtime
from proctor.server import create_app


@contextmanager
def serving(runtime: Runtime) -> Iterator[str]:
    """The app on ``runtime``, served until the block ends; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # held from here on: no other process can take the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(200):  # up to 10 s
        if server.started:
            started.set()
            break
        if not thread.is_alive():
            break
        started.wait(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

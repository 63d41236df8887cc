"""What uvicorn runs: the application as each ``proctor serve`` worker process builds it
from the environment (``PROCTOR_HOME``, ``PROCTOR_DATABASE_URL``,
``PROCTOR_SERVER_CONFIG``), and the HTTP protocol it speaks.

For uvicorn by hand::

    uvicorn --factory proctor.server.asgi:app_from_env \\
        --http proctor.server.asgi:NoDelayH11Protocol
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["NoDelayH11Protocol", "app_from_env"]


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


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with Nagle's algorithm off on every connection.

    With several workers uvicorn binds the listening socket itself, without naming
    TCP as its protocol, and asyncio then leaves Nagle's algorithm on for the
    connections it accepts: a response's head and body go out as two small writes,
    and the second waits for the client's delayed ACK (40 ms on Linux) on every
    request of a keep-alive connection.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

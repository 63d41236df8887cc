"""The HTTP protocol ``proctor serve`` gives uvicorn: Nagle's algorithm is off on every
connection, also on a listening socket bound the way uvicorn binds it for several
workers (where asyncio would leave it on, and each response would wait for a
delayed ACK)."""

from __future__ import annotations

import asyncio
import socket

import anyio
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from proctor.server.asgi import NoDelayH11Protocol

pytestmark = pytest.mark.anyio


async def _app(scope: dict[str, object], receive: object, send: object) -> None:
    assert callable(send)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _nodelay_of_accepted_connection(protocol: type[H11Protocol]) -> int:
    listening = socket.socket(family=socket.AF_INET)  # as uvicorn binds it for workers
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, http=protocol, lifespan="off",
                                           log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        with anyio.fail_after(10):
            while not server.started:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"ok")
            (connection,) = server.server_state.connections
            accepted = connection.transport.get_extra_info("socket")
            value: int = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()
            await writer.wait_closed()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        listening.close()
    return value


async def test_nagle_is_off_on_connections_proctor_serve_accepts() -> None:
    assert await _nodelay_of_accepted_connection(H11Protocol) == 0  # the problem
    assert await _nodelay_of_accepted_connection(NoDelayH11Protocol) != 0

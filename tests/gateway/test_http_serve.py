"""How ``proctor gateway`` runs its server: under :func:`anyio.run`, so that anyio knows
it runs on asyncio once, instead of sniffing for an asyncio task at every cancel scope,
event and checkpoint of every request (``uvicorn.run`` leaves it to sniff)."""

from __future__ import annotations

import threading
from typing import Any

import httpx2
import sniffio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proctor.gateway.http import serve_http
from tests.gateway.conftest import WAIT
from tests.gateway.in_process import listening_socket, url_of


def test_the_server_runs_with_anyio_knowing_its_library_and_stops_when_told() -> None:
    seen: dict[str, Any] = {}
    server: uvicorn.Server

    async def endpoint(request: Request) -> JSONResponse:
        # what anyio reads before sniffing: set by anyio.run, not by asyncio.run
        seen["named"] = sniffio.current_async_library_cvar.get()
        server.should_exit = True
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/", endpoint=endpoint)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http="h11"))
    sock = listening_socket()  # listening already: the request waits in its backlog
    url = url_of(sock)
    outcome: list[bool] = []
    runner = threading.Thread(target=lambda: outcome.append(serve_http(server, [sock])))
    runner.start()
    try:
        answer = httpx2.get(f"{url}/", timeout=WAIT)
    finally:
        server.should_exit = True
        runner.join(WAIT)
        sock.close()
    assert answer.json() == {"ok": True}
    assert seen["named"] == "asyncio"
    assert not runner.is_alive()
    assert outcome == [True]  # it started, and stopped when told

"""An agent-side proxy for clients that cannot sign: it holds an agent's grant and key, adds
the bearer grant and a fresh DPoP proof to every request, and forwards it to a proctor
gateway, streaming the answer back. Everything else passes unchanged (``Host``,
``Origin``, ``Mcp-Session-Id``, ``Last-Event-ID``…), so a conformance suite sees
the gateway as it is.

    PROCTOR_GRANT=... python -m tests.gateway.signing_proxy --gateway URL --port N --key-file K
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx2
import uvicorn

from proctor.clock import SystemClock
from proctor.gateway import load_agent_key
from proctor.gateway.client import PROOF_HEADER, proof_method, rpc_method
from proctor.grants import make_proof
from proctor.grants.proofs import PrivateKey

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_HOP = {b"authorization", b"dpop", b"content-length", b"transfer-encoding", b"connection",
        b"keep-alive"}


class SigningProxy:
    """ASGI: sign and forward."""

    def __init__(self, gateway: str, token: str, key: PrivateKey) -> None:
        self._gateway = gateway.rstrip("/")
        self._token = token
        self._key = key
        self._clock = SystemClock()
        self._client = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self._client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        target = self._gateway + scope["path"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        headers.append((b"authorization", f"Bearer {self._token}".encode()))
        proof = make_proof(self._key, self._token, target=target, now=self._clock.now(),
                           method=proof_method(scope["method"], rpc_method(body)))
        headers.append((PROOF_HEADER.lower().encode(), proof.encode()))
        query = scope.get("query_string", b"").decode()
        url = target + (f"?{query}" if query else "")
        request = self._client.build_request(scope["method"], url, headers=headers,
                                             content=body)
        response = await self._client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw
                                    if k.lower() not in _HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True, help="the gateway's public URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    args = parser.parse_args()
    proxy = SigningProxy(args.gateway, os.environ["PROCTOR_GRANT"], load_agent_key(args.key_file))
    uvicorn.run(proxy, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

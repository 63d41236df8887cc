"""The agent's side of the HTTP gateway: its grant as a bearer token and a fresh proof of
possession on every request, for the MCP SDK's streamable HTTP client.

>>> auth = GrantAuth(grant_token, agent_key, SystemClock())          # doctest: +SKIP
>>> client = httpx2.AsyncClient(auth=auth)                           # doctest: +SKIP
>>> streamable_http_client("https://mcp.acme.example/mcp/git", http_client=client)  # doctest: +SKIP

The proof's ``htm`` is the JSON-RPC method of the request (``tools/call``), not
the HTTP method: a proof made for ``tools/list`` cannot be replayed as a call.
Its ``htu`` is the URL posted to, without query.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx2

from proctor.clock import Clock
from proctor.documents import parse_json
from proctor.errors import DocumentError
from proctor.grants import make_proof
from proctor.grants.proofs import PrivateKey

__all__ = ["PROOF_HEADER", "GrantAuth", "endpoint_url", "rpc_method"]

PROOF_HEADER = "DPoP"


def endpoint_url(url: httpx2.URL) -> str:
    """A request's URL as a proof names it: scheme, host, port and path."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


class GrantAuth(httpx2.Auth):
    """Adds ``Authorization: Bearer <grant>`` and, on JSON-RPC requests, a ``DPoP`` proof."""

    requires_request_body = True

    def __init__(self, token: str, key: PrivateKey, clock: Clock) -> None:
        self._token = token
        self._key = key
        self._clock = clock

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response,
                                                              None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        method = rpc_method(request.content)
        if method is not None:
            request.headers[PROOF_HEADER] = make_proof(
                self._key, self._token, method=method, target=endpoint_url(request.url),
                now=self._clock.now())
        yield request


def rpc_method(body: bytes) -> str | None:
    """The JSON-RPC method of a request body, if it is one."""
    if not body:
        return None
    try:
        document = parse_json(body, what="the request body", max_bytes=len(body))
    except DocumentError:
        return None
    method = document.get("method") if isinstance(document, dict) else None
    return method if isinstance(method, str) else None

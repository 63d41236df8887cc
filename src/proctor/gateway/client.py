"""The agent's side of the HTTP gateway: its grant as a bearer token and a fresh proof of
possession on every request, for the MCP SDK's streamable HTTP client.

>>> auth = GrantAuth(grant_token, agent_key, SystemClock())          # doctest: +SKIP
>>> client = httpx2.AsyncClient(auth=auth)                           # doctest: +SKIP
>>> streamable_http_client("https://mcp.acme.example/mcp/git", http_client=client)  # doctest: +SKIP

Every request carries a proof, whatever it is: the gateway checks one on each (its
door for what it does not decide, the decision for a call), so a grant alone opens,
answers, cancels and ends nothing. The proof's ``htm`` (:func:`proof_method`) is, for
a POST, the JSON-RPC method of its message (``tools/call``, ``notifications/cancelled``),
not the HTTP method: a proof made for ``tools/list`` cannot be replayed as a call; for
a POST whose message has no method (the agent's answer to the gateway's request:
sampling, elicitation) it is :data:`RESPONSE_METHOD`; for any other request (``GET``,
``DELETE``) it is the HTTP method. Its ``htu`` is the URL addressed, without query.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx2

from proctor.clock import Clock
from proctor.documents import parse_json
from proctor.errors import DocumentError
from proctor.grants import make_proof
from proctor.grants.proofs import PrivateKey

__all__ = ["PROOF_HEADER", "RESPONSE_METHOD", "GrantAuth", "endpoint_url", "proof_method",
           "rpc_method"]

PROOF_HEADER = "DPoP"
RESPONSE_METHOD = "response"
"""The ``htm`` of the proof of a POST whose message names no method: a JSON-RPC response
(the agent's answer to a request the gateway sent it during a call), or anything else
without one. No method of MCP is spelt so."""


def endpoint_url(url: httpx2.URL) -> str:
    """A request's URL as a proof names it: scheme, host, port and path."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


class GrantAuth(httpx2.Auth):
    """Adds ``Authorization: Bearer <grant>`` and a fresh ``DPoP`` proof to every request."""

    requires_request_body = True

    def __init__(self, token: str, key: PrivateKey, clock: Clock) -> None:
        self._token = token
        self._key = key
        self._clock = clock

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response,
                                                              None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        method = proof_method(request.method, rpc_method(request.content))
        request.headers[PROOF_HEADER] = make_proof(
            self._key, self._token, method=method, target=endpoint_url(request.url),
            now=self._clock.now())
        yield request


def proof_method(http_method: str, rpc: str | None) -> str:
    """The ``htm`` a request's proof is made for: for a POST its message's JSON-RPC method
    ``rpc``, or :data:`RESPONSE_METHOD` if it has none; the HTTP method of any other."""
    if http_method.upper() != "POST":
        return http_method.upper()
    return RESPONSE_METHOD if rpc is None else rpc


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

"""Signing each request to proctor with a fresh identity proof: an ``httpx`` auth.

proctor takes an agent's own-key identity proof once, and only for the request it names
(its method, its URL without query, its body's SHA-256): a captured proof is worth
nothing, in another request or in the same one again. :class:`AgentAuth` signs one as
each request leaves, over the request as ``httpx`` sends it::

    >>> auth = AgentAuth("spiffe://acme.example/agent/a", AgentKey.generate(),
    ...                  audience="spiffe://acme.example/proctor")
    >>> request = httpx.Request("POST", "http://proctor.test/v1/tasks", json={"x": 1})
    >>> next(auth.auth_flow(request)).headers["Authorization"][:9]
    'Bearer ey'

The clients (:class:`~proctor.client.ProctorClient`, its async twin) use it for every
request; an agent that calls the API with an ``httpx`` client of its own passes one as
``auth=``.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from proctor.client.keys import AgentKey
from proctor.clock import Clock, SystemClock

__all__ = ["AgentAuth"]


class AgentAuth(httpx.Auth):
    """``Authorization: Bearer <own-key identity proof for this request>``."""

    requires_request_body = True  # the proof is signed over the body's hash

    def __init__(self, agent_id: str, key: AgentKey, *, audience: str,
                 clock: Clock | None = None) -> None:
        self.agent_id = agent_id
        self.key = key
        self.audience = audience
        self.clock = clock or SystemClock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = request.url
        # the path as the server reads it (decoded), the query left out (RFC 9449's htu)
        target = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
        proof = self.key.identity_proof(self.agent_id, audience=self.audience,
                                        now=self.clock.now(), method=request.method,
                                        url=target, body=request.content)
        request.headers["Authorization"] = f"Bearer {proof}"
        yield request

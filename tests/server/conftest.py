"""The API in process (httpx ASGITransport) on a real runtime: a real store on each
backend, the example policies, real keys, the admin token as ``proctor init`` makes it.

The clock is frozen at the wall-clock time the test starts (proofs carry real
times); tests move it to expire things or to refill rate-limit buckets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from joserfc.jwk import ECKey

from proctor.audit import ActorType, EventFilter, StoredEvent, search_events
from proctor.client import AgentAuth, AgentKey
from proctor.clock import FrozenClock, SystemClock
from proctor.config import Settings
from proctor.grants import make_proof
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.server import ApiTokens, ServerConfig, create_app
from tests.identity.factories import manifest, own_key_proof, public_jwk

SUPPORT = "spiffe://acme.example/agent/support"
CODER = "spiffe://acme.example/agent/coder"
OWNER = "bob@acme.example"
BASE_URL = "http://proctor.test"
TARGET = "https://gateway.acme.example/mcp"
AUDIENCE = "spiffe://acme.example/proctor"
# A test's request header: send this request as that agent, with an own-key identity
# proof made for it as it leaves (proctor's SDK, AgentAuth), as the agent's SDK does.
AS_AGENT = "x-test-as-agent"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def frozen() -> FrozenClock:
    return FrozenClock(SystemClock().now().replace(microsecond=0))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    return settings


@pytest.fixture
def runtime(settings: Settings, frozen: FrozenClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, clock=frozen)
    yield runtime
    runtime.close()


@dataclass
class Api:
    """A client of the in-process API, with the credentials tests need."""

    client: httpx.AsyncClient
    app: FastAPI
    runtime: Runtime
    clock: FrozenClock
    admin_token: str
    keys: dict[str, ECKey] = field(default_factory=dict)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def human(self, human_id: str, *roles: str) -> dict[str, str]:
        minted = ApiTokens(self.runtime.store, self.runtime.clock).create(human_id, roles,
                                                                         issuers=())
        return {"Authorization": f"Bearer {minted.token}"}

    @property
    def auth(self) -> httpx.Auth:
        """What signs this client's requests as agents (:class:`SignsAsAgent`): for
        another client of the app."""
        auth = self.client.auth
        assert auth is not None
        return auth

    def agent(self, agent_id: str) -> dict[str, str]:
        """Headers that send a request as ``agent_id``: a fresh own-key identity proof for
        that request is signed as it is sent (:class:`SignsAsAgent`), so the same headers
        may be sent again."""
        return {AS_AGENT: agent_id}

    def proof(self, agent_id: str, method: str, path: str, body: bytes = b"") -> str:
        """An agent's own-key identity proof for one request to this API, made now."""
        return AgentKey(self.private_key(agent_id)).identity_proof(
            agent_id, audience=AUDIENCE, now=self.clock.now(), method=method,
            url=BASE_URL + path, body=body)

    def bearer(self, agent_id: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        """``Authorization`` with :meth:`proof`."""
        return {"Authorization": f"Bearer {self.proof(agent_id, method, path, body)}"}

    def own_key_proof(self, agent_id: str) -> str:
        """An agent's own-key proof for the tests' default request (not this API's)."""
        return own_key_proof(self.keys[agent_id], agent_id, self.clock.now())

    def private_key(self, agent_id: str) -> ec.EllipticCurvePrivateKey:
        key = self.keys[agent_id].private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def call_proof(self, agent_id: str, token: str, *, target: str = TARGET,
                   method: str = "tools/call") -> str:
        return make_proof(self.private_key(agent_id), token, method=method, target=target,
                          now=self.clock.now())

    async def decide(self, agent_id: str, grant: dict[str, Any], proof: str,
                     call: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/decide`` by ``agent_id`` for ``call`` under ``grant`` (answered 200)."""
        answer = await self.client.post("/v1/decide", headers=self.agent(agent_id), json={
            "token": grant["token"], "proof": proof, "call": call, "target": TARGET})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def register(self, agent_id: str, group: str, *, owner: str = OWNER) -> None:
        key = ECKey.generate_key("P-256", private=True)
        response = await self.client.post("/v1/agents", headers=self.admin, json={
            "id": agent_id, "owner": owner, "groups": [group],
            "proof": {"method": "own_key", "jwk": public_jwk(key)},
            "manifest": manifest().as_json()})
        assert response.status_code == 201, response.text
        self.keys[agent_id] = key

    async def grant(self, agent_id: str, tools: list[dict[str, Any]], *,
                    purpose: str = "help a customer", **extra: Any) -> dict[str, Any]:
        """A task started and a grant issued, by the agent itself."""
        task = await self.client.post("/v1/tasks", headers=self.agent(agent_id), json={
            "agent": agent_id, "purpose": purpose, "on_behalf_of": OWNER})
        assert task.status_code == 201, task.text
        issued = await self.client.post("/v1/grants", headers=self.agent(agent_id), json={
            "task": task.json()["id"], "scope": {"tools": tools}, **extra})
        assert issued.status_code == 201, issued.text
        body: dict[str, Any] = issued.json()
        return body

    async def overflowing(self, text: str, expression: str) -> None:
        """Revision 1 with ``text`` of one of its policies made ``expression`` plus the
        largest Cedar integer (an overflow: it cannot be evaluated), activated."""
        sources = (await self.client.get("/v1/policies/revisions/1", headers=self.admin)
                   ).json()["sources"]
        [name] = [n for n, source in sources.items() if text in source]
        sources[name] = sources[name].replace(text, text.replace(
            expression, f"{expression} + 9223372036854775807"))
        candidate = await self.client.post("/v1/policies/revisions", headers=self.admin,
                                           json={"sources": sources, "origin": "overflowing"})
        assert candidate.status_code == 201, candidate.text
        activated = await self.client.post(
            f"/v1/policies/revisions/{candidate.json()['id']}/activate", headers=self.admin)
        assert activated.status_code == 200, activated.text

    def events(self, **where: Any) -> list[StoredEvent]:
        return search_events(self.runtime.store, EventFilter(**where), limit=1000)

    def refusals(self, actor_type: ActorType) -> list[StoredEvent]:
        return [e for e in self.events(actor_type=actor_type)
                if e.event["outcome"] == "refused"]


def make_app(runtime: Runtime, config: ServerConfig | None = None) -> tuple[FastAPI, str]:
    """The app and the admin token, created as ``proctor init`` creates it; by default,
    :data:`TARGET` is an enforcement point of the deployment (``POST /v1/decide`` takes
    calls' proofs made for it)."""
    minted = ApiTokens(runtime.store, runtime.clock).ensure_admin()
    assert minted is not None
    if config is None:
        config = ServerConfig(enforcement_points=(TARGET,))
    return create_app(runtime, config), minted.token


class SignsAsAgent(httpx.Auth):
    """A test client's auth: a request with an :data:`AS_AGENT` header is sent as that
    agent, signed by proctor's SDK (:class:`~proctor.client.AgentAuth`) as it leaves."""

    requires_request_body = True

    def __init__(self) -> None:
        self.api: Api | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        agent_id = request.headers.pop(AS_AGENT, None)
        if agent_id is None or self.api is None:
            yield request
            return
        api = self.api
        yield from AgentAuth(agent_id, AgentKey(api.private_key(agent_id)), audience=AUDIENCE,
                             clock=api.clock).auth_flow(request)


def api_client(app: FastAPI, signer: SignsAsAgent, **options: Any) -> httpx.AsyncClient:
    """A client of the in-process ``app`` whose requests may be sent as agents."""
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, auth=signer, **options)


@pytest.fixture
async def api(runtime: Runtime, frozen: FrozenClock) -> AsyncIterator[Api]:
    app, token = make_app(runtime)
    signer = SignsAsAgent()
    async with api_client(app, signer) as client:
        signer.api = Api(client, app, runtime, frozen, token)
        yield signer.api


@pytest.fixture
async def agents(api: Api) -> Api:
    """The support and coding agents of the example deployment, registered through the API."""
    await api.register(SUPPORT, "support-agents")
    await api.register(CODER, "coding-agents")
    return api

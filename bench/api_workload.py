"""The API bench's workload: a proctor home on PostgreSQL with one agent (own key,
P-256) holding one grant for ``git/git_log`` under ``/srv/repos/``, and the requests it
sends, each with a fresh proof of possession and its own identity proof.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from proctor.client import AgentKey
from proctor.config import Settings
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.proofs import public_jwk
from proctor.identity import Manifest, OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.server import ApiTokens

AGENT = "spiffe://acme.example/agent/coder"
TOOL = "git/git_log"
ARGS = {"repo_path": "/srv/repos/app"}
TARGET = "https://gateway.acme.example/mcp"


@dataclass
class Setup:
    """The home's parts, the agent's key and its grant."""

    runtime: Runtime
    key: ec.EllipticCurvePrivateKey
    grant: IssuedGrant


def set_up(home: Path, pg_url: str) -> Setup:
    """A home at ``home`` on ``pg_url`` as ``proctor init`` makes it, the rate limit lifted
    (a policy, not a cost being measured), the agent registered and its grant issued."""
    settings = Settings(home=home, database_url=pg_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    (home / "server.toml").write_text("rate_per_second = 1000000.0\nrate_burst = 1000000\n"
                                      f"enforcement_points = [\"{TARGET}\"]\n",
                                      encoding="utf-8")
    runtime = open_runtime(settings)
    ApiTokens(runtime.store, runtime.clock).ensure_admin()
    key = ec.generate_private_key(ec.SECP256R1())
    manifest = Manifest("claude-sonnet-4", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                        (TOOL,), "sha256:" + "c" * 64)
    runtime.registry.register(AGENT, owner="alice@acme.example", groups=["coding-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest)
    runtime.enforcer.refresh_principals()
    task = runtime.grants.start_task(AGENT, purpose="fix the build",
                                     on_behalf_of="alice@acme.example")
    grant = runtime.grants.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": TOOL, "args": {"repo_path": {"prefix": ["/srv/repos/"]}}}]}), ttl_seconds=900)
    return Setup(runtime, key, grant)


def workload_proof(key: ec.EllipticCurvePrivateKey, runtime: Runtime, *, url: str,
                   body: bytes) -> str:
    """The agent's own-key identity proof for one ``POST`` of ``body`` to ``url``, sent as a
    bearer token: signed by proctor's SDK, as an agent's is, for that request alone."""
    return AgentKey(key).identity_proof(AGENT, audience=runtime.registry.trust.audience,
                                        now=runtime.clock.now(), method="POST", url=url,
                                        body=body)


def proofs(setup: Setup, count: int) -> list[str]:
    """``count`` fresh proofs of possession of the grant, for one ``tools/call`` each."""
    now = setup.runtime.clock.now()
    return [make_proof(setup.key, setup.grant.token, method="tools/call", target=TARGET,
                       now=now) for _ in range(count)]


class Requests:
    """Fresh requests, made as they are sent: a proof of possession and an identity proof
    are each good for one request, within a minute, and the phases of a loaded machine
    last longer."""

    def __init__(self, setup: Setup, port: int, limit: int) -> None:
        self._setup = setup
        self._port = port
        self._url = f"http://127.0.0.1:{port}/v1/decide"
        self.limit = limit
        self.made = 0

    def next(self) -> bytes | None:
        if self.made >= self.limit:
            return None
        self.made += 1
        proof = proofs(self._setup, 1)[0]
        body = json.dumps({"token": self._setup.grant.token, "proof": proof,
                           "call": {"tool": TOOL, "args": ARGS}, "target": TARGET},
                          separators=(",", ":")).encode()
        identity = workload_proof(self._setup.key, self._setup.runtime, url=self._url,
                                  body=body)
        head = (f"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
                f"Authorization: Bearer {identity}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
        return head + body

"""The API bench's workload: a proctor home on PostgreSQL with one agent (own key,
P-256) holding one grant for ``git/git_log`` under ``/srv/repos/``, and the requests it
sends, each with a fresh proof of possession.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

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
    (home / "server.toml").write_text("rate_per_second = 1000000.0\nrate_burst = 1000000\n",
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


def workload_proof(key: ec.EllipticCurvePrivateKey, runtime: Runtime) -> str:
    """The agent's own-key proof (a JWS good for 5 minutes), sent as a bearer token."""
    at = int(runtime.clock.now().timestamp())
    claims = {"sub": AGENT, "iss": AGENT, "aud": runtime.registry.trust.audience, "iat": at,
              "exp": at + 300, "jti": secrets.token_hex(8)}
    return jwt.encode({"alg": "ES256"}, claims, ECKey.import_key(key), algorithms=["ES256"])


def proofs(setup: Setup, count: int) -> list[str]:
    """``count`` fresh proofs of possession of the grant, for one ``tools/call`` each."""
    now = setup.runtime.clock.now()
    return [make_proof(setup.key, setup.grant.token, method="tools/call", target=TARGET,
                       now=now) for _ in range(count)]


class Requests:
    """Fresh requests, made as they are sent: a proof is good for 60 s, an own-key
    workload proof for 5 minutes, and the phases of a loaded machine last longer."""

    def __init__(self, setup: Setup, port: int, limit: int) -> None:
        self._setup = setup
        self._port = port
        self.limit = limit
        self.made = 0
        self._workload = workload_proof(setup.key, setup.runtime)
        self._workload_at = time.monotonic()

    def next(self) -> bytes | None:
        if self.made >= self.limit:
            return None
        self.made += 1
        if time.monotonic() - self._workload_at > 120:
            self._workload = workload_proof(self._setup.key, self._setup.runtime)
            self._workload_at = time.monotonic()
        proof = proofs(self._setup, 1)[0]
        body = json.dumps({"token": self._setup.grant.token, "proof": proof,
                           "call": {"tool": TOOL, "args": ARGS}, "target": TARGET},
                          separators=(",", ":")).encode()
        head = (f"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
                f"Authorization: Bearer {self._workload}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
        return head + body

"""A proctor deployment for the gateway tests, on SQLite and PostgreSQL.

The example policies plus the tests' own (``bundle/``), a registered coding
agent with its key on disk, a git repository the policies allow and one they do
not, and helpers to issue grants and to start ``proctor mcp wrap`` in front of a
real upstream, as an MCP client would.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from mcp import ClientSession, StdioServerParameters, stdio_client

from proctor.config import Settings
from proctor.grants import GrantScope, IssuedGrant
from proctor.grants.authority import Task
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.sealing import load_master_key
from proctor.secrets import SecretStore
from tests.identity.factories import manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
BUNDLE = Path(__file__).resolve().parent / "bundle"
CODER = "spiffe://acme.example/agent/coder"
OWNER = "alice@acme.example"
APPROVER = "erin@acme.example"
UPSTREAM = [sys.executable, "-m", "tests.gateway.upstream_server"]
TIME = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60  # seconds: every wait of the gateway tests is bounded


def injected_secret(deployment: Deployment, command: list[str] = UPSTREAM
                    ) -> tuple[str, Path]:
    """A secret made now, and a config injecting it into the stdio upstream ``test``
    (``command``) as ``UPSTREAM_TOKEN``."""
    value = "tok_" + secrets.token_urlsafe(24)
    store = SecretStore(deployment.runtime.store, deployment.runtime.clock,
                        load_master_key(deployment.settings.home))
    store.put("upstream-token", value, by="erin@acme.example")
    return value, deployment.config({"upstreams": {"test": {
        "command": command, "env": {"UPSTREAM_TOKEN": "${secret:upstream-token}"}}}})


def git_command(repo: Path) -> list[str]:
    return [sys.executable, "-m", "mcp_server_git", "--repository", str(repo)]


@dataclass
class Deployment:
    """A proctor home with one agent, and what it takes to put the gateway in front."""

    settings: Settings
    runtime: Runtime
    key: ec.EllipticCurvePrivateKey
    key_file: Path
    repo: Path
    other_repo: Path
    tmp: Path
    tasks: list[Task] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """What a proctor process needs to open this deployment."""
        return {"PROCTOR_HOME": str(self.settings.home),
                "PROCTOR_DATABASE_URL": self.settings.database_url,
                "PROCTOR_TRUST_DOMAIN": self.settings.trust_domain,
                "PYTHONPATH": str(ROOT)}

    def task(self, purpose: str = "fix the failing build") -> Task:
        task = self.runtime.grants.start_task(CODER, purpose=purpose, on_behalf_of=OWNER)
        self.tasks.append(task)
        return task

    def grant(self, tools: list[dict[str, Any]] | None = None, *, ttl: int = 600,
              task: Task | None = None) -> IssuedGrant:
        scope = {"tools": tools if tools is not None else [
            {"tool": "test/*"}, {"tool": "time/*"},
            {"tool": "git/*", "args": {"repo_path": {"prefix": [str(self.tmp)]}}}]}
        return self.runtime.grants.issue((task or self.task()).id, GrantScope.from_json(scope),
                                         ttl_seconds=ttl)

    def config(self, document: dict[str, Any]) -> Path:
        path = self.tmp / f"gateway-{len(list(self.tmp.glob('gateway-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def wrap(self, grant: IssuedGrant, upstream: list[str], *, config: Path | None = None,
             server: str | None = None) -> StdioServerParameters:
        """How an MCP client starts the gateway in front of ``upstream``."""
        args = ["-m", "proctor.cli", "mcp", "wrap", "--agent", "coder",
                "--key-file", str(self.key_file)]
        if config is not None:
            args += ["--config", str(config)]
        if server is not None:
            args += ["--server", server]
        env = {**self.env, "PROCTOR_GRANT": grant.token}
        return StdioServerParameters(command=sys.executable, args=[*args, "--", *upstream],
                                     env=env, cwd=str(ROOT))


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    run = {"cwd": path, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **run)  # type: ignore[call-overload]
    (path / "README.md").write_text("# a repository for the gateway tests\n")
    subprocess.run(["git", "add", "README.md"], **run)  # type: ignore[call-overload]
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@acme.example", "commit",
                    "-q", "-m", "first commit"], **run)  # type: ignore[call-overload]
    return path


def make_deployment(database_url: str, tmp: Path) -> Iterator[Deployment]:
    repos = tmp / "repos"
    repo, other = git_repo(repos / "allowed"), git_repo(repos / "other")
    policies = tmp / "policies"
    shutil.copytree(EXAMPLES, policies)
    with (policies / "tools.yaml").open("a") as catalog:
        catalog.write("\n" + (BUNDLE / "tools.yaml").read_text())
    template = (BUNDLE / "gateway-tests.cedar.in").read_text()
    (policies / "gateway-tests.cedar").write_text(template.replace("{repo}", str(repo)))
    home = tmp / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings, policies_from=policies)
    runtime = open_runtime(settings)
    jwk = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(CODER, owner=OWNER, groups=["coding-agents"],
                              proof=OwnKeyProof(dict(jwk.as_dict(private=False))),
                              manifest=manifest())
    key = jwk.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key_file = tmp / "coder.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    try:
        yield Deployment(settings, runtime, key, key_file, repo, other, tmp)
    finally:
        runtime.close()


@asynccontextmanager
async def connected(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """An MCP client session with the gateway (or a server) ``params`` starts."""
    with anyio.fail_after(WAIT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from make_deployment(database_url, tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

"""The demo's world: a fresh home, two agents with keys on disk, a git repository,
the gateway's configuration, an admin token and a running control plane."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.audit import Actor, ActorType, AuditEvent, new_event_id
from proctor.config import Settings
from proctor.errors import ConfigError
from proctor.identity import Manifest, OwnKeyProof
from proctor.runtime import EXAMPLE_POLICIES, Runtime, init_home, open_runtime

__all__ = ["MARKER", "DemoAgent", "DemoWorld", "build_world", "control_plane"]

MARKER = ".proctor-demo"
DEMO_ACTOR = "proctor-demo"  # the system actor of what the demo sets up
TRUST_DOMAIN = "acme.example"
OWNER = "alice@acme.example"
PLANNER = f"spiffe://{TRUST_DOMAIN}/agent/planner"
WORKER = f"spiffe://{TRUST_DOMAIN}/agent/worker"
GROUPS = ["coding-agents", "support-agents"]
_TOOLS = ("time/get_current_time", "git/git_log", "crm/lookup_customer", "crm/issue_refund")


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(model_id: str) -> Manifest:
    """The manifest of a demo agent running ``model_id``."""
    return Manifest(model_id=model_id, weights_digest=digest(f"weights of {model_id}"),
                    system_prompt_digest=digest("you are a careful support engineer"),
                    tools=_TOOLS, dependency_lock_digest=digest("uv.lock of the agent"))


@dataclass(frozen=True)
class DemoAgent:
    id: str
    name: str
    key: ec.EllipticCurvePrivateKey
    key_file: Path


@dataclass
class DemoWorld:
    settings: Settings
    runtime: Runtime
    planner: DemoAgent
    worker: DemoAgent
    repo: Path
    other_repo: Path
    gateway_config: Path
    admin_token: str

    @property
    def env(self) -> dict[str, str]:
        """What a proctor process (the gateway, the server) needs to open this home."""
        return {**os.environ, "PROCTOR_HOME": str(self.settings.home),
                "PROCTOR_DATABASE_URL": self.settings.database_url,
                "PROCTOR_TRUST_DOMAIN": TRUST_DOMAIN}


def build_world(home: Path) -> DemoWorld:
    """A fresh demo home at ``home`` (a previous demo's home there is replaced)."""
    _clear(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by `proctor demo`; deleted by the next run\n")
    # so that `PROCTOR_HOME=<home> proctor …` afterwards sees the demo's agents
    (home / "proctor.toml").write_text(f'trust_domain = "{TRUST_DOMAIN}"\n')
    repos = home / "repos"
    repo, other = _git_repo(repos / "billing-service"), _git_repo(repos / "payroll")
    policies = home / "policy-source"
    shutil.copytree(EXAMPLE_POLICIES, policies)
    # One policy of the demo's own: the examples allow git under /srv/repos, the demo's
    # repository lives in its home.
    (policies / "demo.cedar").write_text(_DEMO_POLICY.replace("{repo}", _cedar_like(repo)))
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'proctor.db'}",
                        policy_dir=home / "policies", trust_domain=TRUST_DOMAIN)
    init_home(settings, policies_from=policies)
    shutil.rmtree(policies)
    runtime = open_runtime(settings)
    try:
        from proctor.server import ApiTokens

        # made with its token.create event, in one transaction (unaudited: not made)
        now = runtime.clock.now()
        minted = ApiTokens(runtime.store, runtime.clock).ensure_admin(
            audit=runtime.audit, event=AuditEvent(
                id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, DEMO_ACTOR),
                action="token.create", target="", outcome="created"))
        if minted is None:  # a fresh home always mints one
            raise ConfigError("the demo home already had an admin token")
        planner = _agent(runtime, home, "planner", "claude-sonnet-4-5")
        worker = _agent(runtime, home, "worker", "claude-haiku-4-5")
        runtime.enforcer.refresh_principals()
        config = home / "gateway.yaml"
        config.write_text(yaml.safe_dump(_gateway_config(repo)))
    except BaseException:
        runtime.close()
        raise
    return DemoWorld(settings, runtime, planner, worker, repo, other, config, minted.token)


@contextmanager
def control_plane(world: DemoWorld, *, timeout: float = 60.0) -> Iterator[str]:
    """``proctor serve`` on a free loopback port, as its own process; yields its URL."""
    port = _free_port()
    log = (world.settings.home / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "proctor.cli", "serve", "--port", str(port)],
        env=world.env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # one client for every try: httpx.get builds a client, and its TLS context (the CA
    # bundle loaded: ~36 ms of CPU), at each, taken from the server that is starting
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ConfigError("`proctor serve` exited at start; see serve.log in the "
                                  "demo home")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise ConfigError(f"`proctor serve` was not ready within {timeout:.0f} s")


def _agent(runtime: Runtime, home: Path, name: str, model: str) -> DemoAgent:
    jwk = ECKey.generate_key("P-256", private=True)
    agent_id = f"spiffe://{TRUST_DOMAIN}/agent/{name}"
    runtime.registry.register(agent_id, owner=OWNER, groups=GROUPS,
                              proof=OwnKeyProof(dict(jwk.as_dict(private=False))),
                              manifest=manifest(model))
    key = jwk.private_key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("generated agent key is not P-256")
    key_file = home / "keys" / f"{name}.pem"
    key_file.parent.mkdir(exist_ok=True)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return DemoAgent(agent_id, name, key, key_file)


def _gateway_config(repo: Path) -> dict[str, object]:
    python = sys.executable
    return {
        "gateway": {"approval_timeout_seconds": 300, "call_timeout_seconds": 30},
        "upstreams": {
            "time": {"command": [python, "-m", "mcp_server_time", "--local-timezone", "UTC"]},
            "git": {"command": [python, "-m", "mcp_server_git", "--repository", str(repo)]},
            "crm": {"command": [python, "-m", "proctor.examples.servers.crm"],
                    "labels": {"sensitivity": "confidential",
                               "destination": "crm.vendor.example"}},
        },
    }


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=Dana Engineer", "-c",
                        "user.email=dana@acme.example", *args], cwd=path, check=True,
                       capture_output=True)
    git("init", "-q", "-b", "main")
    for number, (name, text) in enumerate([
        ("README.md", "# billing service\n"),
        ("refunds.py", "def refund(amount_cents):\n    return amount_cents\n"),
        ("refunds.py", "def refund(amount_cents):\n    assert amount_cents > 0\n"
                       "    return amount_cents\n"),
    ], start=1):
        (path / name).write_text(text)
        git("add", name)
        git("commit", "-q", "-m", ["initial layout", "refunds: first version",
                                   "refunds: reject non-positive amounts"][number - 1])
    return path


def _clear(home: Path) -> None:
    if not home.exists():
        return
    if not (home / MARKER).is_file():
        raise ConfigError(f"`{home}` exists and was not made by `proctor demo`: "
                          "choose another --home")
    shutil.rmtree(home)


def _cedar_like(path: Path) -> str:
    """``path`` as the literal part of a Cedar ``like`` pattern."""
    return str(path).replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_DEMO_POLICY = """\
// The demo's repositories live in its home, not under /srv/repos.
@id("demo-git-read")
@reason("agents of the demo read the demo's repositories")
permit (
  principal in Group::"coding-agents",
  action in [
    Action::"tool:git/git_status", Action::"tool:git/git_log", Action::"tool:git/git_diff"
  ],
  resource
)
when { context.args.repo_path like "{repo}*" };
"""

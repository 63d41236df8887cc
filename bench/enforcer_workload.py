"""The enforcer bench's workload: homes (the API bench's agent and grant, on SQLite or
PostgreSQL), a fleet of 10,000 agents loaded in bulk, the floors of a decision's real
work, and the second process that watches a grant being revoked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select

from api_workload import AGENT, ARGS, TARGET, TOOL, Setup, proofs, set_up
from harness import run_threads
from proctor.config import Settings
from proctor.enforcement import CallVerdict, ToolCall
from proctor.errors import ProctorError
from proctor.runtime import open_runtime
from proctor.store.tables import agents

CALL = ToolCall(TOOL, ARGS, target=TARGET)
FLEET_PREFIX = "spiffe://acme.example/agent/fleet-"


def settings_for(home: Path, url: str) -> Settings:
    """The settings ``set_up`` gives a home (the watcher opens the same home)."""
    return Settings(home=home, database_url=url, policy_dir=home / "policies",
                    trust_domain="acme.example")


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'proctor.db'}"


def home_on(home: Path, url: str) -> Setup:
    """A home with the API bench's agent and grant; ``url`` is SQLite or PostgreSQL."""
    return set_up(home, url)


def decide(setup: Setup, proof: str) -> CallVerdict:
    """One allowed call, as the gateways ask it; anything else ends the run."""
    verdict = setup.runtime.enforcer.decide_call(setup.grant.token, proof, CALL)
    if not verdict.is_allowed:
        raise SystemExit(f"the decision was {verdict.code}: {verdict.reasons}")
    return verdict


class Proofs:
    """Fresh proofs of possession, made in blocks before they are timed (each is used
    once: its nonce is stored; and a proof is good for 60 s)."""

    def __init__(self, setup: Setup, block: int = 200) -> None:
        self._setup, self._block = setup, block
        self._stock: list[str] = []

    def refill(self) -> None:
        # reversed: pop() takes them in the order made, as a caller making each proof
        # before its call sends them (newest first packs the nonces' leaves half full)
        self._stock = proofs(self._setup, self._block)[::-1]

    def take(self) -> str:
        if not self._stock:
            self.refill()
        return self._stock.pop()


# --- the floors ------------------------------------------------------------------------------


@dataclass
class Floors:
    """A raw cedarpy decision of the very request the enforcer decided (the engine's whole
    active set, its entities and schema handles, as a caller of cedarpy would pass them),
    and one raw P-256 verify of a message the size of a proof's signing input."""

    cedar: Callable[[Any], object]
    verify: Callable[[Any], object]


def floors(setup: Setup, verdict: CallVerdict) -> Floors:
    engine = setup.runtime.engine
    assert verdict.request is not None and engine.active is not None
    request = engine._cedar_request(verdict.request)  # the dict the engine builds
    policies, entities, schema = engine.active.full, engine.entities.handle, engine.schema.handle
    proof = proofs(setup, 1)[0]
    message = proof.rsplit(".", 1)[0].encode()
    signature = setup.key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = setup.key.public_key()
    algorithm = ec.ECDSA(hashes.SHA256())

    def cedar(_: object) -> object:
        return cedarpy.is_authorized(request, policies, entities, schema=schema)

    def verify(_: object) -> object:
        public.verify(signature, message, algorithm)
        return None

    return Floors(cedar, verify)


# --- concurrency -----------------------------------------------------------------------------


def concurrent(setup: Setup, callers: int, seconds: float, stock: int) -> dict[str, Any]:
    """``callers`` threads deciding for ``seconds``, each call with its own proof (made
    beforehand, ``stock`` of them): decisions per second, and how many were not allowed."""
    made = proofs(setup, stock)[::-1]  # taken in the order made (see Proofs.refill)
    refused = [0] * callers
    enforcer, token = setup.runtime.enforcer, setup.grant.token

    def step(index: int) -> bool:
        try:
            proof = made.pop()
        except IndexError:
            return False
        refused[index] += not enforcer.decide_call(token, proof, CALL).is_allowed
        return True

    answered, wall, cpu = run_threads(callers, seconds, step)
    total = sum(answered)
    return {"per_s": total / wall, "decisions": total, "not_allowed": sum(refused),
            "proofs_ran_out": not made and wall < seconds * 0.99,
            "cpu_ms_per_decision": cpu / max(total, 1) * 1e3}


# --- the fleet -------------------------------------------------------------------------------


def load_fleet(setup: Setup, count: int) -> list[str]:
    """``count`` more agents, in bulk: copies of the registered agent's row under other
    names, with no key (they never call; they are there to be many)."""
    runtime = setup.runtime
    with runtime.store.reading() as conn:
        row = dict(conn.execute(select(agents).where(agents.c.id == AGENT)).one()._mapping)
    ids = [f"{FLEET_PREFIX}{i:05}" for i in range(count)]
    rows = [{**row, "id": agent_id, "name": agent_id.rsplit("/", 1)[1],
             "proof_method": "jwt_svid", "public_jwk": None, "key_thumbprint": None,
             "oidc_issuer": None, "oidc_subject": None} for agent_id in ids]
    with runtime.store.transaction() as conn:
        for at in range(0, len(rows), 1000):
            conn.execute(insert(agents), rows[at:at + 1000])
    return ids


def reopened(setup: Setup, settings: Settings) -> Setup:
    """The same home opened again, as a process starting now would see it."""
    setup.runtime.close()
    return Setup(open_runtime(settings), setup.key, setup.grant)


# --- the second process ----------------------------------------------------------------------


def watch(home: str, url: str) -> None:
    """The watcher (``enforcer.py --watch HOME URL``): for each token read from stdin,
    check it once (it must pass), say ``ready``, then check it again and again until it is
    refused; print the monotonic time of the first refusal, in nanoseconds."""
    runtime = open_runtime(settings_for(Path(home), url))
    try:
        for line in sys.stdin:
            token = line.strip()
            runtime.grants.inspect(token)
            print("ready", flush=True)
            while True:
                try:
                    runtime.grants.inspect(token)
                except ProctorError as exc:
                    print(json.dumps({"seen_ns": time.monotonic_ns(), "code": exc.code}),
                          flush=True)
                    break
    finally:
        runtime.close()


def revocation_seen(setup: Setup, settings: Settings, trials: int) -> dict[str, Any]:
    """Revoke ``trials`` grants here while a second process keeps checking each; how long
    from the start of the revoking call to the other process's first refusal."""
    runtime = setup.runtime
    task = runtime.grants.start_task(AGENT, purpose="watch", on_behalf_of="alice@acme.example")
    scope = setup.grant.claims.scope
    tokens = [runtime.grants.issue(task.id, scope, ttl_seconds=900) for _ in range(trials)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    watcher = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "enforcer.py"), "--watch",
         str(settings.home), settings.database_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert watcher.stdin is not None and watcher.stdout is not None
    seen_ms: list[float] = []
    codes: set[str] = set()
    try:
        for grant in tokens:
            watcher.stdin.write(grant.token + "\n")
            watcher.stdin.flush()
            if watcher.stdout.readline().strip() != "ready":
                raise SystemExit("the watching process did not start")
            started = time.monotonic_ns()
            runtime.grants.revoke(grant.grant_id, "bench")
            answer = json.loads(watcher.stdout.readline())
            seen_ms.append((answer["seen_ns"] - started) / 1e6)
            codes.add(answer["code"])
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=30)
        watcher.stdout.close()
    return {"seen_ms": seen_ms, "codes": sorted(codes)}

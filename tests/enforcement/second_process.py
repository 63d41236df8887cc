"""Another process on the same home and database: the other half of the cross-process tests.

Usage: python -m tests.enforcement.second_process HOME DATABASE_URL COMMAND JSON

- ``revoke {"grant": accessor}`` and ``suspend {"agent": id}``: do it, print ``done``;
- ``calls {"token", "key", "tool", "args", "threads", "calls", "proof"?}``: decide
  ``calls`` calls on each of ``threads`` threads (each with a fresh proof, or with
  ``proof`` if given); prints ``ready``, waits for a line on stdin, then prints one
  JSON line ``{"code", "event"}`` per answer, then ``done``;
- ``forever {...}``: the same with no end; each allowed answer is printed (its event
  id) only once it was answered, until the process is killed;
- ``forever_on_loop {...}``: ``forever`` as the stdio wrapper decides: the grant held,
  ``threads`` callers as tasks on one event loop that leads its own writes
  (``AuditLog.lead_on``), each deciding with ``Enforcer.decide_held_call_on_loop``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from proctor.config import Settings
from proctor.enforcement import ToolCall
from proctor.grants import make_proof
from proctor.runtime import Runtime, open_runtime

TARGET = "mcp://gateway/tools/call"
_print = threading.Lock()


def _say(line: str) -> None:
    with _print:
        print(line, flush=True)


def _calls(runtime: Runtime, job: dict[str, Any], *, forever: bool) -> None:
    key = load_pem_private_key(Path(job["key"]).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    go = threading.Event()

    def caller() -> None:
        go.wait()
        done = 0
        while forever or done < job["calls"]:
            proof = job.get("proof") or make_proof(key, job["token"], method="tools/call",
                                                   target=TARGET, now=runtime.clock.now())
            verdict = runtime.enforcer.decide_call(job["token"], proof,
                                                   ToolCall(job["tool"], job["args"],
                                                            target=TARGET))
            done += 1
            if not forever:
                _say(json.dumps({"code": verdict.code, "event": verdict.event_id}))
            elif verdict.is_allowed:
                _say(str(verdict.event_id))

    threads = [threading.Thread(target=caller) for _ in range(job["threads"])]
    for thread in threads:
        thread.start()
    _say("ready")
    sys.stdin.readline()
    go.set()
    for thread in threads:
        thread.join()


def _calls_on_loop(runtime: Runtime, job: dict[str, Any]) -> None:
    key = load_pem_private_key(Path(job["key"]).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    held = runtime.grants.hold(job["token"], key)

    async def caller() -> None:
        while True:
            verdict = await runtime.enforcer.decide_held_call_on_loop(
                held, ToolCall(job["tool"], job["args"], target=TARGET))
            if verdict.is_allowed:
                _say(str(verdict.event_id))

    async def run() -> None:
        runtime.audit.lead_on(asyncio.get_running_loop())
        _say("ready")
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with anyio.create_task_group() as tasks:
            for _ in range(job["threads"]):
                tasks.start_soon(caller)

    anyio.run(run)


def main() -> None:
    home, url, command, job = (Path(sys.argv[1]), sys.argv[2], sys.argv[3],
                               json.loads(sys.argv[4]))
    settings = Settings(home=home, database_url=url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    runtime = open_runtime(settings)
    try:
        if command == "revoke":
            runtime.grants.revoke(job["grant"], "revoked by another process")
        elif command == "suspend":
            runtime.registry.suspend(job["agent"], by="erin@acme.example",
                                     reason="suspended by another process")
        elif command == "forever_on_loop":
            _calls_on_loop(runtime, job)
        else:
            _calls(runtime, job, forever=command == "forever")
        _say("done")
    finally:
        runtime.close()


if __name__ == "__main__":
    main()

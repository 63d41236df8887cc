"""Bad input to ``proctor mcp wrap`` gets a clear answer naming the reason, and nothing is
allowed by accident: malformed, oversized and deeply nested messages, unknown methods
and tools, arguments that break the tool's schema, a result nested too deep to scan, a
missing, revoked, expired or foreign grant, and an upstream that hangs, crashes or answers
over the size cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, iter_events
from proctor.clock import FrozenClock, SystemClock
from proctor.errors import ProctorError
from proctor.grants import GrantScope
from proctor.runtime import open_runtime
from tests.conftest import sqlite_only
from tests.gateway.conftest import UPSTREAM, Deployment
from tests.gateway.in_process import listening_socket, served, url_of, wrapped
from tests.gateway.upstream_server import create_server

pytestmark = pytest.mark.anyio

WAIT = 60


class Wire:
    """The wrapper's stdin and stdout, one JSON-RPC message per line."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._buffer = b""

    async def send(self, line: bytes) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.send(line + b"\n")

    async def request(self, request_id: int, method: str, params: dict[str, Any]) -> None:
        await self.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                    "params": params}).encode())

    async def answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        with anyio.fail_after(WAIT):
            while b"\n" not in self._buffer:
                self._buffer += await self._process.stdout.receive()
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


@sqlite_only  # the wrapper as a process on PostgreSQL: tests/e2e/test_gateway_stdio.py
async def test_malformed_oversized_nested_and_invalid_messages_each_get_their_error(
        deployment: Deployment) -> None:
    """The wrapper as a process (its stdio is the subject); the upstream it calls is the
    tests' own, over HTTP, served in this process (one interpreter less to start; the
    upstream as a process is the next tests')."""
    sock = listening_socket()
    config = deployment.config({"gateway": {"max_message_bytes": 4096},
                                "upstreams": {"test": {"url": f"{url_of(sock)}/mcp"}}})
    params = deployment.wrap(deployment.grant(), [], config=config, server="test")
    async with served(create_server().streamable_http_app(), sock), \
            await anyio.open_process([params.command, *params.args], cwd=params.cwd,
                                     env={**os.environ, **(params.env or {})}) as process:
        wire = Wire(process)
        await wire.request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                             "clientInfo": {"name": "t", "version": "1"}})
        assert "result" in await wire.answer()
        await wire.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

        await wire.send(b"this is not json")
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["code"]) == (None, -32700)

        await wire.send(b'{"jsonrpc": "2.0", "id": 2, "method": 5}')
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["code"]) == (2, -32600)

        # 3 KB of brackets (under the size cap): Python's JSON decoder recursed past
        # its limit and the wrapper exited; now it is refused before anything parses it
        await wire.send(b'{"jsonrpc": "2.0", "id": 20, "method": "tools/call", "params": '
                        + b"[" * 3000)
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["code"]) == (20, -32600)
        assert answer["error"]["data"] == {"reason": "message_too_deep", "max_depth": 64}
        await wire.send(b"[" * 2000 + b"]" * 2000)
        assert (await wire.answer())["error"]["data"]["reason"] == "message_too_deep"
        # an id JSON text can carry but JSON output cannot (a lone surrogate)
        await wire.send(b'{"jsonrpc": "2.0", "id": "\\ud800", "method": 5}')
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["code"]) == (None, -32600)

        await wire.request(3, "tools/call", {"name": "echo", "arguments": {"text": "x" * 10_000}})
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["code"]) == (3, -32600)
        assert answer["error"]["data"] == {"reason": "message_too_large", "max_bytes": 4096}

        # a key given twice, at any depth: decided on one value, forwarded with the other
        for twice in (b'"name": "rm_rf", "name": "echo", "arguments": {"text": "x"}',
                      b'"name": "echo", "arguments": {"text": "safe", "text": "forbidden"}'):
            await wire.send(b'{"jsonrpc": "2.0", "id": 30, "method": "tools/call", '
                            b'"params": {' + twice + b"}}")
            answer = await wire.answer()
            assert (answer["id"], answer["error"]["code"], answer["error"]["data"]) == (
                30, -32600, {"reason": "message_repeated_key"})
            assert answer["error"]["message"].startswith("message_repeated_key: the message "
                                                         "gives the key `")

        # the id after the params is still the answer's
        await wire.send(b'{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", '
                        b'"arguments": {"text": "a", "text": "b"}}, "id": 31}')
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["data"]) == (31, {"reason": "message_repeated_key"})
        # a notification, or a response, giving a key twice is dropped: JSON-RPC answers
        # neither (an error with a null id came back); the next answer is request 4's
        await wire.send(b'{"jsonrpc": "2.0", "method": "notifications/progress", "params": '
                        b'{"progressToken": 1, "progress": 1, "progress": 2}}')
        await wire.send(b'{"jsonrpc": "2.0", "id": 4, "result": {"a": 1, "a": 2}}')
        # the key it repeats is the agent's: logged escaped (raw, it reached the terminal)
        key = '\\u001b]0;owned\\u0007\u009b2J\u202e'.encode()
        await wire.send(b'{"jsonrpc": "2.0", "method": "notifications/progress", "params": '
                        b'{"progressToken": 1, "' + key + b'": 1, "' + key + b'": 2}}')
        logged = b""
        assert process.stderr is not None
        with anyio.fail_after(WAIT):
            while b"owned" not in logged.rpartition(b"\n")[0]:
                logged += await process.stderr.receive()
        [line] = [x for x in logged.decode().splitlines() if "owned" in x]
        assert not any(c in line for c in "\x1b\x07\x9b\u202e"), line
        assert "\\x1b]0;owned\\x07\\x9b2J\\u202e" in line
        await wire.request(4, "tools/call", {"name": "echo", "arguments": {"text": "still here"}})
        answer = await wire.answer()
        assert answer["id"] == 4 and answer["result"]["structuredContent"]["text"] == "still here"

        # a result nested past what the output guard reads through is withheld
        await wire.request(21, "tools/call", {"name": "nested", "arguments": {"depth": 70}})
        answer = await wire.answer()
        assert (answer["id"], answer["error"]["code"]) == (21, -32012)
        assert answer["error"]["data"]["reason"] == "upstream_invalid_result"

        await wire.request(5, "sampling/createMessage", {})
        assert (await wire.answer())["error"]["code"] == -32601

        await wire.request(6, "tools/call", {"name": "rm_rf", "arguments": {}})
        answer = await wire.answer()
        assert (answer["error"]["code"], answer["error"]["data"]["reason"]) == (
            -32602, "tool_unknown")

        await wire.request(7, "tools/call", {"name": "echo",
                                             "arguments": {"text": "hi", "count": "three"}})
        answer = await wire.answer()
        assert (answer["error"]["code"], answer["error"]["data"]["reason"]) == (
            -32602, "arguments_invalid")
        assert "`count`" in answer["error"]["message"] and "three" not in answer["error"]["message"]
        assert process.stdin is not None
        await process.stdin.aclose()
        with anyio.fail_after(WAIT):
            assert await process.wait() == 0
    # refused before any decision: audited as the agent's, nothing decided
    rejected = list(iter_events(deployment.runtime.store, EventFilter(action="gateway.reject")))
    assert [(e.event["target"], e.event["detail"]["code"]) for e in rejected] == [
        ("test/rm_rf", "tool_unknown"), ("test/echo", "arguments_invalid")]
    assert {e.event["actor"]["id"] for e in rejected} == {"spiffe://acme.example/agent/coder"}
    decided = list(iter_events(deployment.runtime.store, EventFilter(action="tool:test/echo")))
    assert len(decided) == 1  # the one call that was served
    withheld = list(iter_events(deployment.runtime.store, EventFilter(action="gateway.redact")))
    assert [(e.event["target"], e.event["outcome"], e.event["detail"]["code"])
            for e in withheld] == [("test/nested", "withheld", "guard_value_too_deep")]


def _start(deployment: Deployment, token: str | None, agent: str = "coder",
           upstream: list[str] = UPSTREAM) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **deployment.env, "PROCTOR_GRANT": token or ""}
    args = ["-m", "proctor.cli", "mcp", "wrap", "--agent", agent, "--key-file",
            str(deployment.key_file), "--server", "test", "--", *upstream]
    return subprocess.run([UPSTREAM[0], *args], env=env, cwd=deployment.env["PYTHONPATH"],
                          input="", capture_output=True, text=True, timeout=WAIT, check=False)


@sqlite_only
async def test_the_wrapper_refuses_to_start_without_a_live_grant_or_a_reachable_upstream(
        deployment: Deployment) -> None:
    """As a process: one line on stderr, exit 1, nothing on stdout (every refusal to start
    is a ProctorError the command prints so). An unreachable upstream is refused in
    process, as the command builds the wrapper; which grants it refuses is the next
    test's, in process too."""
    started = _start(deployment, None, "coder", UPSTREAM)
    lines = started.stderr.strip().splitlines()
    assert started.returncode == 1, started.stderr
    assert len(lines) == 1 and "no grant" in lines[0], lines
    assert started.stdout == ""
    with pytest.raises(ProctorError) as refused:
        async with wrapped(deployment, deployment.grant(), ["/nonexistent/mcp-server"],
                           server="test"):
            pytest.fail("the wrapper served")
    assert "upstream `test` cannot be reached" in refused.value.message
    assert "\n" not in refused.value.message  # the command line prints it as one line


async def test_a_revoked_expired_or_foreign_grant_is_refused_before_anything_is_served(
        deployment: Deployment) -> None:
    revoked = deployment.grant()
    deployment.runtime.grants.revoke(revoked.accessor, "test")
    past = FrozenClock(SystemClock().now() - timedelta(hours=2))
    earlier = open_runtime(deployment.settings, clock=past)
    try:
        task = earlier.grants.start_task("spiffe://acme.example/agent/coder", purpose="old",
                                         on_behalf_of="alice@acme.example")
        expired = earlier.grants.issue(task.id, GrantScope.from_json(
            {"tools": [{"tool": "test/*"}]}), ttl_seconds=300)
    finally:
        earlier.close()
    live = deployment.grant()
    support = "spiffe://acme.example/agent/support"
    cases = [(revoked, None, "revoked"), (expired, None, "expired"),
             (live, support, f"not `{support}`")]
    for grant, agent, says in cases:
        with pytest.raises(ProctorError) as refused:
            async with wrapped(deployment, grant, UPSTREAM, server="test", agent=agent):
                pytest.fail("the wrapper served")
        assert says in refused.value.message, (says, refused.value.message)
        assert "\n" not in refused.value.message  # the command line prints it as one line


@sqlite_only  # the upstream's process and its timeout are the subject, alike on both backends
async def test_an_upstream_that_hangs_or_crashes_fails_the_call_and_the_next_one_works(
        deployment: Deployment) -> None:
    config = deployment.config({"gateway": {"call_timeout_seconds": 1},
                                "upstreams": {"test": {"command": UPSTREAM}}})
    # in process: the wrapper's command line is what the tests above run as a process
    async with wrapped(deployment, deployment.grant(), [], config=config,
                       server="test") as client:
        with pytest.raises(MCPError) as hung:
            await client.call_tool("hang", {})
        assert (hung.value.error.code, hung.value.error.data["reason"]) == (
            -32012, "upstream_timeout")
        with pytest.raises(MCPError) as crashed:
            await client.call_tool("crash", {})
        assert crashed.value.error.data["reason"] == "upstream_unavailable"
        echoed = await client.call_tool("echo", {"text": "back"})  # a new upstream
        assert echoed.structured_content == {"text": "back", "count": 1}


@sqlite_only  # the upstream's process and its answer's size are the subject
async def test_an_upstream_answer_over_the_cap_fails_the_call_and_the_next_one_works(
        deployment: Deployment) -> None:
    cap = 1 << 16
    hostile = [sys.executable, "-m", "tests.gateway.hostile_upstream"]
    config = deployment.config({"gateway": {"max_answer_bytes": cap},
                                "upstreams": {"test": {"command": hostile}}})
    async with wrapped(deployment, deployment.grant(), [], config=config,
                       server="test") as client:
        with anyio.fail_after(WAIT):
            within = await client.call_tool("sized", {"bytes": cap})
        assert not within.is_error
        with anyio.fail_after(WAIT), pytest.raises(MCPError) as over:
            await client.call_tool("endless", {})  # 640 MiB on one line
        assert (over.value.error.code, over.value.error.data["reason"]) == (
            -32012, "upstream_result_too_large")
        with anyio.fail_after(WAIT):
            plain = await client.call_tool("plain", {})  # a new upstream
        assert plain.content[0].model_dump()["text"] == "answer of plain"

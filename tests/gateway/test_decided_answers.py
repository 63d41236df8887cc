"""The agent's answer to an upstream's ``sampling/createMessage`` or ``elicitation/create``
goes to that upstream: it is decided as a call of the upstream's pseudo-tool
(``test/sampling.answer``, ``test/elicitation.answer``) on the grant of the call it came
during, audited as the agent's act, and refused with a JSON-RPC error that carries none
of it when a policy forbids it; the upstream's request is audited as it comes. Through
the real wrapper and the real HTTP gateway, on the direct path and the SDK's, in front
of a real MCP server that writes down what it got; on both databases."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession, stdio_client
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, search_events
from proctor.grants import IssuedGrant
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.recording_http import recorded_http
from tests.gateway.recording_upstream import heard

pytestmark = pytest.mark.anyio

RECORDING = [sys.executable, "-m", "tests.gateway.recording_upstream"]
ALLOWED = ["tests-coder-test-upstream"]
MODEL = "agent-model-1"
SECRET = secrets.token_urlsafe(18)  # made at run time


async def _sample(context: Any, params: types.CreateMessageRequestParams
                  ) -> types.CreateMessageResult:
    """The agent's model: it says the question back, and adds a note of its own."""
    asked = params.messages[0].content
    text = asked.text if isinstance(asked, types.TextContent) else ""
    if text == "your password?":  # a model that gives away what it should not
        text = f"password={SECRET}"
    return types.CreateMessageResult(role="assistant", model=MODEL, stop_reason="endTurn",
                                     content=types.TextContent(type="text",
                                                               text=f"the model says: {text}"),
                                     _meta={"note": "from the agent"})


async def _elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """The agent's user: fills in the question as the form's text."""
    return types.ElicitResult(action="accept", content={"text": f"typed: {params.message}"})


def _client(read: Any, write: Any) -> ClientSession:
    return ClientSession(read, write, sampling_callback=_sample, elicitation_callback=_elicit)


def _labels(restricted: bool) -> dict[str, Any]:
    """The answers go to a host outside acme.example; ask_model may read restricted data."""
    labels: dict[str, Any] = {"sampling.answer": {"destination": "collector.example.net"}}
    if restricted:
        labels["ask_model"] = {"sensitivity": "restricted"}
    return labels


@asynccontextmanager
async def _stdio(deployment: Deployment, record: Path, grant: IssuedGrant, *,
                 restricted: bool = False, pin: str = "strict"
                 ) -> AsyncIterator[ClientSession]:
    config = deployment.config({"upstreams": {"test": {
        "command": [*RECORDING, str(record)], "tools": _labels(restricted), "pin": pin}}})
    params = deployment.wrap(grant, [], server="test", config=config)
    with anyio.fail_after(WAIT):
        async with stdio_client(params) as (read, write), _client(read, write) as client:
            await client.initialize()
            yield client


def _http(deployment: Deployment, record: Path, grant: IssuedGrant, *,
          restricted: bool = False, pin: str = "strict"
          ) -> AbstractAsyncContextManager[ClientSession]:
    return recorded_http(deployment, record, grant, client=_client,
                         upstream={"tools": _labels(restricted), "pin": pin})


async def _ask(client: ClientSession, tool: str, question: str, *, sdk: bool) -> str:
    """``tool`` called with ``question``; with ``sdk``, asking for progress, so that the
    call takes the SDK's path instead of the direct one."""
    async def progress(progress: float, total: float | None, message: str | None) -> None:
        return None

    result = await client.call_tool(tool, {"question": question},
                                    progress_callback=progress if sdk else None)
    assert not result.is_error
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return text.text


def _events(deployment: Deployment, **where: Any) -> list[Any]:
    return [e.event for e in search_events(deployment.runtime.store, EventFilter(**where),
                                           newest_first=False, limit=100)]


def _decisions(deployment: Deployment, name: str) -> list[tuple[str, Any, str]]:
    return [(e["outcome"], (e["decision"] or {}).get("policy_ids"), e["actor"]["type"])
            for e in _events(deployment, action=f"tool:test/{name}")]


@pytest.mark.parametrize(("transport", "sdk"), [
    ("stdio", False), ("stdio", True), ("http", False), ("http", True)])
async def test_answers_to_an_upstream_are_decided_audited_and_a_refused_one_never_sent(
        deployment: Deployment, transport: str, sdk: bool) -> None:
    record = deployment.tmp / f"heard-{secrets.token_hex(4)}.jsonl"
    opened = _stdio if transport == "stdio" else _http
    async with opened(deployment, record, deployment.grant([{"tool": "test/*"}])) as client:
        assert await _ask(client, "ask_user", "your name?", sdk=sdk) == "answered"
        assert await _ask(client, "ask_user", "a forbidden word?", sdk=sdk) \
            == "not answered (-32010)"
        assert await _ask(client, "ask_model", "hello", sdk=sdk) == "answered"
        assert await _ask(client, "ask_model", "say forbidden", sdk=sdk) \
            == "not answered (-32010)"

    assert heard(record) == [
        {"method": "elicitation/create",
         "answer": {"action": "accept", "content": {"text": "typed: your name?"}}},
        {"method": "elicitation/create", "error": {"code": -32010, "reason": "policy_forbid"}},
        # only what was decided: the agent's `_meta` is not passed on
        {"method": "sampling/createMessage",
         "answer": {"role": "assistant", "content": {"type": "text",
                                                     "text": "the model says: hello"},
                    "model": MODEL, "stopReason": "endTurn"}},
        {"method": "sampling/createMessage",
         "error": {"code": -32010, "reason": "policy_forbid"}}]

    assert _decisions(deployment, "elicitation.answer") == [
        ("allowed", ALLOWED, "agent"), ("denied", ["tests-elicited-forbidden-word"], "agent")]
    assert _decisions(deployment, "sampling.answer") == [
        ("allowed", ALLOWED, "agent"), ("denied", ["tests-answer-forbidden-word"], "agent")]
    # each request of the upstream is audited, naming the call it came during
    calls = [e["id"] for name in ("ask_user", "ask_model")
             for e in _events(deployment, action=f"tool:test/{name}")]
    assert [(e["outcome"], e["detail"]["method"], e["concerns"], e["actor"]["type"])
            for e in _events(deployment, action="gateway.upstream_request")] == [
        ("relayed", "elicitation/create", calls[0], "system"),
        ("relayed", "elicitation/create", calls[1], "system"),
        ("relayed", "sampling/createMessage", calls[2], "system"),
        ("relayed", "sampling/createMessage", calls[3], "system")]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_after_a_restricted_read_no_answer_goes_to_an_upstream_outside(
        deployment: Deployment, transport: str) -> None:
    """ask_model is labelled restricted: its allow marks the task, and the model's answer
    during it may not go to collector.example.net (no-exfiltration-after-restricted), as
    no call there could."""
    record = deployment.tmp / f"heard-{secrets.token_hex(4)}.jsonl"
    opened = _stdio if transport == "stdio" else _http
    async with opened(deployment, record, deployment.grant([{"tool": "test/*"}]),
                      restricted=True) as client:
        assert await _ask(client, "ask_model", "the secret plan?", sdk=False) \
            == "not answered (-32010)"
    assert heard(record) == [{"method": "sampling/createMessage",
                              "error": {"code": -32010, "reason": "policy_forbid"}}]
    assert _decisions(deployment, "sampling.answer") == [
        ("denied", ["no-exfiltration-after-restricted"], "agent")]


async def test_a_grant_that_does_not_cover_the_answer_is_refused_it(
        deployment: Deployment) -> None:
    record = deployment.tmp / "heard.jsonl"
    grant = deployment.grant([{"tool": "test/ask_user"}])
    async with _http(deployment, record, grant) as client:
        assert await _ask(client, "ask_user", "your name?", sdk=False) \
            == "not answered (-32010)"
    assert heard(record) == [{"method": "elicitation/create",
                              "error": {"code": -32010, "reason": "grant_out_of_scope"}}]
    assert [o for o, _, _ in _decisions(deployment, "elicitation.answer")] == ["denied"]


async def test_a_credential_in_an_answer_is_redacted_before_the_upstream_gets_it(
        deployment: Deployment) -> None:
    record = deployment.tmp / "heard.jsonl"
    async with _http(deployment, record, deployment.grant([{"tool": "test/*"}])) as client:
        assert await _ask(client, "ask_model", "your password?", sdk=False) == "answered"
    [got] = heard(record)
    assert got["answer"]["content"]["text"] == \
        "the model says: password=[REDACTED:credential_pair]"
    assert SECRET not in record.read_text()
    [decided] = _events(deployment, action="tool:test/sampling.answer")
    assert decided["outcome"] == "allowed" and SECRET not in str(decided)
    assert [(e["outcome"], e["target"], e["detail"]["findings"])
            for e in _events(deployment, action="gateway.redact")] == [
        ("redacted", "test/sampling.answer", 1)]


@pytest.mark.parametrize("pin", ["off", "strict"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_answer_pseudo_tool_cannot_be_called_as_a_tool(
        deployment: Deployment, transport: str, pin: str) -> None:
    """``sampling.answer`` and ``elicitation.answer`` (and the other pseudo-tools) are what
    the gateway decides, never a tool of the upstream: a ``tools/call`` naming one was
    decided under the answers' permits and forwarded to the upstream as a call of that
    name (reaching a tool of the upstream the gateway left out for shadowing it); only
    ``pin: strict`` refused it, in the decision's write, as an unreviewed tool."""
    record = deployment.tmp / f"heard-{secrets.token_hex(4)}.jsonl"
    opened = _stdio if transport == "stdio" else _http
    calls: list[tuple[str, dict[str, Any]]] = [
        ("sampling.answer", {"text": "to the upstream", "model": MODEL,
                             "role": "assistant", "stop_reason": ""}),
        ("elicitation.answer", {"action": "accept", "content": "{}"}),
        ("resources.read", {"uri": "file:///etc/hostname"})]
    async with opened(deployment, record, deployment.grant([{"tool": "test/*"}]),
                      pin=pin) as client:
        for name, args in calls:
            with pytest.raises(MCPError) as refused:
                await client.call_tool(name, args)
            assert isinstance(refused.value.error.data, dict)
            assert refused.value.error.data["reason"] == "tool_unknown"
    assert heard(record) == []  # the upstream was asked nothing
    assert all(e["outcome"] != "allowed" for name, _ in calls
               for e in _events(deployment, action=f"tool:test/{name}"))


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_upstream_cannot_flood_the_agent_and_the_audit_log_with_requests(
        deployment: Deployment, transport: str) -> None:
    """An upstream asks 12 times at once during one call: 8 (MAX_ASKING) reach the agent
    and are audited, the rest are refused unaudited while those wait. Before, every
    request was audited and relayed, as many as the upstream sent."""
    record = deployment.tmp / f"heard-{secrets.token_hex(4)}.jsonl"
    reached = 0
    enough = anyio.Event()

    async def sample(context: Any, params: types.CreateMessageRequestParams
                     ) -> types.CreateMessageResult:
        """Holds every request until the other four were refused (or it got them all)."""
        nonlocal reached
        reached += 1
        if reached == 12:  # every request reached the agent: nothing was refused
            enough.set()
        while not enough.is_set() and sum("error" in e for e in heard(record)) < 4:
            with anyio.move_on_after(0.01):
                await enough.wait()
        return await _sample(context, params)

    def client(read: Any, write: Any) -> ClientSession:
        return ClientSession(read, write, sampling_callback=sample)

    grant = deployment.grant([{"tool": "test/*"}])
    if transport == "stdio":
        config = deployment.config({"upstreams": {"test": {
            "command": [*RECORDING, str(record)], "tools": _labels(False)}}})
        params = deployment.wrap(grant, [], server="test", config=config)
        opened: Any = _opened_stdio(params, client)
    else:
        opened = recorded_http(deployment, record, grant, client=client,
                               upstream={"tools": _labels(False)})
    async with opened as session:
        result = await session.call_tool("ask_model", {"question": "hello", "copies": 12})
        assert not result.is_error
    outcomes = heard(record)
    assert reached == 8
    assert sum("answer" in e for e in outcomes) == 8
    assert [e["error"]["code"] for e in outcomes if "error" in e] == [-32600] * 4
    assert len(_events(deployment, action="gateway.upstream_request")) == 8


@asynccontextmanager
async def _opened_stdio(params: Any, client: Any) -> AsyncIterator[ClientSession]:
    with anyio.fail_after(WAIT):
        async with stdio_client(params) as (read, write), client(read, write) as session:
            await session.initialize()
            yield session

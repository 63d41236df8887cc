"""Completions and (un)subscriptions carry values the agent chooses to an upstream: each is
decided as a call of its server's pseudo-tool (``test/completion.complete``,
``test/resources.subscribe``, ``test/resources.unsubscribe``), audited, and refused
with a JSON-RPC error when a policy forbids it, before anything reaches the upstream
(which writes down what it was sent). On both transports and both databases."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, search_events
from proctor.grants import IssuedGrant
from tests.gateway.conftest import Deployment, connected
from tests.gateway.recording_http import recorded_http
from tests.gateway.recording_upstream import heard

pytestmark = pytest.mark.anyio

RECORDING = ["-m", "tests.gateway.recording_upstream"]
PROMPT = types.PromptReference(type="ref/prompt", name="greet")
ALLOWED = ["tests-coder-test-upstream"]
TEMPLATE = types.ResourceTemplateReference(type="ref/resource", uri="notes://{name}")


def _grant(deployment: Deployment) -> IssuedGrant:
    return deployment.grant([{"tool": "test/*"}])


@asynccontextmanager
async def _stdio(deployment: Deployment, record: Path) -> AsyncIterator[ClientSession]:
    params = deployment.wrap(_grant(deployment), [sys.executable, *RECORDING, str(record)],
                             server="test")
    async with connected(params) as client:
        yield client


def _http(deployment: Deployment, record: Path, *, path: str = "/mcp/test",
          grant: IssuedGrant | None = None) -> AbstractAsyncContextManager[ClientSession]:
    return recorded_http(deployment, record, grant or _grant(deployment), path=path)


async def _follow(client: ClientSession, uri: str, *, on: bool = True) -> None:
    request: Any = (types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)) if on
                    else types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri)))
    await client.send_request(request, types.EmptyResult)


def _decisions(deployment: Deployment, name: str) -> list[tuple[str, Any]]:
    events = search_events(deployment.runtime.store, EventFilter(action=f"tool:test/{name}"),
                           newest_first=False, limit=100)
    return [(e.event["outcome"], (e.event["decision"] or {}).get("policy_ids")) for e in events]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_completions_and_subscriptions_are_decided_audited_and_refused_before_upstream(
        deployment: Deployment, transport: str) -> None:
    record = deployment.tmp / f"heard-{secrets.token_hex(4)}.jsonl"
    opened = _stdio if transport == "stdio" else _http
    async with opened(deployment, record) as client:
        done = await client.complete(PROMPT, {"name": "name", "value": "frie"})
        assert done.completion.values == ["frie-ly"]
        done = await client.complete(TEMPLATE, {"name": "name", "value": "read"},
                                     {"other": "given"})
        assert done.completion.values == ["read-ly"]
        await _follow(client, "notes://readme")
        await _follow(client, "notes://readme", on=False)
        allowed = heard(record)
        assert allowed == [
            {"method": "completion/complete", "ref": {"type": "ref/prompt", "name": "greet"},
             "argument": {"name": "name", "value": "frie"}, "context": None},
            {"method": "completion/complete",
             "ref": {"type": "ref/resource", "uri": "notes://{name}"},
             "argument": {"name": "name", "value": "read"}, "context": {"other": "given"}},
            {"method": "resources/subscribe", "uri": "notes://readme"},
            {"method": "resources/unsubscribe", "uri": "notes://readme"}]

        with pytest.raises(MCPError) as denied:
            await client.complete(PROMPT, {"name": "name", "value": "a forbidden word"})
        assert (denied.value.error.data["reason"], denied.value.error.data["policy_ids"]) == (
            "policy_forbid", ["tests-completion-forbidden-word"])
        for on in (True, False):
            with pytest.raises(MCPError) as denied:
                await _follow(client, "notes://private/diary", on=on)
            assert (denied.value.error.data["reason"],
                    denied.value.error.data["policy_ids"]) == (
                "policy_forbid", ["tests-subscribe-private"])
        assert heard(record) == allowed  # nothing refused reached the upstream

    assert _decisions(deployment, "completion.complete") == [
        ("allowed", ALLOWED), ("allowed", ALLOWED), ("denied", ["tests-completion-forbidden-word"])]
    assert _decisions(deployment, "resources.subscribe") == [
        ("allowed", ALLOWED), ("denied", ["tests-subscribe-private"])]
    assert _decisions(deployment, "resources.unsubscribe") == [
        ("allowed", ALLOWED), ("denied", ["tests-subscribe-private"])]


async def test_on_the_shared_endpoint_the_prefixed_names_are_decided_under_their_server(
        deployment: Deployment) -> None:
    record = deployment.tmp / "heard.jsonl"
    async with _http(deployment, record, path="/mcp") as client:
        with pytest.raises(MCPError) as unknown:  # no listing yet: whose template is it?
            await client.complete(TEMPLATE, {"name": "name", "value": "x"})
        assert unknown.value.error.data["reason"] == "completion_unknown"
        with pytest.raises(MCPError) as unknown:
            await client.complete(types.PromptReference(type="ref/prompt", name="mail__greet"),
                                  {"name": "name", "value": "x"})
        assert unknown.value.error.data["reason"] == "completion_unknown"
        assert heard(record) == []
        await client.list_resource_templates()
        await client.list_resources()
        done = await client.complete(types.PromptReference(type="ref/prompt",
                                                           name="test__greet"),
                                     {"name": "name", "value": "frie"})
        assert done.completion.values == ["frie-ly"]
        assert (await client.complete(TEMPLATE, {"name": "name", "value": "read"})
                ).completion.values == ["read-ly"]
        await _follow(client, "notes://readme")
        # the upstream is asked for its own prompt's name, never the prefixed one
        assert [h.get("ref", h.get("uri")) for h in heard(record)] == [
            {"type": "ref/prompt", "name": "greet"},
            {"type": "ref/resource", "uri": "notes://{name}"}, "notes://readme"]
    assert _decisions(deployment, "completion.complete") == [("allowed", ALLOWED)] * 2


async def test_a_grant_that_does_not_cover_completions_or_subscriptions_is_refused_them(
        deployment: Deployment) -> None:
    record = deployment.tmp / "heard.jsonl"
    grant = deployment.grant([{"tool": "test/prompts.get"}, {"tool": "test/resources.read"}])
    async with _http(deployment, record, grant=grant) as client:
        with pytest.raises(MCPError) as refused:
            await client.complete(PROMPT, {"name": "name", "value": "frie"})
        assert refused.value.error.data["reason"] == "grant_out_of_scope"
        with pytest.raises(MCPError) as refused:
            await _follow(client, "notes://readme")
        assert refused.value.error.data["reason"] == "grant_out_of_scope"
    assert heard(record) == []
    assert [o for o, _ in _decisions(deployment, "completion.complete")] == ["denied"]
    assert [o for o, _ in _decisions(deployment, "resources.subscribe")] == ["denied"]

"""A direct call's answer kept as a dict (proctor.gateway.shaped) is guarded exactly as
the SDK's ``CallToolResult`` was: a differential test over a corpus of answers of every
content type, a secret injected in every field, each answer at every pair of the
upstream's and the agent's protocol versions. Both representations go through the
real output guard, the real audit log and grant authority; the agent must get the
same bytes, the audit the same redactions, and a grant leaked in either is revoked."""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from proctor.audit import EventFilter, iter_events
from proctor.errors import GrantError
from proctor.gateway.results import ResultGuard
from proctor.gateway.shaped import ShapedAnswer, shaped_result
from proctor.gateway.upstream import _OutputSchemas
from proctor.grants import GrantClaims
from proctor.oversight import OutputGuard
from proctor.runtime import issuer_for
from tests.gateway.conftest import Deployment

pytestmark = pytest.mark.anyio

_VERSIONS = [v for v in HANDSHAKE_PROTOCOL_VERSIONS if v >= "2025-03-26"]
_SCHEMA = {"type": "object", "properties": {"answer": {}}, "required": ["answer"]}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _corpus(secret: str) -> dict[str, dict[str, Any]]:
    """Answers an upstream writes, ``secret`` in every field an agent could read."""
    media = b"\x89PNG\r\n\x1a\n" + secret.encode() + b"\x00\x01tail"
    return {
        "text": {"content": [{"type": "text", "text": f"the key is {secret}"}]},
        "text split": {"content": [{"type": "text", "text": secret[:9]},
                                   {"type": "text", "text": secret[9:]}]},
        "clean": {"content": [{"type": "text", "text": "nothing to see"}],
                  "isError": False},
        "image": {"content": [{"type": "image", "data": _b64(media), "mimeType": "image/png",
                               "annotations": {"audience": ["user"], "priority": 0.5}}]},
        "audio": {"content": [{"type": "audio", "data": _b64(media),
                               "mimeType": "audio/wav"}]},
        "media clean": {"content": [{"type": "image", "data": _b64(b"\x00" * 64),
                                     "mimeType": "image/png"}]},
        "media as text": {"content": [{"type": "image", "data": f"not base64 {secret}!",
                                       "mimeType": "image/png"}]},
        "resource link": {"content": [{
            "type": "resource_link", "uri": f"file:///srv/{secret}.txt",
            "name": f"n-{secret}", "title": f"t {secret}",
            "description": f"d {secret}", "mimeType": "text/plain", "size": 12}]},
        "embedded text": {"content": [{"type": "resource", "resource": {
            "uri": "file:///srv/a.txt", "mimeType": "text/plain", "text": secret,
            "_meta": {"note": secret}}}]},
        "embedded blob": {"content": [{"type": "resource", "resource": {
            "uri": f"file:///srv/{secret}.bin", "mimeType": "application/octet-stream",
            "blob": _b64(media)}}]},
        "structured": {"content": [{"type": "text", "text": "{}"}],
                       "structuredContent": {"answer": secret, "password": "hunter2-xyz",
                                             "data": _b64(media), "blob": secret,
                                             "nested": [{"uri": "x", "blob": secret}]}},
        "error": {"content": [{"type": "text", "text": f"failed: {secret}"}], "isError": True},
        "meta": {"content": [], "_meta": {"trace": secret, "api_key": "abcdef123456",
                                           "deep": {"data": secret}}},
        "extras": {"content": [{"type": "text", "text": "ok", "future": secret,
                                "_meta": {"k": secret}}],
                   "newField": secret, "resultType": "complete", "ttlMs": 5,
                   "_meta": {"io.example/x": [secret, 1, None, True]}},
        "nulls": {"content": [{"type": "text", "text": secret, "annotations": None}],
                  "structuredContent": None, "isError": None},
        "lax": {"content": [{"type": "text", "text": secret}], "isError": 1},
        "unknown block": {"content": [{"type": "video", "data": secret}]},
        "structured list": {"content": [], "structuredContent": [secret]},
        "no content": {"structuredContent": {"answer": secret}},
        "encoded": {"content": [
            {"type": "text", "text": base64.b64encode(f"u:{secret}".encode()).decode()},
            {"type": "text", "text": secret.encode().hex()},
            {"type": "text", "text": json.dumps({"s": secret})},
            {"type": "text", "text": "".join(f"&#{ord(c)};" for c in secret)}]},
        "random": {"content": [{"type": "text",
                                "text": f"token {secrets.token_urlsafe(32)} here"}]},
    }


def _schemas(structured: bool) -> _OutputSchemas:
    schemas = _OutputSchemas()
    schemas.update([types.Tool(name="t", input_schema={"type": "object"},
                               output_schema=_SCHEMA if structured else None)],
                   complete=True)
    return schemas


def _outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    """What the agent gets: the result's bytes as written, or the error's kind."""
    try:
        return "result", run()
    except Exception as exc:  # the differential compares failures too
        return "error", type(exc).__name__


async def _both(results: ResultGuard, claims: GrantClaims, raw: dict[str, Any],
                up: str, agent: str, *, structured: bool) -> list[tuple[Any, ...]]:
    """The agent's bytes through the SDK's model and through the dict path."""
    outcomes: list[tuple[Any, ...]] = []
    for dict_path in (False, True):
        schemas = _schemas(structured)
        answer: Any
        try:
            if dict_path:
                answer = ShapedAnswer(schemas.shaped("t", up, copy.deepcopy(raw)), up)
                answer = await results.redact_answer(answer, claims=claims, tool_id="t/t",
                                                     decision_event=None)
            else:
                answer = schemas.checked("t", up, copy.deepcopy(raw))
                answer = await results.redact(answer, claims=claims, tool_id="t/t",
                                              decision_event=None)
        except Exception as exc:  # the differential compares failures too
            outcomes.append(("error", type(exc).__name__))
            continue
        outcomes.append(_outcome(lambda a=answer: json.dumps(  # type: ignore[misc]
            shaped_result(a, agent), ensure_ascii=False, separators=(",", ":"))))
    return outcomes


def _events(deployment: Deployment, action: str) -> list[Mapping[str, Any]]:
    return [e.event for e in iter_events(deployment.runtime.store, EventFilter(action=action))]


@pytest.mark.parametrize("structured", [False, True])
async def test_the_dict_path_guards_and_writes_every_answer_as_the_sdk_model_did(
        deployment: Deployment, structured: bool) -> None:
    secret = f"inj-{secrets.token_hex(12)}"
    runtime = deployment.runtime
    guard = OutputGuard(known_secrets=[secret], grant_issuer=issuer_for(deployment.settings))
    results = ResultGuard(guard, runtime.grants, runtime.audit, runtime.clock)
    claims = runtime.grants.identify(deployment.grant().token)
    compared = redacted = 0
    for name, raw in _corpus(secret).items():
        for up in _VERSIONS:
            for agent in _VERSIONS:
                before = len(_events(deployment, "gateway.redact"))
                sdk, direct = await _both(results, claims, raw, up, agent,
                                          structured=structured)
                events = _events(deployment, "gateway.redact")[before:]
                where = f"{name} at {up} to {agent}"
                assert sdk == direct, where
                # each representation audited the same redaction (or none)
                assert len(events) in (0, 2), where
                if events:
                    assert events[0]["detail"] == events[1]["detail"], where
                    assert events[0]["outcome"] == events[1]["outcome"], where
                    redacted += 1
                if direct[0] == "result":
                    assert secret not in direct[1], where
                    for form in (_b64(secret.encode()), secret.encode().hex()):
                        assert form not in direct[1], where
                compared += 1
    assert compared == len(_corpus(secret)) * len(_VERSIONS) ** 2
    # the corpus does carry secrets to find (with an output schema, only the answers
    # with structured content pass)
    assert redacted >= (len(_VERSIONS) ** 2 if structured else compared // 2)


async def test_a_grant_leaked_in_any_field_is_revoked_on_the_dict_path(
        deployment: Deployment) -> None:
    runtime = deployment.runtime
    guard = OutputGuard(grant_issuer=issuer_for(deployment.settings))
    results = ResultGuard(guard, runtime.grants, runtime.audit, runtime.clock)
    claims = runtime.grants.identify(deployment.grant().token)
    places: list[Callable[[str], dict[str, Any]]] = [
        lambda t: {"content": [{"type": "text", "text": t}]},
        lambda t: {"content": [], "structuredContent": {"data": t}},
        lambda t: {"content": [], "_meta": {"x": t}},
        lambda t: {"content": [{"type": "resource", "resource": {"uri": "a:b", "text": t}}]},
        lambda t: {"content": [{"type": "resource_link", "uri": "a:b", "name": t}]},
    ]
    version = _VERSIONS[-1]
    for place in places:
        leaked = deployment.grant()
        answer = ShapedAnswer(_schemas(False).shaped("t", version, place(leaked.token)),
                              version)
        guarded = await results.redact_answer(answer, claims=claims, tool_id="t/t",
                                              decision_event=None)
        assert leaked.token not in json.dumps(shaped_result(guarded, version))
        with pytest.raises(GrantError) as checked:
            runtime.grants.inspect(leaked.token)
        assert checked.value.code == "grant_revoked"
    assert len(_events(deployment, "gateway.leak")) == len(places)

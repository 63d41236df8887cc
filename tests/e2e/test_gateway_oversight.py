"""Through ``proctor mcp wrap`` (in process: its command line is tested as a process in
``test_gateway_stdio.py``) to the tests' own upstream: an injected secret the agent
cannot see, redaction, a leaked grant revoked at once, data sensitivity in the
decision, and revocation closing a live session with a call in flight.

Secrets and revocations are heard differently on PostgreSQL (``NOTIFY``): those tests
run on both backends; the output guard and the data-flow decision, on SQLite. Where the
upstream's process is not the subject (what the gateway does with a result, a leaked
grant, data sensitivity, an upstream's failing listings), the upstream is served over
HTTP in this process."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, iter_events
from proctor.codes import rpc_code
from proctor.errors import GrantError
from proctor.gateway.results import ResultGuard
from proctor.sealing import load_master_key
from proctor.secrets import SecretStore
from tests.conftest import sqlite_only
from tests.e2e.conftest import http_upstream
from tests.gateway.conftest import UPSTREAM, WAIT, Deployment, injected_secret
from tests.gateway.failing_upstream import create_server as create_failing
from tests.gateway.in_process import listening_socket, served, url_of, wrapped
from tests.gateway.media_upstream import create_server as create_media


@asynccontextmanager
async def failing_upstream(token: str) -> AsyncIterator[str]:
    """``tests/gateway/failing_upstream.py`` quoting ``token``, over HTTP in this process."""
    sock = listening_socket()
    async with served(create_failing(token).streamable_http_app(), sock):
        yield f"{url_of(sock)}/mcp"

pytestmark = pytest.mark.anyio



def _text(result: object) -> str:
    return json.dumps(result.model_dump(mode="json"))  # type: ignore[attr-defined]


def _over_http(deployment: Deployment, url: str,
               tools: dict[str, dict[str, str]] | None = None) -> Path:
    """A config naming the upstream ``test`` at ``url`` (``http_upstream``)."""
    return deployment.config({"upstreams": {"test": {"url": url, "tools": tools or {}}}})


def _audit_text(deployment: Deployment) -> str:
    return "\n".join(json.dumps(e.as_json()) for e in iter_events(deployment.runtime.store))


async def test_an_injected_secret_reaches_the_upstream_and_never_the_agent_nor_the_audit(
        deployment: Deployment) -> None:
    value, config = injected_secret(deployment)
    grant = deployment.grant()
    async with wrapped(deployment, grant, [], config=config, server="test") as client:
        digest = await client.call_tool("env_digest", {"name": "UPSTREAM_TOKEN"})
        assert digest.structured_content == {
            "result": hashlib.sha256(value.encode()).hexdigest()}
        shown = await client.call_tool("read_env", {"name": "UPSTREAM_TOKEN"})
        assert value not in _text(shown)
        assert "[REDACTED:known_secret]" in _text(shown)
    # the use is a lease under the grant, so revoking the grant ends it
    nodes = deployment.runtime.grants.tree(grant.claims.task_id)
    leases = [n for n in nodes if n.kind == "secret"]
    assert [n.parent_id for n in leases] == [grant.grant_id]
    # the session and its lease ended with the connection; the grant lives on
    session = [n for n in nodes if n.kind == "session"]
    assert [n.parent_id for n in session] == [grant.grant_id]
    assert all(n.is_revoked for n in leases + session)
    assert not next(n for n in nodes if n.id == grant.grant_id).is_revoked
    assert value not in _audit_text(deployment)


@pytest.mark.parametrize("meta", [None, cast(types.RequestParamsMeta, {"trace": "on"})],
                         ids=["direct", "sdk"])
async def test_an_injected_secret_an_upstream_logs_during_a_call_is_redacted(
        deployment: Deployment, meta: types.RequestParamsMeta | None) -> None:
    # a stdio upstream's log messages are relayed by the gateway's pipes (the direct
    # path, a plain call) or its SDK session (a call with `_meta`): the guard on both
    value, config = injected_secret(deployment)
    wire: list[types.JSONRPCMessage] = []
    async with wrapped(deployment, deployment.grant(), [], config=config, server="test",
                       wire=wire) as client:
        result = await client.call_tool("chatty", {"count": 1, "env": "UPSTREAM_TOKEN"},
                                        meta=meta)
    assert not result.is_error
    logged = [m.params for m in wire if isinstance(m, types.JSONRPCNotification)
              and m.method == "notifications/message"]
    assert [p["data"] for p in logged if p] == [
        "line 0", "UPSTREAM_TOKEN=[REDACTED:known_secret]"]
    assert logged[-1] and logged[-1]["logger"] == "[REDACTED:known_secret]"
    assert value not in json.dumps([m.model_dump(mode="json") for m in wire])
    assert value not in _audit_text(deployment)


async def test_an_injected_secret_an_upstream_prints_to_stderr_is_redacted_in_the_log(
        deployment: Deployment, tmp_path: Path) -> None:
    # tests/gateway/stderr_upstream.py prints it whole, in two writes, after bytes that
    # are not UTF-8, where a line over the cap is cut, and last with no newline
    value, config = injected_secret(deployment, [*UPSTREAM[:2], "tests.gateway.stderr_upstream"])
    log = tmp_path / "gateway.log"
    with log.open("w", encoding="utf-8") as errlog:
        async with wrapped(deployment, deployment.grant(), [], config=config, server="test",
                           errlog=errlog) as client:
            echoed = await client.call_tool("echo", {"text": "hi"})
            assert not echoed.is_error
    written = log.read_text(encoding="utf-8")
    assert value not in written
    lines = written.splitlines()
    for line in ["starting with token [REDACTED:known_secret]",
                 "split [REDACTED:known_secret] done",
                 "\ufffd\ufffd not utf-8 [REDACTED:known_secret]",
                 "after the long line"]:
        assert line in lines
    cut = next(line for line in lines if line.endswith("[cut: line over 16384 bytes]"))
    assert cut.startswith("p p ") and len(cut) < 16384 and value[:4] not in cut
    assert any(line.startswith("last [REDACTED:known_secret]") for line in lines)


async def test_an_injected_secret_an_upstream_quotes_in_its_listings_is_redacted(
        deployment: Deployment) -> None:
    # a first-seen server's tool definitions are reviewed as they come (pins), and
    # prompts and resources are not pinned: the output guard is what keeps the secret out
    value, config = injected_secret(deployment, [*UPSTREAM[:2], "tests.gateway.listing_upstream"])
    grant = deployment.grant([{"tool": "test/*"}])
    wire: list[types.JSONRPCMessage] = []
    async with wrapped(deployment, grant, [], config=config, server="test",
                       wire=wire) as client:
        listings = [await client.list_tools(), await client.list_prompts(),
                    await client.list_resources(), await client.list_resource_templates()]
    assert all(len(listing.model_dump(exclude_defaults=True)) > 0 for listing in listings)
    shown = json.dumps([m.model_dump(mode="json") for m in wire])
    assert value not in shown
    assert shown.count("[REDACTED:known_secret]") == 4
    assert value not in _audit_text(deployment)


@sqlite_only
async def test_an_injected_secret_inside_base64_media_is_redacted_and_the_media_stays_base64(
        deployment: Deployment) -> None:
    # the secret inside a PNG and a resource's blob (in a result, and read), at an offset
    # that is not a multiple of three and followed by other bytes: an image's data and a
    # blob were passed on unscanned
    value = "tok_" + secrets.token_urlsafe(22)  # 34 characters: 1 over a 3-byte group
    store = SecretStore(deployment.runtime.store, deployment.runtime.clock,
                        load_master_key(deployment.settings.home))
    store.put("upstream-token", value, by="erin@acme.example")
    sock = listening_socket()
    async with served(create_media(value).streamable_http_app(), sock):
        config = deployment.config({"upstreams": {"test": {
            "url": f"{url_of(sock)}/mcp",
            "headers": {"X-Upstream-Token": "${secret:upstream-token}"}}}})
        wire: list[types.JSONRPCMessage] = []
        async with wrapped(deployment, deployment.grant(), [], config=config, server="test",
                           wire=wire) as client:
            result = await client.call_tool("media", {})
            read = await client.read_resource("config://app")
    image, embedded = result.content
    assert isinstance(image, types.ImageContent)
    assert isinstance(embedded, types.EmbeddedResource)
    assert isinstance(embedded.resource, types.BlobResourceContents)
    blob = read.contents[0]
    assert isinstance(blob, types.BlobResourceContents)
    decoded = [base64.b64decode(m, validate=True)
               for m in (image.data, embedded.resource.blob, blob.blob)]
    assert decoded[0].startswith(b"\x89PNG") and decoded[0].endswith(b"\x00IEND")
    assert all(b"[REDACTED:known_secret]" in d and value.encode() not in d for d in decoded)
    assert value not in json.dumps([m.model_dump(mode="json") for m in wire])
    redactions = list(iter_events(deployment.runtime.store,
                                  EventFilter(action="gateway.redact")))
    assert {e.event["target"] for e in redactions} == {"test/media", "test/resources.read"}
    assert value not in _audit_text(deployment)


@sqlite_only
async def test_text_where_binary_payloads_go_is_scanned_as_text(deployment: Deployment) -> None:
    # an image's data, a resource's blob and `_meta.blob` that are not base64 (a
    # credential as text): they were passed on unscanned, as binary payloads are
    other = "ghp_" + secrets.token_hex(18)
    sock = listening_socket()
    async with served(create_media("unused-" + secrets.token_hex(8), other
                                   ).streamable_http_app(), sock), wrapped(
            deployment, deployment.grant(), [],
            config=_over_http(deployment, f"{url_of(sock)}/mcp"), server="test") as client:
        result = await client.call_tool("mislabelled", {})
    assert other not in _text(result)
    image, embedded = result.content
    assert isinstance(image, types.ImageContent)
    assert isinstance(embedded, types.EmbeddedResource)
    assert isinstance(embedded.resource, types.BlobResourceContents)
    assert result.meta is not None
    for shown in (image.data, embedded.resource.blob, result.meta["blob"]):
        assert shown == "token: [REDACTED:github_token]"


@sqlite_only
async def test_credentials_in_a_result_are_redacted_and_the_redaction_is_audited(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    async with http_upstream() as url, wrapped(
            deployment, grant, [], config=_over_http(deployment, url), server="test") as client:
        result = await client.call_tool("fake_credentials", {})
    text = _text(result)
    assert "ghp_" not in text and "AKIA" not in text
    assert "[REDACTED:github_token]" in text and "[REDACTED:aws_access_key]" in text
    redactions = list(iter_events(deployment.runtime.store,
                                  EventFilter(action="gateway.redact")))
    assert [e.event["target"] for e in redactions] == ["test/fake_credentials"]


@sqlite_only
async def test_an_upstreams_error_text_on_a_listing_is_redacted(
        deployment: Deployment) -> None:
    token = "ghp_" + secrets.token_hex(18)
    grant = deployment.grant()
    async with failing_upstream(token) as url, wrapped(
            deployment, grant, [], config=_over_http(deployment, url), server="test") as client:
        for listing in (client.list_prompts, client.list_resources,
                        client.list_resource_templates):
            with pytest.raises(MCPError) as refused:
                await listing()
            assert token not in refused.value.error.message
            assert "[REDACTED:github_token]" in refused.value.error.message


@sqlite_only
async def test_an_upstreams_error_on_a_tools_listing_is_redacted_and_its_data_left_out(
        deployment: Deployment) -> None:
    # the tools are listed again at each tools/list (after the listing at connect): an
    # upstream's error there reached the agent as the upstream wrote it, data included
    token = "ghp_" + secrets.token_hex(18)
    sock = listening_socket()
    async with served(create_failing(token, lists=1).streamable_http_app(), sock), wrapped(
            deployment, deployment.grant(), [],
            config=_over_http(deployment, f"{url_of(sock)}/mcp"), server="test") as client:
        with pytest.raises(MCPError) as refused:
            await client.list_tools()
    error = refused.value.error
    assert token not in error.message and token not in json.dumps(error.data)
    assert "[REDACTED:github_token]" in error.message


@sqlite_only
async def test_structured_content_is_scanned_even_under_binary_looking_keys(
        deployment: Deployment) -> None:
    token = "ghp_" + secrets.token_hex(18)
    grant = deployment.grant()
    async with failing_upstream(token) as url, wrapped(
            deployment, grant, [], config=_over_http(deployment, url), server="test") as client:
        result = await client.call_tool("lookup", {})
    assert result.structured_content is not None
    assert token not in _text(result)
    assert result.structured_content["object"]["blob"] == "[REDACTED:github_token]"
    assert result.structured_content["avatar"]["data"] == "[REDACTED:github_token]"


async def test_a_grant_leaked_in_arguments_or_in_a_result_is_revoked_at_once(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    leaked_in_args = deployment.grant([{"tool": "time/*"}])
    leaked_in_result = deployment.grant([{"tool": "time/*"}])
    note = deployment.tmp / "note.txt"
    note.write_text(f"the deploy grant is {leaked_in_result.token}\n")
    async with http_upstream() as url, wrapped(
            deployment, grant, [], config=_over_http(deployment, url), server="test") as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("echo", {"text": f"use {leaked_in_args.token}"})
        assert refused.value.error.data["reason"] == "grant_leaked"
        read = await client.call_tool("read_file", {"path": str(note)})
        assert leaked_in_result.token not in _text(read)
        assert "[REDACTED:proctor_grant]" in _text(read)
    for leaked in (leaked_in_args, leaked_in_result):
        with pytest.raises(GrantError) as checked:
            deployment.runtime.grants.inspect(leaked.token)
        assert checked.value.code == "grant_revoked"
    revocations = list(iter_events(deployment.runtime.store,
                                   EventFilter(action="grant.revoke")))
    assert sorted(e.event["target"] for e in revocations) == sorted(
        [leaked_in_args.accessor, leaked_in_result.accessor])
    assert {e.event["detail"]["reason"] for e in revocations} == {"leaked"}
    leaks = list(iter_events(deployment.runtime.store, EventFilter(action="gateway.leak")))
    assert sorted(e.event["detail"]["leaked_grant"] for e in leaks) == sorted(
        [leaked_in_args.grant_id, leaked_in_result.grant_id])
    deployment.runtime.grants.inspect(grant.token)  # the session's own grant is untouched


@sqlite_only
async def test_after_reading_restricted_data_nothing_goes_to_an_outside_destination(
        deployment: Deployment) -> None:
    note = deployment.tmp / "ledger.txt"
    note.write_text("Q3 numbers\n")
    grant = deployment.grant()
    async with http_upstream() as url, wrapped(
            deployment, grant, [], server="test", config=_over_http(
                deployment, url, {"echo": {"destination": "hooks.vendor.example"}})) as client:
        await client.call_tool("echo", {"text": "before"})
        await client.call_tool("read_file", {"path": str(note)})  # labelled restricted
        with pytest.raises(MCPError) as denied:
            await client.call_tool("echo", {"text": "after"})
    assert denied.value.error.data["policy_ids"] == ["no-exfiltration-after-restricted"]


async def test_revoking_the_grant_fails_the_call_in_flight_and_closes_the_session(
        deployment: Deployment) -> None:
    config = deployment.config({"gateway": {"revocation_poll_seconds": 0.2},
                                "upstreams": {"test": {"command": UPSTREAM}}})
    grant = deployment.grant()
    started = deployment.tmp / "hang-started"
    outcome: dict[str, BaseException] = {}
    async with wrapped(deployment, grant, [], config=config, server="test") as client:

        async def hang() -> None:
            try:
                await client.call_tool("hang", {"started": str(started)})
            except MCPError as exc:
                outcome["error"] = exc

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hang)
            with anyio.fail_after(WAIT):
                while not started.exists():  # the call reached the upstream
                    await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(deployment.runtime.grants.revoke, grant.accessor,
                                           "incident 7")
        error = outcome["error"]
        assert isinstance(error, MCPError)
        assert error.error.data["reason"] == "session_closed"
        with pytest.raises(MCPError) as after:  # the wrapper is gone
            await client.call_tool("echo", {"text": "still there?"})
        assert after.value.message == "Connection closed"


@sqlite_only
@pytest.mark.parametrize("path", ["direct", "sdk"])
async def test_a_failure_inside_the_gateway_reaches_the_agent_as_internal_error_without_its_text(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    # the SDK answered an unexpected exception with code 0 and its text, which can hold what
    # the agent must not see; a bug is simulated in the output guard (a progress callback
    # sends the call through the SDK's server, a plain call takes the direct path)
    leaked = "postgresql://proctor:" + secrets.token_hex(8) + "@db.internal/proctor"

    async def broken(self: ResultGuard, result: Any, **_: Any) -> Any:
        raise RuntimeError(f"could not reach {leaked}")

    monkeypatch.setattr(ResultGuard, "redact", broken)
    grant = deployment.grant()

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        return None

    async with http_upstream() as url, wrapped(
            deployment, grant, [], config=_over_http(deployment, url), server="test") as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("echo", {"text": "hi"},
                                   progress_callback=progress if path == "sdk" else None)
        error = refused.value.error
        assert (error.code, error.data["reason"]) == (rpc_code("internal_error"),
                                                      "internal_error")
        assert leaked not in error.message and "could not reach" not in error.message
        monkeypatch.undo()  # the session goes on: the next call is answered
        assert not (await client.call_tool("echo", {"text": "again"})).is_error

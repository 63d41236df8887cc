"""Tool pinning end to end: an upstream changes a tool at run time (a "rug pull"); the
next listing hides it and a call is denied until a human reviews the change.

The wrapper runs in process (``tests/gateway/in_process.py``: as ``proctor mcp wrap``
builds it, over real pipes) in front of the rug-pull server, a fresh one per test, over
streamable HTTP served in this process: pinning is the subject, not the wrapper's process
(which ``tests/e2e/test_gateway_stdio.py`` runs on both backends) nor the upstream's (one
interpreter less per test: about 1 s of CPU)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from sqlalchemy import select
from typer.testing import CliRunner, Result

from proctor.cli.main import app
from proctor.clock import FrozenClock, SystemClock
from proctor.grants import IssuedGrant
from proctor.oversight.pinning import ToolPins, definition_digest
from proctor.store.tables import audit_events
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import (
    agent,
    http_app_before,
    listening_socket,
    served,
    url_of,
    wrapped,
)
from tests.oversight.rug_pull_server import create_server

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def _wrapped_rug(deployment: Deployment, grant: IssuedGrant,
                       **spec: str) -> AsyncIterator[ClientSession]:
    """The wrapper in front of a new rug-pull server (upstream ``pins``, with ``spec``)."""
    sock = listening_socket()
    config = deployment.config({"upstreams": {"pins": {"url": f"{url_of(sock)}/mcp", **spec}}})
    async with served(create_server().streamable_http_app(), sock), wrapped(
            deployment, grant, [], server="pins", config=config) as client:
        yield client


def _proctor(deployment: Deployment, *args: str, answer: str | None = None) -> Result:
    """A `proctor` command on the deployment, in this process: its answer is the subject
    here. ``answer``: what the operator types at its prompt (None: no terminal)."""
    env = {k: v for k, v in deployment.env.items() if k != "PYTHONPATH"}
    return CliRunner().invoke(app, list(args), env=env, input=answer)


async def _listed(client: ClientSession) -> dict[str, Any]:
    return {t.name: t for t in (await client.list_tools()).tools}


async def _denied(client: ClientSession, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(MCPError) as denied:
        await client.call_tool(tool, args)
    data = denied.value.error.data
    assert isinstance(data, dict)
    return data


def _actions(deployment: Deployment) -> list[tuple[str, str, str]]:
    with deployment.runtime.store.reading() as conn:
        rows = conn.execute(select(audit_events.c.body)).all()
    bodies = [json.loads(r.body) if isinstance(r.body, str) else r.body for r in rows]
    return [(b["action"], b["target"], b["actor"]["type"]) for b in bodies
            if b["action"].startswith("tool.")]


async def test_a_changed_description_is_hidden_and_denied_until_a_human_reviews_it(
        deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "pins/*"}])
    async with _wrapped_rug(deployment, grant) as client:
        assert set(await _listed(client)) == {"weather", "rug_pull"}
        assert not (await client.call_tool("weather", {"city": "Oslo"})).is_error

        await client.call_tool("rug_pull", {"mode": "describe"})
        assert set(await _listed(client)) == {"rug_pull"}
        data = await _denied(client, "weather", {"city": "Oslo"})
        assert (data["reason"], data["tool"], data["change"]) == (
            "tool_changed", "pins/weather", "changed")

        # a human reviews the change (the command is tested below, outside the session)
        pins = ToolPins(deployment.runtime.store, deployment.runtime.clock,
                        deployment.runtime.audit)
        record = pins.record("pins/weather")
        seen = record.seen_definition
        assert seen is not None and "id_ed25519" in seen["description"]
        pins.review("pins/weather", by="erin@acme.example", expected_digest=definition_digest(seen))

        listed = await _listed(client)
        assert set(listed) == {"weather", "rug_pull"}
        assert "id_ed25519" in (listed["weather"].description or "")
        assert not (await client.call_tool("weather", {"city": "Oslo"})).is_error
    assert ("tool.changed", "pins/weather", "system") in _actions(deployment)
    assert ("tool.review", "pins/weather", "human") in _actions(deployment)


async def test_each_session_is_judged_by_the_definition_it_was_shown_whatever_others_list(
        deployment: Deployment) -> None:
    """Two wrappers (each its own runtime on the same database, as two processes) in
    front of one server that changes its listing between them. ``there`` is shown the
    changed definition and holds it back; the server then shows the reviewed one to
    ``here``, which does not make ``there``'s changed one reviewed (the flip-flop: it
    did, and ``there``'s call was allowed), nor clear the change waiting for a human.
    Once a human reviews the changed definition, ``there``'s call goes through without
    listing again, and ``here``'s call, on the definition it holds and no human
    reviewed any longer, is refused by the call's write."""
    grant = deployment.grant([{"tool": "pins/*"}])
    sock = listening_socket()
    config = deployment.config({"upstreams": {"pins": {"url": f"{url_of(sock)}/mcp"}}})
    pins = ToolPins(deployment.runtime.store, deployment.runtime.clock, deployment.runtime.audit)
    async with served(create_server().streamable_http_app(), sock), \
            wrapped(deployment, grant, [], server="pins", config=config) as here, \
            wrapped(deployment, grant, [], server="pins", config=config) as there:
        assert set(await _listed(here)) == {"weather", "rug_pull"}
        await there.call_tool("rug_pull", {"mode": "describe"})
        assert set(await _listed(there)) == {"rug_pull"}  # held back there
        changed = pins.record("pins/weather").seen_digest
        await here.call_tool("rug_pull", {"mode": "restore"})
        assert set(await _listed(here)) == {"weather", "rug_pull"}  # reviewed here

        data = await _denied(there, "weather", {"city": "Oslo"})
        assert (data["reason"], data["tool"]) == ("tool_changed", "pins/weather")
        # the tool shows what the server lists now (the reviewed definition), and the
        # change shown to ``there`` still waits for a human, as not listed now
        record = pins.record("pins/weather")
        assert (record.state, record.seen_digest) == ("reviewed", None)
        assert [(p.digest, p.is_listed) for p in record.pending] == [(changed, False)]
        assert not (await here.call_tool("weather", {"city": "Oslo"})).is_error

        assert changed is not None
        pins.review("pins/weather", by="erin@acme.example", expected_digest=changed)
        assert not (await there.call_tool("weather", {"city": "Oslo"})).is_error
        refused = await _denied(here, "weather", {"city": "Oslo"})  # its session: reviewed
        assert (refused["reason"], refused["tool"]) == ("tool_changed", "pins/weather")
        assert "event_id" in refused  # the call's write refused it, audited as its deny

        # the server shows the old definition again: held back, waiting for a human,
        # and the review of the changed one stands
        assert set(await _listed(here)) == {"rug_pull"}
        record = pins.record("pins/weather")
        assert record.definition is not None and record.seen_definition is not None
        assert (record.state, definition_digest(record.definition)) == ("unreviewed", changed)
        assert definition_digest(record.seen_definition) != changed


async def test_a_rename_is_a_change_of_the_reviewed_tool_and_a_new_tool_is_unreviewed(
        deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "pins/*"}])
    async with _wrapped_rug(deployment, grant) as client:
        assert set(await _listed(client)) == {"weather", "rug_pull"}
        await client.call_tool("rug_pull", {"mode": "rename"})
        await client.call_tool("rug_pull", {"mode": "add"})
        assert set(await _listed(client)) == {"rug_pull"}
        renamed = await _denied(client, "forecast", {"city": "Oslo"})
        assert (renamed["reason"], renamed["change"], renamed["renamed_from"]) == (
            "tool_changed", "renamed", "pins/weather")
        new = await _denied(client, "export", {})
        assert (new["reason"], new["change"]) == ("tool_unreviewed", "new")

    pending = _proctor(deployment, "tool", "list", "--pending", "--json")
    assert pending.exit_code == 0, pending.output
    tools = {t["tool"]: (t["change"], t["renamed_from"])
             for t in json.loads(pending.stdout)["tools"]}
    assert tools == {"pins/forecast": ("renamed", "pins/weather"),
                     "pins/export": ("new", None)}
    shown = _proctor(deployment, "tool", "show", "pins/forecast")
    assert shown.exit_code == 0, shown.output
    assert "pins/weather (reviewed)" in shown.stdout  # the diff is against the renamed tool
    pins = ToolPins(deployment.runtime.store, deployment.runtime.clock, deployment.runtime.audit)
    seen = pins.record("pins/forecast").seen_digest
    assert seen is not None and f"seen definition {seen}" in shown.stdout
    stale = _proctor(deployment, "tool", "review", "pins/forecast", "--by",
                     "erin@acme.example", "--digest", "0" * 64)
    assert stale.exit_code == 1 and "look at it again" in stale.stderr
    assert pins.record("pins/forecast").state == "unreviewed"
    reviewed = _proctor(deployment, "tool", "review", "pins/forecast", "--by",
                        "erin@acme.example", "--digest", seen)
    assert reviewed.exit_code == 0, reviewed.output
    assert "reviewed by erin@acme.example" in reviewed.stdout
    nothing = _proctor(deployment, "tool", "review", "pins/rug_pull", "--by", "erin@acme.example")
    assert nothing.exit_code == 1 and "no change to review" in nothing.stderr
    # without --digest the command shows the change and asks before it accepts the
    # digest it showed; no yes (or --json, a script): nothing reviewed
    export = pins.record("pins/export").seen_digest
    review = ("tool", "review", "pins/export", "--by", "erin@acme.example")
    for answer in (None, "n\n"):
        declined = _proctor(deployment, *review, answer=answer)
        assert declined.exit_code == 1 and "nothing reviewed" in declined.stderr
    unnamed = _proctor(deployment, *review, "--json")
    assert unnamed.exit_code == 1 and "review_digest_missing" in unnamed.stdout
    assert pins.record("pins/export").state == "unreviewed"
    named = _proctor(deployment, *review, answer="y\n")
    assert named.exit_code == 0, named.output
    assert "Export the data" in named.stdout
    assert f"accept definition {export} of pins/export?" in named.stdout
    assert pins.record("pins/export").state == "reviewed"


async def test_with_pin_warn_a_change_is_recorded_but_the_tool_stays_usable(
        deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "pins/*"}])
    async with _wrapped_rug(deployment, grant, pin="warn") as client:
        await client.call_tool("rug_pull", {"mode": "describe"})
        assert set(await _listed(client)) == {"weather", "rug_pull"}
        assert not (await client.call_tool("weather", {"city": "Oslo"})).is_error
    pins = ToolPins(deployment.runtime.store, deployment.runtime.clock, deployment.runtime.audit)
    assert pins.record("pins/weather").state == "unreviewed"  # reported, for a human
    assert ("tool.changed", "pins/weather", "system") in _actions(deployment)


async def test_a_change_taken_back_leaves_the_reviewed_tool_usable_and_a_rejection_stands(
        deployment: Deployment) -> None:
    """The upstream shows a changed definition, then takes it back: the reviewed tool is
    listed and called, and the change waits for a human as not listed now (it was shown
    as the tool's current definition). A human rejects it; shown again, it is hidden and
    denied ``tool_rejected``, by a wrapper started anew too, even with ``pin: warn``."""
    grant = deployment.grant([{"tool": "pins/*"}])
    pins = ToolPins(deployment.runtime.store, deployment.runtime.clock, deployment.runtime.audit)
    sock = listening_socket()
    url = f"{url_of(sock)}/mcp"
    strict = deployment.config({"upstreams": {"pins": {"url": url}}})
    async with served(create_server().streamable_http_app(), sock):
        async with wrapped(deployment, grant, [], server="pins", config=strict) as client:
            assert set(await _listed(client)) == {"weather", "rug_pull"}
            await client.call_tool("rug_pull", {"mode": "describe"})
            assert set(await _listed(client)) == {"rug_pull"}
            changed = pins.record("pins/weather").seen_digest
            await client.call_tool("rug_pull", {"mode": "restore"})
            assert set(await _listed(client)) == {"weather", "rug_pull"}
            assert not (await client.call_tool("weather", {"city": "Oslo"})).is_error
            record = pins.record("pins/weather")
            assert (record.state, record.seen_digest) == ("reviewed", None)
            assert [(p.digest, p.is_listed) for p in record.pending] == [(changed, False)]
            listed = _proctor(deployment, "tool", "list", "--pending", "--json")
            [tool] = json.loads(listed.stdout)["tools"]
            assert (tool["state"], [p["digest"] for p in tool["pending"]]) == (
                "reviewed", [changed])

            assert changed is not None
            rejected = _proctor(deployment, "tool", "reject", "pins/weather", "--by",
                                "erin@acme.example", "--digest", changed)
            assert rejected.exit_code == 0, rejected.output
            assert f"definition {changed} rejected by erin@acme.example" in rejected.stdout
            await client.call_tool("rug_pull", {"mode": "describe"})
            assert set(await _listed(client)) == {"rug_pull"}
            data = await _denied(client, "weather", {"city": "Oslo"})
            assert (data["reason"], data["tool"], data["change"]) == (
                "tool_rejected", "pins/weather", "rejected")
        warn = deployment.config({"upstreams": {"pins": {"url": url, "pin": "warn"}}})
        async with wrapped(deployment, grant, [], server="pins", config=warn) as again:
            assert set(await _listed(again)) == {"rug_pull"}
            data = await _denied(again, "weather", {"city": "Oslo"})
            assert data["reason"] == "tool_rejected"
    record = pins.record("pins/weather")
    assert (record.state, record.pending) == ("rejected", ())
    assert [(r.digest, r.decided_by) for r in record.rejected] == [
        (changed, "erin@acme.example")]
    review = _proctor(deployment, "tool", "review", "pins/weather", "--by",
                      "erin@acme.example", "--digest", changed, "--json")
    assert review.exit_code == 1 and "tool_definition_rejected" in review.stdout
    assert ("tool.reject", "pins/weather", "human") in _actions(deployment)


async def test_each_change_is_reviewed_by_its_own_digest_and_a_review_of_one_is_not_of_another(
        deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "pins/*"}])
    pins = ToolPins(deployment.runtime.store, deployment.runtime.clock, deployment.runtime.audit)
    async with _wrapped_rug(deployment, grant) as client:
        await client.call_tool("rug_pull", {"mode": "describe"})
        assert set(await _listed(client)) == {"rug_pull"}
        first = pins.record("pins/weather").seen_digest
        await client.call_tool("rug_pull", {"mode": "describe_more"})
        assert set(await _listed(client)) == {"rug_pull"}
        second = pins.record("pins/weather").seen_digest
        assert first is not None and second is not None and first != second
        assert [p.digest for p in pins.record("pins/weather").pending] == [second, first]

        # the review names the first change: it accepts that one, not the one listed now
        reviewed = _proctor(deployment, "tool", "review", "pins/weather", "--by",
                            "erin@acme.example", "--digest", first)
        assert reviewed.exit_code == 0, reviewed.output
        assert set(await _listed(client)) == {"rug_pull"}
        data = await _denied(client, "weather", {"city": "Oslo"})
        assert data["reason"] == "tool_changed"
        record = pins.record("pins/weather")
        assert record.reviewed_digest == first
        assert [p.digest for p in record.pending] == [second]
        await client.call_tool("rug_pull", {"mode": "describe"})
        assert set(await _listed(client)) == {"weather", "rug_pull"}
        assert not (await client.call_tool("weather", {"city": "Oslo"})).is_error
        # without --digest: the definition shown and confirmed is the one rejected
        shown = _proctor(deployment, "tool", "reject", "pins/weather", "--by",
                         "erin@acme.example", answer="y\n")
        assert shown.exit_code == 0, shown.output
        assert f"reject definition {second} of pins/weather?" in shown.stdout
        assert "aws" in shown.stdout
    assert [r.digest for r in pins.record("pins/weather").rejected] == [second]


class _HeldPins(ToolPins):
    """The deployment's pins, whose next :meth:`verdict` waits until released: the
    moment a call looks up a held-back definition again, in a worker thread."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.hold = False
        self.entered, self.released = threading.Event(), threading.Event()

    def verdict(self, tool_id: str, digest: str) -> Any:
        if self.hold:
            self.hold = False
            self.entered.set()
            self.released.wait(WAIT)
        return super().verdict(tool_id, digest)


async def test_a_listing_made_while_a_call_looks_up_its_pin_is_not_undone_by_the_call(
        deployment: Deployment) -> None:
    """A call of a held-back tool looks its pin up again (a human may have reviewed it
    since) and then stored the session's upstream as the call found it, with that
    pin reviewed: a listing the session made meanwhile, of a newer definition no human
    reviewed, was undone, and the tool that listing held back (hidden from the agent)
    was served on later calls. Now the pin is stored only on the listing it was
    looked up for."""
    grant = deployment.grant([{"tool": "pins/*"}])
    runtime = deployment.runtime
    pins = _HeldPins(runtime.store, runtime.clock, runtime.audit)
    upstream = listening_socket()
    app, gateway, public = http_app_before(deployment, "pins", upstream, pins=pins)
    with anyio.fail_after(WAIT):
        async with served(create_server().streamable_http_app(), upstream), \
                served(app, gateway), \
                agent(f"{public}/mcp/pins", grant, deployment,
                      FrozenClock(SystemClock().now())) as client:
            assert set(await _listed(client)) == {"weather", "rug_pull"}
            await client.call_tool("rug_pull", {"mode": "describe"})
            assert set(await _listed(client)) == {"rug_pull"}  # held back
            seen = pins.record("pins/weather").seen_definition
            assert seen is not None
            pins.review("pins/weather", by="erin@acme.example",
                        expected_digest=definition_digest(seen))
            await client.call_tool("rug_pull", {"mode": "describe_more"})

            weather = types.CallToolRequest(params=types.CallToolRequestParams(
                name="weather", arguments={"city": "Oslo"}))
            refused: list[Any] = []

            async def call() -> None:  # sent as it is: the SDK's call_tool lists again
                with pytest.raises(MCPError) as denied:
                    await client.send_request(weather, types.CallToolResult)
                refused.append(denied.value.error.data)

            pins.hold = True
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                await anyio.to_thread.run_sync(pins.entered.wait, WAIT)
                # the session lists the newer definition: held back, not shown
                assert set(await _listed(client)) == {"rug_pull"}
                pins.released.set()
            # the call is judged on that listing, and so is the next: the newer
            # definition, which this session last listed, stays held back (both were
            # served: the call stored the older listing back, its definition reviewed)
            await call()
            assert [(d["reason"], d["tool"]) for d in refused] == [
                ("tool_changed", "pins/weather")] * 2


async def test_an_older_listing_answered_last_does_not_replace_a_newer_one(
        deployment: Deployment) -> None:
    """Two listings at once, answered out of order: the first sent lists the reviewed
    definition, the second (after the server changed it) a newer one, held back. The
    older answer, stored last, replaced the newer listing: the session's calls were
    judged on the reviewed digest while the server served the newer definition. Now
    the answer of a listing sent before the one stored is dropped."""
    grant = deployment.grant([{"tool": "pins/*"}])
    server = create_server()
    plain = server.list_tools
    hold, entered, released = [False], anyio.Event(), anyio.Event()

    async def list_tools() -> Any:  # the server's listing as it is, answered on release
        tools = await plain()
        if hold[0]:
            hold[0] = False
            entered.set()
            await released.wait()
        return tools

    server.list_tools = list_tools  # type: ignore[method-assign]
    sock = listening_socket()
    config = deployment.config({"upstreams": {"pins": {"url": f"{url_of(sock)}/mcp"}}})
    with anyio.fail_after(WAIT):
        async with served(server.streamable_http_app(), sock), wrapped(
                deployment, grant, [], server="pins", config=config) as client:
            assert set(await _listed(client)) == {"weather", "rug_pull"}
            older: list[set[str]] = []

            async def list_older() -> None:
                older.append(set(await _listed(client)))

            async with anyio.create_task_group() as tasks:
                hold[0] = True
                tasks.start_soon(list_older)
                await entered.wait()  # the reviewed definition listed, its answer held
                await client.call_tool("rug_pull", {"mode": "describe"})
                assert set(await _listed(client)) == {"rug_pull"}  # held back
                released.set()
            # the call is judged on the newer listing (before: served, on the older)
            data = await _denied(client, "weather", {"city": "Oslo"})
            assert (data["reason"], data["tool"]) == ("tool_changed", "pins/weather")
            assert older == [{"rug_pull"}]  # the older listing answers the newer one

"""The MCP SDK's private helpers the gateway calls keep the shape it calls them with.

proctor.gateway.pipes runs a stdio upstream with the helpers of the SDK's own
``stdio_client`` (private: the lock pins the SDK's version), and
proctor.gateway.upstream checks a direct answer with the session's
``_later_revision_fields``. A new SDK that renames one fails the import loudly; one
that changes what it takes or gives would fail only when an upstream starts (every
stdio upstream then ``upstream_unavailable``) or answers: these tests name the helper
instead."""

from __future__ import annotations

import inspect
from typing import Any

import mcp.client.session as sdk_session
import mcp.client.stdio as sdk_stdio
import pytest
from mcp.shared.message import SessionMessage

# each helper, whether it is a coroutine function, and its parameters as pipes.py passes them
STDIO_HELPERS: dict[str, tuple[bool, list[tuple[str, Any]]]] = {
    "_get_executable_command": (True, [("command", inspect.Parameter.POSITIONAL_OR_KEYWORD)]),
    "_create_platform_compatible_process": (True, [
        ("command", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("args", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("env", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("errlog", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("cwd", inspect.Parameter.POSITIONAL_OR_KEYWORD)]),
    "_drain_stdout": (True, [("process", inspect.Parameter.POSITIONAL_OR_KEYWORD)]),
    "_stop_server_process": (True, [("process", inspect.Parameter.POSITIONAL_OR_KEYWORD)]),
    "_aclose_all": (True, [("streams", inspect.Parameter.VAR_POSITIONAL)]),
    "_parse_line": (False, [("line", inspect.Parameter.POSITIONAL_OR_KEYWORD)]),
    "get_default_environment": (False, []),
}


@pytest.mark.parametrize("name", sorted(STDIO_HELPERS))
def test_a_stdio_client_helper_the_pipes_call_takes_what_they_pass(name: str) -> None:
    is_async, expected = STDIO_HELPERS[name]
    helper = getattr(sdk_stdio, name, None)
    assert helper is not None, f"mcp.client.stdio.{name} is gone: gateway/pipes.py calls it"
    assert inspect.iscoroutinefunction(helper) is is_async, name
    parameters = [(p.name, p.kind) for p in inspect.signature(helper).parameters.values()]
    assert parameters == expected, f"mcp.client.stdio.{name} changed its parameters"


def test_the_sdk_line_parser_gives_a_message_or_the_error_as_a_value() -> None:
    parsed = sdk_stdio._parse_line('{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert isinstance(parsed, SessionMessage)
    assert parsed.message.method == "notifications/initialized"  # type: ignore[union-attr]
    refused = sdk_stdio._parse_line("{oops")
    assert isinstance(refused, ValueError)


def test_the_sessions_later_revision_fields_are_a_set_of_result_keys() -> None:
    fields = sdk_session._later_revision_fields("tools/call", "2025-11-25")
    assert isinstance(fields, frozenset)
    assert "resultType" in fields and "content" not in fields


def test_a_server_session_keeps_its_connection_where_the_relay_reads_it() -> None:
    # proctor.gateway.relay.Relay.connection: who follows a resource is the agent's
    # connection, read from the per-request session the SDK builds
    from mcp.server.connection import Connection
    from mcp.server.session import ServerSession

    connection = Connection.for_loop(_Outbound(), session_id=None)  # type: ignore[arg-type]
    session = ServerSession(_Outbound(), connection)  # type: ignore[arg-type]
    assert session._connection is connection


class _Outbound:
    async def notify(self, method: str, params: Any, opts: Any = None) -> None:
        return None


def test_the_session_checks_a_results_structured_content_through_its_public_hook() -> None:
    # proctor.gateway.upstream._Session overrides the session's validate_tool_result,
    # which its call_tool awaits for a result not in error: the SDK's own validator
    # matches patterns with `re` (a ReDoS on the loop) and has no work budget. A new SDK
    # whose call_tool checks results another way would check them with its own.
    from proctor.gateway.upstream import _Session

    hook = sdk_session.ClientSession.validate_tool_result
    assert inspect.iscoroutinefunction(hook)
    assert [p.name for p in inspect.signature(hook).parameters.values()] == [
        "self", "name", "result"]
    assert "await self.validate_tool_result(name, result)" in inspect.getsource(
        sdk_session.ClientSession.call_tool)
    assert _Session.validate_tool_result is not hook
    assert [p.name for p in inspect.signature(_Session.validate_tool_result).parameters
            .values()] == ["self", "name", "result"]

"""The JSON-RPC errors the gateway answers with: a code, a message naming the reason,
and ``data`` a machine can read (``{"reason": "policy_forbid", ...}``).

The JSON-RPC code of each reason is in :mod:`proctor.codes` (one registry for the
API and the gateways); the gateway's own are below -32000, where the MCP SDK takes
none (it takes -32000 for a closed connection and -32001 for a request timeout)::

    -32010  call_denied        the grant, the agent or policy said no (data.reason says which)
    -32011  approval_pending   a human has not decided yet (data.approval_id)
    -32012  upstream_failed    the upstream crashed, hung or is unreachable
    -32013  session_closed     the session's grant was revoked or expired
    -32602  invalid params     an unknown tool, arguments that do not match inputSchema
    -32600  invalid request    a message over the size or depth cap (data.reason
                               ``message_too_large``, ``message_too_deep``), or one
                               that gives a key twice (``message_repeated_key``)
    -32700  parse error        a message that is not JSON-RPC
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import RequestId
from pydantic import ValidationError

from proctor.codes import (
    APPROVAL_PENDING,
    CALL_DENIED,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    REGISTRY,
    SESSION_CLOSED,
    UPSTREAM_FAILED,
    Code,
    rpc_code,
)
from proctor.documents import parse_json, repeated_key
from proctor.errors import DocumentError, ProctorError

__all__ = ["APPROVAL_PENDING", "CALL_DENIED", "INVALID_PARAMS", "INVALID_REQUEST",
           "PARSE_ERROR", "PREFIX_BYTES", "SESSION_CLOSED", "UPSTREAM_FAILED",
           "internal_errors", "is_unanswered", "names_an_id", "repeated_key_refusal",
           "request_id_in_prefix", "rpc_error"]

log = logging.getLogger(__name__)

PREFIX_BYTES = 4096  # how much of a refused message is searched for its id
_PAIRS = json.JSONDecoder(object_pairs_hook=list)  # an object as its members, in order
_ID_IN_PREFIX = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,128}")')


def rpc_error(reason: Code, message: str, *, reasons: Sequence[str] = (),
              code: int | None = None, **data: Any) -> MCPError:
    """An error for the agent, with the JSON-RPC code of ``reason`` (or ``code``, where
    the place decides: a session that cannot be held is -32013 whatever failed);
    ``message`` is prefixed with the reason; a failure that passes says when to try
    again (``data.retry_after_seconds``, as ``Retry-After`` over HTTP)."""
    body: dict[str, Any] = {"reason": reason}
    retry = REGISTRY[reason].retry_after_seconds
    if retry is not None:
        body["retry_after_seconds"] = retry
    if reasons:
        body["reasons"] = list(reasons)
    body.update({k: v for k, v in data.items() if v is not None and v != ()})
    return MCPError(rpc_code(reason) if code is None else code, f"{reason}: {message}",
                    data=body)


@contextmanager
def internal_errors(method: str) -> Iterator[None]:
    """What a handler of ``method`` raises, as the agent gets it: an MCP error (and the
    SDK's own parameter validation) as it is; a proctor error as its code and message; any
    other exception logged with its traceback and answered ``internal_error`` without its
    text. The SDK would answer that text with code 0, and it can hold what the agent must
    not see: a path, a URL, a value an upstream's failure quoted."""
    try:
        yield
    except (MCPError, ValidationError):
        raise
    except ProctorError as exc:
        raise rpc_error(exc.code, exc.message) from None
    except Exception:
        log.exception("%s failed inside the gateway", method)
        raise rpc_error("internal_error", "the request failed inside proctor; the "
                        "gateway's log says why") from None


def repeated_key_refusal(message: bytes) -> tuple[RequestId | None, Code, str] | None:
    """The refusal of a message that gives a key twice in one object (``{"name": "safe",
    "name": "evil"}``, at any depth, ``arguments`` included): its id (from its prefix),
    the reason, the words; None for any other message. JSON leaves a repeated key to
    the reader, and the gateway's readers (the SDK's, Python's) keep the last one: a
    decision, an audit event, a human's approval and the upstream must all read one
    message alike, so none of them reads such a message (as the API refuses such a
    body, :func:`proctor.documents.repeated_key`)."""
    key = repeated_key(message)
    if key is None:
        return None
    reason: Code = "message_repeated_key"
    members = _members(message)
    ids = [value for name, value in members or () if name == "id"]
    request_id = ids[0] if len(ids) == 1 and _is_id(ids[0]) else None
    return (request_id, reason, f"the message gives the key `{key}` twice in one object")


def is_unanswered(message: bytes) -> bool:
    """Whether JSON-RPC answers nothing to ``message``, refused unread (a key given
    twice): a notification (a ``method``, no ``id``) or a response (no ``method``: the
    client's answer to a request of the server). Answering a notification breaks
    JSON-RPC; answering a response with its id would settle the client's own request
    of that id (its ids and the server's are apart) with an error it never caused.
    Only what cannot be read as a JSON object with a ``method`` and an ``id`` is still
    answered, with a null id. Asked of refused messages only."""
    members = _members(message)
    if members is None:
        return False
    names = {name for name, _ in members}
    return ("method" in names and "id" not in names) or (
        "method" not in names and "id" in names and bool(names & {"result", "error"}))


def _members(message: bytes) -> list[tuple[str, Any]] | None:
    """The top-level members of JSON object ``message`` in order, a repeated name as
    often as it is given; None if it is not one object. For a message already checked
    for size and depth."""
    try:
        document = _PAIRS.decode(message.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return document if isinstance(document, list) and all(
        isinstance(pair, tuple) for pair in document) and document else None


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def request_id_in_prefix(prefix: bytes) -> RequestId | None:
    """The request id at the start of a message that is not parsed whole (JSON-RPC
    clients put ``id`` before ``params``)."""
    head = prefix.split(b'"params"', 1)[0]
    match = _ID_IN_PREFIX.search(head)
    if match is None:
        return None
    try:
        request_id: RequestId = parse_json(match.group(1), what="the id")
    except DocumentError:
        return None
    return request_id


def names_an_id(message: bytes) -> bool:
    """Whether the JSON object ``message`` has an ``id`` member. The SDK's reader takes a
    request whose id is neither a string nor an integer (``1.5``, ``true``, ``null``, an
    object) for a notification, as it ignores members it does not know, and drops it: the
    agent waits for an answer that never comes, and nothing says why. JSON-RPC 2.0 makes
    it an invalid request, answered with a null id. Asked of what the SDK read as a
    notification only (a handful per session), so the parse costs no call anything."""
    if b'"id"' not in message and b"\\u" not in message:  # `"\u0069d"` is `"id"` too
        return False
    try:
        document = parse_json(message, what="the message")
    except DocumentError:
        return False
    return isinstance(document, dict) and "id" in document

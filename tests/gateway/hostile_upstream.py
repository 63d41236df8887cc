"""An MCP server over stdio that answers its calls with what a hostile or broken
server could write: it speaks the wire by hand (no SDK), so it can write anything.

It answers ``initialize`` (2025-11-25) and ``tools/list`` correctly; each tool's
call is answered as its name says. ``hang`` never answers, and appends the
``requestId`` of every ``notifications/cancelled`` it gets to the file named by
its ``log`` argument. ``sized`` answers with a line of exactly ``bytes`` bytes (the
newline not counted); ``endless`` starts an answer and never ends its line.
``retire`` leaves the tool its ``name`` argument names out of later listings (its
calls are still answered).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TOOLS = ["plain", "structured", "schema_violation", "no_structured", "tool_error", "rpc_error",
         "error_not_object", "result_not_object", "bad_content", "not_json", "too_deep",
         "no_jsonrpc", "both", "neither", "wrong_id_then_right", "twice", "later_fields",
         "notify_first", "hang", "crash", "lone_surrogate", "byte_order_mark", "sized",
         "endless", "retire"]
_CHUNK = 1 << 16


def _tool(name: str) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name, "inputSchema": {"type": "object"}}
    if name in ("structured", "schema_violation", "no_structured"):
        tool["outputSchema"] = _SCHEMA
    return tool


def _write(message: dict[str, Any] | str) -> None:
    text = message if isinstance(message, str) else json.dumps(message)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _text_answer_head(request_id: Any) -> str:
    return ('{"jsonrpc": "2.0", "id": ' + json.dumps(request_id)
            + ', "result": {"content": [{"type": "text", "text": "')


def _answer(request_id: Any, name: str, arguments: dict[str, Any]) -> None:
    text = [{"type": "text", "text": f"answer of {name}"}]
    ok = {"jsonrpc": "2.0", "id": request_id}
    if name == "plain":
        _write({**ok, "result": {"content": text}})
    elif name == "structured":
        _write({**ok, "result": {"content": text, "structuredContent": {"n": 3}}})
    elif name == "schema_violation":
        _write({**ok, "result": {"content": text, "structuredContent": {"n": "three"}}})
    elif name == "no_structured":
        _write({**ok, "result": {"content": text}})
    elif name == "tool_error":
        _write({**ok, "result": {"content": text, "isError": True}})
    elif name == "rpc_error":
        _write({**ok, "error": {"code": -32001, "message": "the backend said no",
                                "data": {"why": "because"}}})
    elif name == "error_not_object":
        _write({**ok, "error": "no"})
    elif name == "result_not_object":
        _write({**ok, "result": [1, 2]})
    elif name == "bad_content":
        _write({**ok, "result": {"content": "not a list"}})
    elif name == "not_json":
        _write('{"jsonrpc": "2.0", "id": ' + json.dumps(request_id) + ', "result": {oops')
    elif name == "too_deep":
        _write('{"jsonrpc": "2.0", "id": ' + json.dumps(request_id) + ', "result": '
               + "[" * 200_000 + "]" * 200_000 + "}")
    elif name == "no_jsonrpc":
        _write({"id": request_id, "result": {"content": text}})
    elif name == "both":
        _write({**ok, "result": {"content": text}, "error": {"code": 1, "message": "x"}})
    elif name == "neither":
        _write(ok)
    elif name == "wrong_id_then_right":
        _write({"jsonrpc": "2.0", "id": "proctor-999999", "result": {"content": []}})
        _write({"jsonrpc": "2.0", "id": 424242, "result": {"content": []}})
        _write({**ok, "result": {"content": text}})
    elif name == "twice":
        _write({**ok, "result": {"content": text}})
        _write({**ok, "result": {"content": [{"type": "text", "text": "second"}]}})
    elif name == "retire":
        _write({**ok, "result": {"content": text}})
    elif name == "later_fields":  # 2026-07-28 cache hints on a 2025 session: dropped
        _write({**ok, "result": {"content": text, "ttlMs": -5, "cacheScope": "nonsense"}})
    elif name == "notify_first":
        _write({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": "working"}})
        _write({**ok, "result": {"content": text}})
    elif name == "sized":
        head, tail = _text_answer_head(request_id), '"}]}}'
        _write(head + "x" * (int(arguments["bytes"]) - len(head) - len(tail)) + tail)
    elif name == "endless":  # 640 MiB without a newline: more than a test could wait for
        sys.stdout.write(_text_answer_head(request_id))
        try:
            for _ in range(10_000):
                sys.stdout.write("x" * _CHUNK)
                sys.stdout.flush()
        except BrokenPipeError:
            os._exit(0)
    elif name == "crash":
        os._exit(3)
    elif name == "lone_surrogate":  # valid JSON, a Python string, but no Unicode text
        _write('{"jsonrpc": "2.0", "id": ' + json.dumps(request_id) + ', "result": '
               '{"content": [{"type": "text", "text": "a\\ud800b"}]}}')
    elif name == "byte_order_mark":  # Python's json reads past it from bytes; JSON does not
        _write("\ufeff" + json.dumps({**ok, "result": {"content": text}}))
    # hang: no answer


def main() -> None:
    log_path = ""
    retired: set[str] = set()
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            _write({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"}}})
        elif method == "tools/list":
            _write({"jsonrpc": "2.0", "id": request_id,
                    "result": {"tools": [_tool(n) for n in TOOLS if n not in retired]}})
        elif method == "tools/call":
            if params.get("name") == "hang":
                log_path = (params.get("arguments") or {}).get("log", "")
            elif params.get("name") == "retire":
                retired.add(str((params.get("arguments") or {}).get("name")))
            _answer(request_id, str(params.get("name")), params.get("arguments") or {})
        elif method == "notifications/cancelled" and log_path:
            with Path(log_path).open("a", encoding="utf-8") as out:
                out.write(json.dumps(params.get("requestId")) + "\n")
        elif request_id is not None and method is not None:
            _write({"jsonrpc": "2.0", "id": request_id,
                    "error": {"code": -32601, "message": "method not found"}})


if __name__ == "__main__":
    main()

"""The upstream's SSE resumability, which the suite's pending polling scenario cannot see.

``server-sse-polling`` is recorded as not passing because the suite (0.1.16) declares
protocol 2025-03-26 on its probes; this checks the behaviour it means to test with a
client that declares 2025-11-25, so the recorded reason stays true.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

JSON_AND_SSE = {"Accept": "application/json, text/event-stream"}


def _events(response: httpx.Response) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append(current)
            current = {}
            if any('"result"' in e.get("data", "") for e in events):
                break
            continue
        name, _, value = line.partition(":")
        current[name] = value.strip()
    return events


def _session(client: httpx.Client, url: str) -> dict[str, str]:
    hello: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "resume-test", "version": "1"}}
    answer = client.post(url, headers=JSON_AND_SSE,
                         json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})
    headers = {**JSON_AND_SSE, "mcp-session-id": answer.headers["mcp-session-id"],
               "mcp-protocol-version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    client.post(url, headers=headers, json=initialized)
    return headers


def test_a_stream_closed_mid_call_resumes_with_last_event_id(conformance_upstream: str) -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "test_reconnection", "arguments": {}}}
    with httpx.Client(timeout=10) as client:
        headers = _session(client, conformance_upstream)
        with client.stream("POST", conformance_upstream, headers=headers, json=call) as posted:
            before = _events(posted)
        with client.stream("GET", conformance_upstream,
                           headers={**headers, "last-event-id": before[-1]["id"]}) as resumed:
            after = _events(resumed)

    assert before[0]["data"] == "" and before[0]["retry"] == "100"  # the priming event
    assert not any('"result"' in e.get("data", "") for e in before)  # closed mid-call
    result = json.loads(after[-1]["data"])
    assert result["id"] == 1
    assert result["result"]["content"][0]["text"] == "Reconnection test completed"

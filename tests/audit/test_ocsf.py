"""OCSF export, checked against the OCSF 1.3.0 API Activity field list in data/."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from proctor.audit import (
    OCSF_VERSION,
    Actor,
    ActorType,
    AuditEvent,
    AuditLog,
    EventFilter,
    export_lines,
    human_event,
    new_event_id,
)
from proctor.clock import FrozenClock
from proctor.store import Store
from tests.audit.helpers import agent_event

SPEC = json.loads((Path(__file__).parent / "data" / "ocsf-1.3.0-api-activity.json").read_text())
_INTEGERS = {"integer_t", "long_t", "timestamp_t"}
_STRINGS = {"string_t", "username_t", "ip_t"}


def _values(event: dict[str, Any], path: str) -> list[Any]:
    """Every value at ``path`` (``[]`` expands lists); absent parts yield nothing."""
    found: list[Any] = [event]
    for part in path.split("."):
        is_list = part.endswith("[]")
        key = part.removesuffix("[]")
        found = [item[key] for item in found if isinstance(item, dict) and key in item]
        if is_list:
            found = [element for value in found for element in value]
    return found


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def ocsf_problems(event: dict[str, Any]) -> list[str]:
    attributes: dict[str, dict[str, str]] = SPEC["attributes"]
    problems = []

    def walk(value: dict[str, Any], prefix: str) -> None:
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if path == "unmapped":
                continue
            if f"{path}[]" in attributes:
                if not isinstance(item, list):
                    problems.append(f"`{path}` must be an array")
                    continue
                for element in item:
                    check(f"{path}[]", element)
            elif path in attributes:
                check(path, item)
            else:
                problems.append(f"`{path}` is not an attribute of the class")

    def check(path: str, item: Any) -> None:
        kind = attributes[path]["type"]
        if kind in _INTEGERS:
            ok = isinstance(item, int) and not isinstance(item, bool)
        elif kind in _STRINGS:
            ok = isinstance(item, str)
            if ok and kind == "ip_t":
                try:
                    ipaddress.ip_address(item)
                except ValueError:
                    ok = False
        else:
            ok = isinstance(item, dict)
            if ok:
                walk(item, path)
        if not ok:
            problems.append(f"`{path}` is not a {kind}: {item!r}")

    walk(event, "")
    if "unmapped" in event and not isinstance(event["unmapped"], dict):
        problems.append("`unmapped` must be an object")
    for path, info in attributes.items():
        if info["requirement"] != "required":
            continue
        parent = _parent(path)
        key = path.rsplit(".", 1)[-1].removesuffix("[]")
        for container in ([event] if not parent else _values(event, parent)):
            if key not in container:
                problems.append(f"required `{path}` is missing")
    for path, allowed in SPEC["enums"].items():
        for value in _values(event, path):
            if value not in allowed:
                problems.append(f"`{path}` value {value} is not defined")
    for path, names in SPEC["at_least_one"].items():
        for container in _values(event, path):
            if not any(name in container for name in names):
                problems.append(f"`{path}` needs one of {names}")
    if event.get("type_uid") != event.get("class_uid", 0) * 100 + event.get("activity_id", 0):
        problems.append("`type_uid` is not class_uid * 100 + activity_id")
    return problems


@pytest.fixture
def exported(audit: AuditLog, store: Store, clock: FrozenClock) -> list[dict[str, Any]]:
    allowed = audit.record(agent_event(clock, 1))
    audit.record(agent_event(clock, 2, outcome="deny"))
    pending = audit.record(agent_event(clock, 3, outcome="approval_required"))
    audit.record(human_event("dave@acme.example", "approval.grant", 'Tool::"git/git_log#3"',
                             "approved", concerns=pending.event_id, now=clock.now(),
                             reason="checked the diff", source="192.0.2.10"))
    audit.record(human_event("erin@acme.example", "grant.revoke", 'Grant::"acc-7f3a"',
                             "revoked", concerns=allowed.event_id, now=clock.now()))
    audit.record(AuditEvent(id=new_event_id(clock.now()), time=clock.now(),
                            actor=Actor(ActorType.SYSTEM, "proctor"), action="audit.archive",
                            target="segment-1", outcome="succeeded"))
    return [json.loads(line) for line in export_lines(store, "ocsf")]


def test_every_exported_event_has_the_required_ocsf_fields_with_the_right_types(
    exported: list[dict[str, Any]],
) -> None:
    assert len(exported) == 6
    for event in exported:
        assert ocsf_problems(event) == [], event


def test_the_field_check_itself_catches_a_bad_event(exported: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(exported[0]))
    del broken["api"]["operation"]
    broken["time"] = "yesterday"
    broken["actor"]["user"]["nickname"] = "coder"
    problems = ocsf_problems(broken)
    assert "required `api.operation` is missing" in problems
    assert any(p.startswith("`time` is not a timestamp_t") for p in problems)
    assert "`actor.user.nickname` is not an attribute of the class" in problems


def test_decisions_map_to_the_class_activity_and_status(
    exported: list[dict[str, Any]],
) -> None:
    allow, deny, pending, approval, revocation, system = exported
    assert {e["class_uid"] for e in exported} == {6003}
    assert {e["metadata"]["version"] for e in exported} == {OCSF_VERSION}
    assert (allow["activity_id"], allow["activity_name"]) == (99, "tool:git/git_log")
    assert (allow["status_id"], deny["status_id"], pending["status_id"]) == (1, 2, 99)
    assert allow["actor"]["authorizations"] == [{"decision": "allow", "policy": {
        "uid": "coding-read", "name": "coding-read", "version": "3"}}]
    assert allow["actor"]["user"]["type_id"] == 99 and allow["actor"]["user"]["type"] == "Agent"
    assert (approval["activity_id"], approval["type_uid"]) == (3, 600303)
    assert approval["actor"]["user"] == {"uid": "dave@acme.example",
                                         "name": "dave@acme.example", "type": "User",
                                         "type_id": 1}
    assert approval["unmapped"]["proctor"]["concerns"] == pending["metadata"]["uid"]
    assert approval["src_endpoint"] == {"ip": "192.0.2.10"}
    assert revocation["activity_id"] == 4
    assert revocation["resources"] == [{"uid": "acc-7f3a", "name": "acc-7f3a", "type": "Grant"}]
    assert system["actor"]["user"]["type_id"] == 3
    assert system["src_endpoint"] == {"name": "unknown"}


def test_an_export_selects_by_actor_type(audit: AuditLog, store: Store,
                                         exported: list[dict[str, Any]]) -> None:
    humans = [json.loads(line) for line in
              export_lines(store, "ocsf", EventFilter(actor_type=ActorType.HUMAN))]
    assert [e["actor"]["user"]["uid"] for e in humans] == ["dave@acme.example",
                                                           "erin@acme.example"]

"""Audit events as OCSF 1.3.0 API Activity (class 6003) events.

Every proctor event is an API call on proctor or through it: an agent's tool
call that proctor decided, a human's approval (an update of the pending
request) or revocation (a delete of the grant). The authorization answer
goes where OCSF 1.3.0 puts one, ``actor.authorizations`` (Authorization
Result objects with the determining policies); allow/deny is also the
event's ``status``. proctor fields with no OCSF attribute go under
``unmapped.proctor``. ``docs/audit.md`` has the full field mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["OCSF_VERSION", "to_ocsf"]

OCSF_VERSION = "1.3.0"
CLASS_UID, CATEGORY_UID = 6003, 6

_ACTIVITIES = {"create": (1, "Create"), "read": (2, "Read"), "update": (3, "Update"),
               "delete": (4, "Delete")}
# The verb at the end of a dotted action (approval.grant, grant.revoke, ...).
_VERBS = {"issue": "create", "create": "create", "exchange": "create", "read": "read",
          "grant": "update", "deny": "update", "approve": "update", "reject": "update",
          "review": "update", "update": "update", "revoke": "delete", "delete": "delete"}
_STATUS = {"allow": (1, "Success"), "deny": (2, "Failure"),
           "approval_required": (99, "Approval Required")}
_FAILED_OUTCOMES = {"failed", "denied", "rejected", "error"}
_USER_TYPES = {"agent": (99, "Agent"), "human": (1, "User"), "system": (3, "System")}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENTITY = re.compile(r'^(?P<type>[A-Za-z_][A-Za-z0-9_:]*)::"(?P<id>(?:[^"\\]|\\.)*)"$')


def _activity(action: str) -> tuple[int, str, str]:
    """activity_id, its caption, and activity_name (the source's own name for "Other")."""
    verb = None if action.startswith("tool:") else _VERBS.get(action.rsplit(".", 1)[-1])
    if verb is None:
        return 99, "Other", action  # e.g. a tool call: not a CRUD verb
    activity_id, caption = _ACTIVITIES[verb]
    return activity_id, caption, caption


def _millis(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)


def _resource(target: str) -> dict[str, str]:
    match = _ENTITY.match(target)
    if match is None:
        return {"uid": target, "name": target}
    uid = match["id"].replace('\\"', '"').replace("\\\\", "\\")
    return {"uid": uid, "name": uid, "type": match["type"]}


def to_ocsf(seq: int, hash_: str, prev_hash: str, event: Mapping[str, Any],
            *, product_version: str = "") -> dict[str, Any]:
    """The OCSF 1.3.0 API Activity form of the stored event at position ``seq``."""
    actor, decision = event["actor"], event.get("decision")
    activity_id, caption, activity_name = _activity(event["action"])
    if decision is not None:
        status_id, status = _STATUS.get(decision["outcome"], (0, "Unknown"))
    else:
        status_id, status = (2, "Failure") if event["outcome"] in _FAILED_OUTCOMES else (
            1, "Success")
    user_type_id, user_type = _USER_TYPES[actor["type"]]
    authorizations = []
    if decision is not None:
        policies = decision["policy_ids"] or [None]
        for policy_id in policies:
            entry: dict[str, Any] = {"decision": decision["outcome"]}
            if policy_id is not None:
                entry["policy"] = {"uid": policy_id, "name": policy_id}
                if decision["revision"] is not None:
                    entry["policy"]["version"] = str(decision["revision"])
            authorizations.append(entry)
    product = {"name": "proctor", "vendor_name": "proctor"}
    if product_version:
        product["version"] = product_version
    metadata: dict[str, Any] = {"version": OCSF_VERSION, "product": product,
                                "uid": event["id"], "sequence": seq, "log_name": "audit"}
    if event.get("task"):
        metadata["correlation_uid"] = event["task"]
    user = {"uid": actor["id"], "name": actor["id"], "type": user_type,
            "type_id": user_type_id}
    result: dict[str, Any] = {
        "activity_id": activity_id, "activity_name": activity_name,
        "category_uid": CATEGORY_UID, "category_name": "Application Activity",
        "class_uid": CLASS_UID, "class_name": "API Activity",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"API Activity: {caption}",
        "severity_id": 1, "severity": "Informational",
        "time": _millis(event["time"]), "timezone_offset": 0,
        "status_id": status_id, "status": status,
        "message": f"{actor['type']} {actor['id']} {event['action']} on {event['target']}: "
                   f"{event['outcome']}",
        "metadata": metadata,
        "actor": {"user": user, **({"authorizations": authorizations} if authorizations else {})},
        "api": {"operation": event["action"], "service": {"name": "proctor"},
                "request": {"uid": event["id"]}},
        "src_endpoint": {"ip": event["source"]} if event.get("source") else {"name": "unknown"},
        "resources": [_resource(event["target"])],
        "unmapped": {"proctor": {
            "schema_version": event["v"], "seq": seq, "hash": hash_, "prev_hash": prev_hash,
            "outcome": event["outcome"], "on_behalf_of": actor.get("on_behalf_of", ""),
            "delegation_chain": event.get("delegation_chain", []), "task": event.get("task", ""),
            "grant_accessor": event.get("grant"), "request_digest": event.get("request_digest"),
            "concerns": event.get("concerns"), "detail": event.get("detail", {}),
            **({"decision_code": decision["code"], "policy_revision": decision["revision"],
                "reasons": decision["reasons"]} if decision is not None else {}),
        }},
    }
    if decision is not None:
        result["status_code"] = decision["code"]
        if decision["reasons"]:
            result["status_detail"] = "; ".join(decision["reasons"])
    return result

"""proctor's Cedar schema: entity types, one action per tool, and the call context.

The schema is generated from the tool catalog, because each tool's action
carries its own ``context.args`` type.
"""

from __future__ import annotations

import functools
import json

import cedarpy

from proctor.errors import Diagnostic, PolicyValidationError
from proctor.policy.catalog import ToolCatalog

__all__ = ["BASE_SCHEMA", "CompiledSchema", "build_schema", "call_context_cedar"]

BASE_SCHEMA = """\
type Delegation = {
  "depth": Long,
  "chain": Set<String>,
};
type CallTime = {
  "epoch": Long,
  "hour": Long,
  "weekday": Long,
};
type CallGrant = {
  "constrained": Set<String>,
};

entity Group in [Group];
entity Human in [Group] {
  "roles": Set<String>,
};
entity Agent in [Group] {
  "name": String,
  "trust_domain": String,
  "owner": Human,
  "trust_state": String,
  "risk_score": Long,
  "risk_factors": Set<String>,
};
entity Connector {
  "vendor": String,
  "scopes": Set<String>,
};
entity Server {
  "destination": String,
};
entity Tool in [Server] {
  "server": String,
  "name": String,
  "sensitivity": String,
  "sensitivity_level": Long,
  "destination": String,
  "connector"?: Connector,
};
"""


def call_context_cedar(args_type: str) -> str:
    """The context record of a tool call, with ``args`` of the given Cedar type."""
    return (
        "{\n"
        '    "task": String,\n'
        '    "purpose": String,\n'
        '    "on_behalf_of": String,\n'
        '    "delegation": Delegation,\n'
        '    "time": CallTime,\n'
        '    "source_ip"?: ipaddr,\n'
        '    "approved": Bool,\n'
        '    "sensitivity_seen": Long,\n'
        '    "grant": CallGrant,\n'
        f'    "args": {args_type},\n'
        "  }"
    )


class CompiledSchema:
    """The schema text and its parsed handle."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.handle = _parse_schema(text)


@functools.lru_cache(maxsize=16)
def _parse_schema(text: str) -> cedarpy.Schema:
    """Cedar's handle for ``text``, parsed once per process: the same catalog gives the
    same text at every runtime open and every server start (5 ms for the example
    catalog's), and a handle is immutable, shared by every decision's thread already. A
    text that does not parse raises each time (an exception is not cached)."""
    try:
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        raise PolicyValidationError(
            [Diagnostic("<schema>", 1, 1, f"schema is not valid: {exc}")]
        ) from exc


ISSUE_ACTION = """\
action "grant:issue" appliesTo {
  principal: [Agent],
  resource: [Tool],
  context: {
    "task": String,
    "purpose": String,
    "on_behalf_of": String,
    "delegation": Delegation,
    "time": CallTime,
    "ttl_seconds": Long,
    "max_uses": Long,
    "has_use_limit": Bool,
    "approved": Bool,
  }
};
"""


def build_schema(catalog: ToolCatalog) -> CompiledSchema:
    """The Cedar schema for ``catalog``'s tools."""
    parts = [
        BASE_SCHEMA,
        ISSUE_ACTION,
        "action call appliesTo {\n  principal: [Agent],\n  resource: [Tool],\n"
        f"  context: {call_context_cedar('{}')}\n}};\n",
    ]
    for tool in catalog:
        parts.append(
            f"action {json.dumps(tool.action_id)} in [Action::\"call\"] appliesTo {{\n"
            "  principal: [Agent],\n  resource: [Tool],\n"
            f"  context: {call_context_cedar(tool.args_shape.to_cedar())}\n}};\n"
        )
    return CompiledSchema("\n".join(parts))

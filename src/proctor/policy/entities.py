"""The entity graph Cedar evaluates against: agents, humans, groups, tools, servers.

Built once into a pre-parsed ``cedarpy.Entities`` handle and rebuilt only when
the data changes, never per decision.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cedarpy

from proctor.documents import read_yaml
from proctor.errors import ConfigError
from proctor.human_ids import canonical_human_id
from proctor.policy.catalog import ToolCatalog
from proctor.policy.schema import CompiledSchema

__all__ = ["TRUST_STATES", "EntityGraph", "load_principals", "principal_entities", "tool_entities"]

TRUST_STATES = ("trusted", "drifted", "unattested", "suspended", "retired")
_SPIFFE_AGENT = re.compile(r"^spiffe://([a-z0-9._-]+)/agent/([A-Za-z0-9._-]{1,128})\Z")


def _uid(type_: str, id_: str) -> dict[str, str]:
    """An entity uid; a human's id in canonical form, as policies compare it."""
    return {"type": type_, "id": canonical_human_id(id_) if type_ == "Human" else id_}


def tool_entities(catalog: ToolCatalog) -> list[dict[str, Any]]:
    """Tool, Server and Connector entities for every tool in ``catalog``."""
    out: list[dict[str, Any]] = []
    servers: dict[str, str] = {}
    for tool in catalog:
        servers.setdefault(tool.server, tool.destination)
        attrs: dict[str, Any] = {
            "server": tool.server,
            "name": tool.name,
            "sensitivity": tool.sensitivity.name.lower(),
            "sensitivity_level": int(tool.sensitivity),
            "destination": tool.destination,
        }
        if tool.connector:
            attrs["connector"] = {"__entity": _uid("Connector", tool.connector)}
        out.append(
            {"uid": _uid("Tool", tool.tool_id), "attrs": attrs,
             "parents": [_uid("Server", tool.server)]}
        )
    for server, destination in servers.items():
        out.append({"uid": _uid("Server", server), "attrs": {"destination": destination},
                    "parents": []})
    return out


# what each section's entries may say, and as what: a typo (`role:` for `roles:`) or
# a string for a list (`groups: admins`, read letter by letter) is refused, not ignored
_FIELDS: dict[str, dict[str, type]] = {
    "groups": {"id": str, "groups": list},
    "humans": {"id": str, "roles": list, "groups": list},
    "agents": {"id": str, "owner": str, "groups": list, "trust_state": str, "risk_score": int},
    "connectors": {"id": str, "vendor": str, "scopes": list},
}
_REQUIRED = {"agents": ("id", "owner")}


def principal_entities(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cedar entities from a principals document (``humans``, ``groups``, ``agents``,
    ``connectors``). Humans' ids (and agents' owners) are taken in canonical form.
    A document of another shape is a :class:`ConfigError` naming the entry and key."""
    out: list[dict[str, Any]] = []
    for group in _entries(spec, "groups"):
        out.append({"uid": _uid("Group", group["id"]), "attrs": {},
                    "parents": [_uid("Group", g) for g in group.get("groups") or ()]})
    for human in _entries(spec, "humans"):
        out.append({
            "uid": _uid("Human", human["id"]),
            "attrs": {"roles": list(human.get("roles") or ())},
            "parents": [_uid("Group", g) for g in human.get("groups") or ()],
        })
    for agent in _entries(spec, "agents"):
        out.append(agent_entity(
            agent["id"], owner=agent["owner"], groups=agent.get("groups") or (),
            trust_state=agent.get("trust_state") or "trusted",
            risk_score=agent.get("risk_score") or 0,
        ))
    for connector in _entries(spec, "connectors"):
        out.append({
            "uid": _uid("Connector", connector["id"]),
            "attrs": {"vendor": connector.get("vendor") or "",
                      "scopes": list(connector.get("scopes") or ())},
            "parents": [],
        })
    return out


def _entries(spec: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    """The entries of ``section``, each checked against :data:`_FIELDS`."""
    if not isinstance(spec, Mapping):
        raise ConfigError("the document must be a mapping of humans, groups, agents "
                          "and connectors")
    unknown = sorted(set(map(str, spec)) - _FIELDS.keys())
    if unknown:
        raise ConfigError(f"unknown section `{unknown[0]}` (known: humans, groups, agents, "
                          "connectors)")
    entries = spec.get(section)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"`{section}` must be a list")
    fields = _FIELDS[section]
    for index, entry in enumerate(entries):
        where = f"`{section}` entry {index + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        unknown = sorted(set(map(str, entry)) - fields.keys())
        if unknown:
            raise ConfigError(f"{where} has unknown key `{unknown[0]}`")
        for key in _REQUIRED.get(section, ("id",)):
            if entry.get(key) is None:
                raise ConfigError(f"{where} needs `{key}`")
        for key, kind in fields.items():
            value = entry.get(key)
            if value is None:
                continue
            if kind is list:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{where}: `{key}` must be a list of strings")
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{where}: `{key}` must be a whole number")
            elif not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: `{key}` must be a non-empty string")
    return entries


def agent_entity(
    spiffe_id: str, *, owner: str, groups: Iterable[str] = (), trust_state: str = "trusted",
    risk_score: int = 0, risk_factors: Iterable[str] = (),
) -> dict[str, Any]:
    """The Cedar entity of one agent."""
    match = _SPIFFE_AGENT.match(spiffe_id)
    if match is None:
        raise ConfigError(
            f"agent id `{spiffe_id}` is not a SPIFFE ID of the form "
            "spiffe://<trust-domain>/agent/<name>"
        )
    if trust_state not in TRUST_STATES:
        raise ConfigError(f"trust state `{trust_state}` is not one of {', '.join(TRUST_STATES)}")
    return {
        "uid": _uid("Agent", spiffe_id),
        "attrs": {
            "name": match.group(2),
            "trust_domain": match.group(1),
            "owner": {"__entity": _uid("Human", owner)},
            "trust_state": trust_state,
            "risk_score": risk_score,
            "risk_factors": sorted(set(risk_factors)),
        },
        "parents": [_uid("Group", g) for g in groups],
    }


def load_principals(path: Path) -> list[dict[str, Any]]:
    """Read an ``entities.yaml`` principals document."""
    spec = read_yaml(path, what="entities file", error=ConfigError) or {}
    try:
        return principal_entities(spec)
    except ConfigError as exc:
        raise ConfigError(f"entities file `{path}`: {exc.message}") from exc


class EntityGraph:
    """A pre-parsed, schema-checked entity set."""

    def __init__(self, entities: list[dict[str, Any]], schema: CompiledSchema) -> None:
        self.entities = entities
        try:
            self.handle = cedarpy.Entities.from_json_str(json.dumps(entities), schema.handle)
        except ValueError as exc:
            raise ConfigError(f"entities do not match the schema: {exc}") from exc

    def __len__(self) -> int:
        return len(self.entities)

"""The tools proctor knows: their servers, data-sensitivity labels and argument types.

A tool ``git_log`` on server ``git`` is the Cedar resource ``Tool::"git/git_log"``,
a member of ``Server::"git"``, and is called through the action
``Action::"tool:git/git_log"``, itself a member of ``Action::"call"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from proctor.documents import read_yaml
from proctor.errors import ConfigError
from proctor.policy.arguments import ArgShape, shape_from_json_schema

__all__ = ["Sensitivity", "ToolCatalog", "ToolSpec", "load_catalog"]

_SERVER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")
_TOOL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}\Z")


class Sensitivity(IntEnum):
    """Data-sensitivity labels, ordered so that policies can compare their levels."""

    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3

    @classmethod
    def parse(cls, label: str) -> Sensitivity:
        try:
            return cls[label.upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ConfigError(f"sensitivity `{label}` is not one of {names}") from None


LABELS = ("sensitivity", "destination", "connector")
"""A tool's labels, which a ``tools.yaml`` entry may give or leave to a default."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One upstream tool with its labels."""

    server: str
    name: str
    sensitivity: Sensitivity = Sensitivity.INTERNAL
    destination: str = "localhost"
    connector: str | None = None
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    # the labels a tools.yaml entry gave itself (the rest are defaults): the gateway lets
    # an upstream's own labels stand where the entry said nothing, so an entry giving a
    # tool a connector alone does not make a restricted upstream's tool `internal`
    declared: frozenset[str] = field(default=frozenset(LABELS), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _SERVER_RE.match(self.server):
            raise ConfigError(f"server name `{self.server}` is not valid")
        if not _TOOL_RE.match(self.name):
            raise ConfigError(f"tool name `{self.name}` is not valid")

    @property
    def tool_id(self) -> str:
        return f"{self.server}/{self.name}"

    @property
    def action_id(self) -> str:
        return f"tool:{self.server}/{self.name}"

    @property
    def args_shape(self) -> ArgShape:
        return shape_from_json_schema(self.input_schema)


class ToolCatalog:
    """The known tools, by action id."""

    def __init__(self, tools: Iterable[ToolSpec] = ()) -> None:
        self._by_action: dict[str, ToolSpec] = {}
        for tool in tools:
            if tool.action_id in self._by_action:
                raise ConfigError(f"tool `{tool.tool_id}` is declared twice")
            self._by_action[tool.action_id] = tool
        self._shapes = {a: t.args_shape for a, t in self._by_action.items()}

    def __iter__(self) -> Any:
        return iter(self._by_action.values())

    def __len__(self) -> int:
        return len(self._by_action)

    def by_action(self, action_id: str) -> ToolSpec | None:
        return self._by_action.get(action_id)

    def args_shape(self, action_id: str) -> ArgShape | None:
        return self._shapes.get(action_id)

    @property
    def servers(self) -> list[str]:
        return sorted({t.server for t in self._by_action.values()})

    @property
    def connectors(self) -> list[str]:
        return sorted({t.connector for t in self._by_action.values() if t.connector})


def load_catalog(path: Path) -> ToolCatalog:
    """Read a ``tools.yaml`` file: ``tools:`` a list of server, name, labels, input_schema."""
    data = read_yaml(path, what="tool catalog", error=ConfigError) or {}
    items = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"tool catalog `{path}` must have a `tools` list")
    tools = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "server" not in item or "name" not in item:
            raise ConfigError(f"tool catalog `{path}`: entry {i + 1} needs `server` and `name`")
        _check_entry(item, f"tool catalog `{path}`: entry {i + 1}")
        tools.append(
            ToolSpec(
                server=item["server"],
                name=item["name"],
                sensitivity=Sensitivity.parse(item.get("sensitivity") or "internal"),
                destination=item.get("destination") or "localhost",
                connector=item.get("connector"),
                input_schema=item.get("input_schema") or {},
                declared=frozenset(label for label in LABELS if item.get(label)),
            )
        )
    return ToolCatalog(tools)


_ENTRY_KEYS = ("server", "name", "sensitivity", "destination", "connector", "input_schema")


def _check_entry(item: dict[Any, Any], where: str) -> None:
    """An entry's keys and types: a mistyped key (`sensitvity: restricted`) left the tool
    `internal`, a number for a name was read as its digits."""
    unknown = sorted(set(map(str, item)) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown key `{unknown[0]}` (known: "
                          f"{', '.join(_ENTRY_KEYS)})")
    for key in _ENTRY_KEYS[:-1]:
        value = item.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where}: `{key}` must be a non-empty string")
    if not isinstance(item.get("input_schema") or {}, dict):
        raise ConfigError(f"{where}: `input_schema` must be a mapping (a JSON schema)")

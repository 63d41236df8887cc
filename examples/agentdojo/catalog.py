"""A suite's tools as proctor catalog entries: the JSON Schemas from AgentDojo's
function definitions, the labels (sensitivity, destination) from the suite's
``tools.yaml``.

The committed ``tools.yaml`` holds the schemas too, so that ``proctor policy
validate`` and ``proctor policy test`` work on the directory alone; the harness
refuses to run when they differ from what the installed AgentDojo defines, when a
tool of the suite has no entry (no schema, no label), or when an entry names a
tool the suite does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from examples.agentdojo.suites import HarnessError, ToolDefinition

__all__ = ["TOOLS_FILE", "catalog_entries", "write_catalog"]

TOOLS_FILE = "tools.yaml"
_DEFAULT_LABELS = {"sensitivity": "internal", "destination": "localhost"}


def catalog_entries(policy_dir: Path, server: str,
                    tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """The catalog entries for ``tools`` on ``server``; raises :class:`HarnessError`
    if ``policy_dir``'s ``tools.yaml`` does not describe exactly these tools."""
    committed = _read(policy_dir / TOOLS_FILE)
    entries = []
    for tool in tools:
        entry = committed.pop(tool.name, None)
        if entry is None or not entry.get("input_schema"):
            raise HarnessError(f"tool `{tool.name}` of suite `{server}` has no schema in "
                               f"`{policy_dir / TOOLS_FILE}`: run --write-tools, then label it")
        if entry["input_schema"] != tool.input_schema:
            raise HarnessError(f"the schema of `{tool.name}` in `{policy_dir / TOOLS_FILE}` is "
                               "not AgentDojo's: run --write-tools")
        entries.append({"server": server, "name": tool.name,
                        "sensitivity": entry.get("sensitivity", "internal"),
                        "destination": entry.get("destination", "localhost"),
                        "input_schema": dict(tool.input_schema)})
    if committed:
        raise HarnessError(f"`{policy_dir / TOOLS_FILE}` names `{sorted(committed)[0]}`, "
                           f"which suite `{server}` does not have")
    return entries


def write_catalog(policy_dir: Path, server: str, tools: Sequence[ToolDefinition]) -> Path:
    """Write ``tools.yaml`` with AgentDojo's schemas, keeping the labels already there
    (a new tool gets ``internal``: label it)."""
    path = policy_dir / TOOLS_FILE
    committed = _read(path) if path.is_file() else {}
    entries = []
    for tool in tools:
        labels = committed.get(tool.name, _DEFAULT_LABELS)
        entries.append({"server": server, "name": tool.name,
                        "sensitivity": labels.get("sensitivity", "internal"),
                        "destination": labels.get("destination", "localhost"),
                        "input_schema": dict(tool.input_schema)})
    header = ("# The tools of AgentDojo's suite, as proctor's catalog. Schemas: written by\n"
              "# `bench/efficacy.py --write-tools` from AgentDojo's function definitions.\n"
              "# Labels: by hand, from each tool's documentation (docs/efficacy.md).\n")
    path.write_text(header + yaml.safe_dump({"tools": entries}, sort_keys=False, width=100),
                    encoding="utf-8")
    return path


def _read(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise HarnessError(f"`{path}` is missing: run --write-tools, then label the tools")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    items = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise HarnessError(f"`{path}` must have a `tools` list")
    return {str(item.get("name")): item for item in items if isinstance(item, dict)}

"""Where each MCP client keeps its servers, and how to read each one's format.

Each entry is taken from the product's own documentation (the fixtures in
``tests/oversight/clients/`` are written from the same pages):

=============== ====================================================== =====================
client          files (user level: under the home; project level)     servers under
=============== ====================================================== =====================
claude-desktop  ``Library/Application Support/Claude/``,               ``mcpServers``
                ``AppData/Roaming/Claude/``, ``.config/Claude/``
                ``claude_desktop_config.json``
claude-code     ``.claude.json`` (user, and per project under          ``mcpServers``
                ``projects``); project ``.mcp.json``
cursor          ``.cursor/mcp.json`` (user and project)                ``mcpServers``
vscode          ``Code/User/mcp.json`` in the profile; project         ``servers``
                ``.vscode/mcp.json`` (JSON with comments)
windsurf        ``.codeium/windsurf/mcp_config.json``                  ``mcpServers``
                                                                       (``serverUrl``)
zed             ``.config/zed/settings.json``; project                 ``context_servers``
                ``.zed/settings.json`` (JSON with comments)
continue        ``.continue/config.yaml``; ``.continue/mcpServers/``   ``mcpServers`` (a list)
                (YAML blocks, or JSON in the ``mcpServers`` form)
gemini          ``.gemini/settings.json`` (user and project)           ``mcpServers``
                                                                       (``httpUrl``)
codex           ``.codex/config.toml`` (user, ``$CODEX_HOME``, and     ``mcp_servers``
                trusted projects)
=============== ====================================================== =====================

:func:`servers_in` returns each server's entry as the file has it, with the path of
keys that leads to it, so that a rewrite can put a new entry back in the same place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

__all__ = ["CLIENTS", "Client", "RawServer", "client_for", "project_paths", "servers_in",
           "strip_jsonc", "user_paths"]

Syntax = Literal["json", "jsonc", "yaml", "toml"]


@dataclass(frozen=True, slots=True)
class Client:
    """One MCP client: where its files are and how they are written."""

    name: str
    label: str
    syntax: Syntax
    user_files: tuple[str, ...]  # relative to the home; a trailing ``/*`` is a folder
    project_files: tuple[str, ...]  # relative to a project's root


CLIENTS: tuple[Client, ...] = (
    Client("claude-desktop", "Claude Desktop", "json", (
        "Library/Application Support/Claude/claude_desktop_config.json",
        "AppData/Roaming/Claude/claude_desktop_config.json",
        ".config/Claude/claude_desktop_config.json"), ()),
    Client("claude-code", "Claude Code", "json", (".claude.json",), (".mcp.json",)),
    Client("cursor", "Cursor", "json", (".cursor/mcp.json",), (".cursor/mcp.json",)),
    Client("vscode", "VS Code", "jsonc", (
        ".config/Code/User/mcp.json", "Library/Application Support/Code/User/mcp.json",
        "AppData/Roaming/Code/User/mcp.json"), (".vscode/mcp.json",)),
    Client("windsurf", "Windsurf", "json", (".codeium/windsurf/mcp_config.json",), ()),
    Client("zed", "Zed", "jsonc", (".config/zed/settings.json",), (".zed/settings.json",)),
    Client("continue", "Continue", "yaml", (".continue/config.yaml", ".continue/mcpServers/*"),
           (".continue/mcpServers/*",)),
    Client("gemini", "Gemini CLI", "json", (".gemini/settings.json",), (".gemini/settings.json",)),
    Client("codex", "Codex", "toml", (".codex/config.toml",), (".codex/config.toml",)),
)
_BY_NAME = {c.name: c for c in CLIENTS}


@dataclass(frozen=True, slots=True)
class RawServer:
    """A server entry as written in a client's file."""

    name: str
    spec: dict[str, Any]
    pointer: tuple[str | int, ...]  # the keys (and list indexes) that lead to ``spec``


def client_for(path: PurePath, document: Any = None) -> Client | None:
    """The client whose file ``path`` is, by its name and folder; else, when the parsed
    ``document`` is given, by the key its servers are under."""
    parts = [p.lower() for p in path.parts]
    name = parts[-1] if parts else ""
    parent = parts[-2] if len(parts) > 1 else ""
    by_place = {
        "claude_desktop_config.json": "claude-desktop", ".claude.json": "claude-code",
        ".mcp.json": "claude-code", "mcp_config.json": "windsurf", "config.toml": "codex",
    }
    if name in by_place:
        return _BY_NAME[by_place[name]]
    if name == "mcp.json":
        return _BY_NAME["vscode" if parent in {".vscode", "user"} else "cursor"]
    if name == "settings.json" and parent in {".gemini", ".zed", "zed"}:
        return _BY_NAME["gemini" if parent == ".gemini" else "zed"]
    if "mcpservers" in parts[:-1] or (name == "config.yaml" and parent == ".continue"):
        return _BY_NAME["continue"]
    if isinstance(document, dict):
        if "context_servers" in document:
            return _BY_NAME["zed"]
        if "mcp_servers" in document:
            return _BY_NAME["codex"]
        if isinstance(document.get("servers"), dict):
            return _BY_NAME["vscode"]
        if isinstance(document.get("mcpServers"), list):
            return _BY_NAME["continue"]
        if isinstance(document.get("mcpServers"), dict):
            return _BY_NAME["claude-desktop"]  # the form most clients share
    return None


def servers_in(client: Client, document: Any) -> Iterator[RawServer]:
    """Every server entry of ``document``, a parsed file of ``client``."""
    if not isinstance(document, dict):
        return
    if client.name == "vscode":
        yield from _mapping(document, ("servers",))
        settings = document.get("mcp")  # the older place: "mcp": {"servers": ...} in settings
        if isinstance(settings, dict):
            yield from _mapping(settings, ("mcp", "servers"), prefix=("mcp",))
    elif client.name == "zed":
        yield from _mapping(document, ("context_servers",))
    elif client.name == "codex":
        yield from _mapping(document, ("mcp_servers",))
    elif client.name == "continue":
        servers = document.get("mcpServers")
        if isinstance(servers, list):
            for index, spec in enumerate(servers):
                if isinstance(spec, dict):
                    yield RawServer(str(spec.get("name") or f"server-{index}"), spec,
                                    ("mcpServers", index))
        else:  # a JSON block in the shared mcpServers form
            yield from _mapping(document, ("mcpServers",))
    else:
        yield from _mapping(document, ("mcpServers",))
        projects = document.get("projects") if client.name == "claude-code" else None
        if isinstance(projects, dict):  # Claude Code's local scope, per project folder
            for folder, settings in projects.items():
                if isinstance(settings, dict):
                    yield from _mapping(settings, ("mcpServers",),
                                        prefix=("projects", str(folder)))


def _mapping(document: dict[str, Any], keys: tuple[str, ...], *,
             prefix: tuple[str, ...] = ()) -> Iterator[RawServer]:
    servers = document.get(keys[-1])
    if isinstance(servers, dict):
        for name, spec in servers.items():
            if isinstance(spec, dict):
                yield RawServer(str(name), spec, (*prefix, keys[-1], str(name)))


_JSONC_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
_JSONC_COMMA = re.compile(r'"(?:[^"\\]|\\.)*"|,(?=\s*[}\]])')


def strip_jsonc(text: str) -> tuple[str, bool]:
    """JSON with comments and trailing commas (VS Code's and Zed's settings) as plain
    JSON, and whether it had comments; strings are left as they are."""
    found = False

    def comment(match: re.Match[str]) -> str:
        nonlocal found
        token = match.group()
        if token.startswith('"'):
            return token
        found = True
        return "\n" * token.count("\n")  # keep the lines, so that errors name the right one

    def comma(match: re.Match[str]) -> str:
        token = match.group()
        return token if token.startswith('"') else ""

    return _JSONC_COMMA.sub(comma, _JSONC_COMMENT.sub(comment, text)), found


def user_paths(home: Path) -> Iterator[tuple[Client, Path]]:
    """Each client's user-level files under ``home`` (folders expanded), existing or not."""
    for client in CLIENTS:
        for relative in client.user_files:
            yield from _expand(client, home, relative)


def project_paths(root: Path) -> Iterator[tuple[Client, Path]]:
    """Each client's project-level files under ``root`` (folders expanded)."""
    for client in CLIENTS:
        for relative in client.project_files:
            yield from _expand(client, root, relative)


def _expand(client: Client, base: Path, relative: str) -> Iterator[tuple[Client, Path]]:
    if relative.endswith("/*"):
        folder = base / relative[:-2]
        try:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            entries = []
        for entry in entries:
            if entry.suffix.lower() in {".yaml", ".yml", ".json"}:
                yield client, entry
    else:
        yield client, base / relative

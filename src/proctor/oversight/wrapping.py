"""Rewriting an MCP client's config so that each local server runs behind proctor.

:func:`plan_wrap` reads the whole file first and refuses, changing nothing, one it
cannot parse completely or could not write back faithfully (comments in JSON with
comments, YAML, TOML). For each stdio server that does not already run behind proctor:

1. the command becomes ``proctor mcp wrap --agent A --server S [--key-file K]
   [--grant-file G] --env NAME… -- <the original command and arguments>``; the
   wrapper hands the listed variables on to the server (MCP clients start the
   wrapper with the entry's ``env``, and the wrapper starts the server with only
   what it is told);
2. each plaintext secret in ``env`` becomes ``${secret:mcp.<server>.<NAME>}``, filled
   in by the wrapper from proctor's secret store under a lease of the session's grant;
   the values travel in the plan (never in its repr) for the caller to store;
3. ``PROCTOR_HOME`` is added to ``env`` when a home is given.

The plan's ``backup`` is the file as it was, except that each moved secret's value is
its ``${secret:…}`` reference there too: a backup kept beside the file (in a project
folder, perhaps under version control) never holds the plaintext the rewrite moved.

Every other key of the file and of each entry is kept, in its order; remote servers
and servers already wrapped are left as they are (so a second run changes nothing).
JSON is written back with the file's own indentation.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proctor.errors import ConfigError
from proctor.oversight.clients import Client, servers_in, strip_jsonc
from proctor.oversight.discovery import (
    MAX_CONFIG_BYTES,
    UnreadableConfigError,
    arg_secrets,
    is_wrapped,
    pair_secrets,
    read_config,
    server_spec,
)

__all__ = ["MovedSecret", "WrapOptions", "WrapPlan", "plan_wrap", "proctor_server_name"]

_REDACTED = "[REDACTED:plaintext_secret]"
_NOT_SERVER_CHARS = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True, slots=True)
class WrapOptions:
    """What every wrapped entry is started with."""

    agent: str
    proctor: str = "proctor"  # the command that starts proctor, as the client will run it
    home: str | None = None
    key_file: str | None = None
    grant_file: str | None = None


@dataclass(frozen=True, slots=True)
class MovedSecret:
    """A plaintext secret to move into the secret store under ``name``."""

    server: str
    where: str
    name: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class WrapPlan:
    path: Path
    client: Client
    original: str = field(repr=False)
    rewritten: str = field(repr=False)
    wrapped: tuple[str, ...]
    left: tuple[tuple[str, str], ...]  # (server, why it was left as it is)
    secrets: tuple[MovedSecret, ...]
    backup: str = field(default="", repr=False)  # the original, moved secrets as references

    @property
    def is_change(self) -> bool:
        return self.original != self.rewritten

    def diff(self) -> str:
        """A unified diff of the rewrite, with every moved secret's value redacted."""
        before, after = self.original, self.rewritten
        for secret in self.secrets:
            for form in {secret.value, json.dumps(secret.value)[1:-1]}:
                before = before.replace(form, _REDACTED)
                after = after.replace(form, _REDACTED)
        return "".join(difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True),
            fromfile=str(self.path), tofile=f"{self.path} (behind proctor)"))


def proctor_server_name(name: str) -> str:
    """A client's server name as a proctor server name (the prefix of tool ids)."""
    cleaned = _NOT_SERVER_CHARS.sub("-", name.lower()).strip("-.")
    return cleaned[:64] or "mcp"


def plan_wrap(path: Path, options: WrapOptions, *, client: Client | None = None) -> WrapPlan:
    """The rewrite of ``path`` (a file of ``client``, by default the one its name says);
    raises :class:`ConfigError` for a file it will not write."""
    try:
        client, document = read_config(path, client)
    except FileNotFoundError:
        raise ConfigError(f"config file `{path}` does not exist") from None
    except UnreadableConfigError as exc:
        raise ConfigError(f"config file `{path}` is not rewritten: {exc.message} "
                          f"({exc.code})") from None
    raw = path.read_bytes()[:MAX_CONFIG_BYTES]
    original = raw.decode("utf-8-sig")
    syntax = "json" if client.name == "continue" and path.suffix == ".json" else client.syntax
    if syntax in {"yaml", "toml"}:
        raise ConfigError(f"config file `{path}` is {syntax.upper()}; `--wrap` rewrites "
                          "JSON configs only: wrap its servers by hand (see docs/discovery.md)")
    if syntax == "jsonc" and strip_jsonc(original)[1]:
        raise ConfigError(f"config file `{path}` has comments that a rewrite would drop; "
                          "remove them or wrap its servers by hand")
    pristine, document = document, copy.deepcopy(document)
    wrapped: list[str] = []
    left: list[tuple[str, str]] = []
    secrets: list[MovedSecret] = []
    for entry in servers_in(client, document):
        spec = server_spec(client, entry.spec)
        if spec.url is not None:
            left.append((entry.name, "remote: put it behind `proctor gateway`"))
        elif is_wrapped(spec.command):
            left.append((entry.name, "already behind proctor"))
        elif not spec.command or not spec.command[0]:
            left.append((entry.name, "no command"))
        else:
            secrets += _wrap_entry(entry.name, entry.spec, spec.command, spec.env, options)
            wrapped.append(entry.name)
            left += [(entry.name, f"plaintext secret in {s.where} left in place: move it "
                      "by hand") for s in arg_secrets(spec.command[1:])]
    rewritten = _render(document, original)
    return WrapPlan(path, client, original, rewritten, tuple(wrapped), tuple(left),
                    tuple(secrets), _backup(pristine, original, rewritten, secrets))


def _backup(document: Any, original: str, rewritten: str, secrets: list[MovedSecret]) -> str:
    """``original`` with every moved secret's value replaced by its reference; the
    original itself when nothing moved. Never more plaintext than the rewrite keeps."""
    if not secrets:
        return original
    references = {s.value: f"${{secret:{s.name}}}" for s in secrets}

    def replaced(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: replaced(v) for k, v in value.items()}
        if isinstance(value, list):
            return [replaced(v) for v in value]
        return references.get(value, value) if isinstance(value, str) else value

    text = _render(replaced(document), original)
    if any(form in text and form not in rewritten
           for s in secrets for form in {s.value, json.dumps(s.value)[1:-1]}):
        raise ConfigError("a moved secret would be left in the backup; wrap this file by hand")
    return text


def _wrap_entry(name: str, entry: dict[str, Any], command: tuple[str, ...],
                env: dict[str, str], options: WrapOptions) -> list[MovedSecret]:
    server = proctor_server_name(name)
    moved = [MovedSecret(name, s.where, f"mcp.{server}.{s.where.removeprefix('env.')}",
                         env[s.where.removeprefix("env.")])
             for s in pair_secrets("env", env)]
    args = ["mcp", "wrap", "--agent", options.agent, "--server", server]
    if options.key_file:
        args += ["--key-file", options.key_file]
    if options.grant_file:
        args += ["--grant-file", options.grant_file]
    for key in env:
        args += ["--env", key]
    args += ["--", *command]
    nested = entry.get("command")
    holder = nested if isinstance(nested, dict) else entry  # Zed's older {"path", "args"}
    target_env = holder.get("env") if isinstance(holder.get("env"), dict) else None
    new_env: dict[str, Any] = dict(target_env or {})
    if isinstance(nested, dict) and isinstance(entry.get("env"), dict):
        new_env.update(entry["env"])
        entry["env"] = {}
    for secret in moved:
        new_env[secret.where.removeprefix("env.")] = f"${{secret:{secret.name}}}"
    if options.home:
        new_env["PROCTOR_HOME"] = options.home
    if isinstance(nested, dict):
        nested["path"], nested["args"] = options.proctor, args
    else:
        entry["command"], entry["args"] = options.proctor, args
    if new_env or "env" in holder:
        holder["env"] = new_env
    return moved


def _render(document: Any, original: str) -> str:
    indent: int | str = 2
    for line in original.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) < len(line):
            whitespace = line[:len(line) - len(stripped)]
            indent = len(whitespace) if whitespace.strip(" ") == "" else whitespace
            break
    unit = " " * indent if isinstance(indent, int) else indent
    text = _dump(document, unit, 0)
    return text + "\n" if original.endswith("\n") else text


def _dump(value: Any, unit: str, level: int) -> str:
    """JSON as people write MCP configs: objects one key a line, a list of scalars
    (``"args": ["-y", "server"]``) on one line."""
    if isinstance(value, dict) and value:
        inner = unit * (level + 1)
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, unit, level + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + unit * level + "}"
    if isinstance(value, list) and value:
        inline = json.dumps(value, ensure_ascii=False)
        if all(not isinstance(v, dict | list) for v in value):
            return inline
        inner = unit * (level + 1)
        return "[\n" + ",\n".join(inner + _dump(v, unit, level + 1) for v in value) + \
            "\n" + unit * level + "]"
    return json.dumps(value, ensure_ascii=False)

"""Finding the MCP servers configured on a machine: ``proctor discover``.

For each candidate file (every client's documented places under the home and the
project, or the paths given), in order:

1. the file is read only if it is a regular file (a FIFO would block, a symlink loop
   never resolves), readable, and under :data:`MAX_CONFIG_BYTES`;
2. it is parsed in its client's syntax (JSON, JSON with comments, YAML, TOML) with
   the caps of :mod:`proctor.documents`;
3. each server entry is described: command or URL, transport, the names of the
   environment variables it is given, plaintext secrets (the output guard's formats,
   secret-named keys and its entropy check), how a remote server authenticates, and
   whether it already runs behind ``proctor mcp wrap``.

A file that fails a step is reported as a :class:`ScanProblem` and the scan goes on.
Values are never reported: a secret is named by where it is (``env.GITHUB_TOKEN``),
and commands and URLs are shown redacted.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from proctor.credentials import is_placeholder, is_secret_key
from proctor.documents import parse_json, parse_toml, parse_yaml
from proctor.errors import DocumentError
from proctor.oversight.clients import (
    CLIENTS,
    Client,
    RawServer,
    client_for,
    project_paths,
    servers_in,
    strip_jsonc,
    user_paths,
)
from proctor.oversight.guard import OutputGuard

__all__ = ["MAX_CONFIG_BYTES", "DiscoveredServer", "Discovery", "PlaintextSecret",
           "ScanProblem", "ServerSpec", "UnreadableConfigError", "arg_secrets", "discover",
           "is_wrapped", "pair_secrets", "read_config", "server_spec"]

# Claude Code keeps its history in ~/.claude.json too, so the cap is generous.
MAX_CONFIG_BYTES = 8 << 20
_GUARD = OutputGuard()
CODEX = next(c for c in CLIENTS if c.name == "codex")


@dataclass(frozen=True, slots=True)
class PlaintextSecret:
    """A secret written into a config: where (``env.API_KEY``, ``args[3]``) and its kind."""

    where: str
    kind: str


@dataclass(frozen=True, slots=True)
class DiscoveredServer:
    """One server of one client's file, as that client would start or reach it."""

    client: str
    file: str
    name: str
    transport: str  # stdio | http | sse
    command: tuple[str, ...]  # redacted
    url: str | None  # redacted
    env: tuple[str, ...]  # names only
    auth: str
    secrets: tuple[PlaintextSecret, ...]
    behind_proctor: bool
    pointer: tuple[str | int, ...] = field(default=(), repr=False)

    @property
    def is_remote(self) -> bool:
        return self.url is not None

    def as_json(self) -> dict[str, Any]:
        return {"client": self.client, "file": self.file, "server": self.name,
                "transport": self.transport, "command": list(self.command), "url": self.url,
                "remote": self.is_remote, "env": list(self.env), "auth": self.auth,
                "plaintext_secrets": [{"where": s.where, "kind": s.kind} for s in self.secrets],
                "behind_proctor": self.behind_proctor}


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """A file that could not be scanned, and why; the scan went on without it."""

    file: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Discovery:
    files: tuple[str, ...]  # the files read, in order
    servers: tuple[DiscoveredServer, ...]
    problems: tuple[ScanProblem, ...]

    @property
    def has_plaintext_secrets(self) -> bool:
        return any(s.secrets for s in self.servers)

    def as_json(self) -> dict[str, Any]:
        return {"files": list(self.files), "servers": [s.as_json() for s in self.servers],
                "problems": [{"file": p.file, "code": p.code, "message": p.message}
                             for p in self.problems],
                "plaintext_secrets": sum(len(s.secrets) for s in self.servers)}


class UnreadableConfigError(Exception):
    """A config file that cannot be scanned; ``code`` says why (``config_…``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def discover(paths: Sequence[Path] = (), *, home: Path | None = None,
             cwd: Path | None = None) -> Discovery:
    """Scan ``paths`` (files, or folders read as a home and as a project), or by default
    every client's user-level files under ``home`` and project-level files in ``cwd``."""
    files: list[str] = []
    servers: list[DiscoveredServer] = []
    problems: list[ScanProblem] = []
    for client, path, explicit in _candidates(paths, home, cwd):
        shown = str(path)
        try:
            found_client, document = read_config(path, client)
        except FileNotFoundError:
            if explicit:
                problems.append(ScanProblem(shown, "config_not_found", "no such file"))
            continue
        except UnreadableConfigError as exc:
            problems.append(ScanProblem(shown, exc.code, exc.message))
            continue
        files.append(shown)
        servers += [describe(found_client, shown, raw)
                    for raw in servers_in(found_client, document)]
    return Discovery(tuple(files), tuple(servers), tuple(problems))


def _candidates(paths: Sequence[Path], home: Path | None,
                cwd: Path | None) -> Iterator[tuple[Client | None, Path, bool]]:
    seen: set[Path] = set()

    def fresh(path: Path) -> bool:
        key = path.absolute()
        if key in seen:
            return False
        seen.add(key)
        return True

    if not paths:
        home = home or Path.home()
        places = [*user_paths(home), *project_paths(cwd or Path.cwd())]
        codex_home = os.environ.get("CODEX_HOME")
        if codex_home:
            places.append((CODEX, Path(codex_home) / "config.toml"))
        for client, path in places:
            if fresh(path):
                yield client, path, False
        return
    for given in paths:
        if given.is_dir():
            for client, path in [*user_paths(given), *project_paths(given)]:
                if fresh(path):
                    yield client, path, False
        elif fresh(given):
            yield None, given, True


def read_config(path: Path, client: Client | None = None) -> tuple[Client, Any]:
    """The client and the parsed document of ``path``; raises ``FileNotFoundError`` for
    a missing file and a problem (with its code) for one that cannot be read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableConfigError("config_symlink_loop", "a symbolic link loop") from None
        raise UnreadableConfigError("config_unreadable",
                                    f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableConfigError("config_not_a_file", "not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise UnreadableConfigError("config_too_large", f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UnreadableConfigError("config_unreadable",
                                    f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UnreadableConfigError("config_too_large", f"larger than {MAX_CONFIG_BYTES} bytes")
    client = client or client_for(path)
    try:
        document = _parse(raw, client, path)
    except DocumentError as exc:
        raise UnreadableConfigError("config_malformed", exc.message) from None
    client = client or client_for(path, document)
    if client is None:
        raise UnreadableConfigError("config_unknown_format",
                               "not the configuration of a known MCP client")
    return client, document


def _parse(raw: bytes, client: Client | None, path: Path) -> Any:
    what = "the file"
    syntax = client.syntax if client else {".toml": "toml", ".yaml": "yaml",
                                           ".yml": "yaml"}.get(path.suffix.lower(), "jsonc")
    if client is not None and client.name == "continue" and path.suffix.lower() == ".json":
        syntax = "json"
    if syntax == "toml":
        return parse_toml(raw, what=what, max_bytes=MAX_CONFIG_BYTES)
    if syntax == "yaml":
        return parse_yaml(raw, what=what, max_bytes=MAX_CONFIG_BYTES)
    if syntax == "jsonc":
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DocumentError("document_malformed", f"{what} is not UTF-8") from None
        return parse_json(strip_jsonc(text)[0], what=what, max_bytes=MAX_CONFIG_BYTES)
    return parse_json(raw, what=what, max_bytes=MAX_CONFIG_BYTES)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server entry in the terms all clients share."""

    command: tuple[str, ...]
    url: str | None
    transport: str
    env: dict[str, str]
    headers: dict[str, str]


def server_spec(client: Client, spec: dict[str, Any]) -> ServerSpec:
    """What a server entry of ``client`` runs or reaches, in common terms."""
    command: list[str] = []
    env = _strings(spec.get("env"))
    raw_command = spec.get("command")
    if isinstance(raw_command, dict):  # Zed's older form: {"path", "args", "env"}
        command = [str(raw_command.get("path") or "")]
        command += [str(a) for a in raw_command.get("args") or [] if a is not None]
        env = {**_strings(raw_command.get("env")), **env}
    elif isinstance(raw_command, str) and raw_command:
        command = [raw_command]
    if command:
        args = spec.get("args")
        command += [str(a) for a in args] if isinstance(args, list) else []
    url = next((str(spec[k]) for k in ("url", "serverUrl", "httpUrl")
                if isinstance(spec.get(k), str)), None)
    headers = {**_strings(spec.get("headers")), **_strings(spec.get("http_headers"))}
    options = spec.get("requestOptions")
    if isinstance(options, dict):
        headers.update(_strings(options.get("headers")))
    kind = str(spec.get("type") or spec.get("transport") or "").lower()
    if url is None:
        transport = "stdio"
    elif kind == "sse" or (client.name == "gemini" and "url" in spec) or url.endswith("/sse"):
        transport = "sse"
    else:
        transport = "http"
    return ServerSpec(tuple(command), url, transport, env, headers)


def describe(client: Client, file: str, raw: RawServer) -> DiscoveredServer:
    spec = server_spec(client, raw.spec)
    secrets = [*pair_secrets("env", spec.env), *pair_secrets("headers", spec.headers),
               *arg_secrets(spec.command[1:])]
    if spec.url is not None and _text_kinds(spec.url):
        secrets.append(PlaintextSecret("url", _text_kinds(spec.url)[0]))
    return DiscoveredServer(
        client=client.name, file=file, name=raw.name, transport=spec.transport,
        command=tuple(_redacted(part) for part in spec.command),
        url=_redacted(spec.url) if spec.url is not None else None,
        env=tuple(sorted(spec.env)), auth=_auth(raw.spec, spec),
        secrets=tuple(secrets), behind_proctor=is_wrapped(spec.command), pointer=raw.pointer)


def is_wrapped(command: Sequence[str]) -> bool:
    """Whether ``command`` starts ``proctor mcp wrap`` (directly or ``python -m proctor.cli``)."""
    parts = list(command)
    if parts and PurePath(parts[0]).name in {"proctor", "proctor.exe"}:
        return parts[1:3] == ["mcp", "wrap"]
    if "-m" in parts:
        at = parts.index("-m")
        return parts[at + 1:at + 2] in (["proctor"], ["proctor.cli"]) and \
            parts[at + 2:at + 4] == ["mcp", "wrap"]
    return False


def pair_secrets(where: str, values: dict[str, str]) -> Iterator[PlaintextSecret]:
    """The plaintext secrets among ``values`` (an ``env`` or ``headers`` mapping)."""
    for key, value in values.items():
        scheme, _, rest = value.partition(" ")
        if scheme.lower() in {"bearer", "basic"}:
            value = rest.strip()  # the credential is what follows the scheme
        if is_placeholder(value) or not value:
            continue
        if is_secret_key(key):
            yield PlaintextSecret(f"{where}.{key}", "credential_pair")
        elif kinds := _text_kinds(value):
            yield PlaintextSecret(f"{where}.{key}", kinds[0])


def arg_secrets(args: Iterable[str]) -> Iterator[PlaintextSecret]:
    """The plaintext secrets among a command's arguments (``args[1]`` is the first)."""
    previous = ""
    for index, arg in enumerate(args, start=1):
        if previous.startswith("-") and is_secret_key(previous.lstrip("-")) \
                and not is_placeholder(arg):
            yield PlaintextSecret(f"args[{index}]", "credential_pair")
        elif kinds := _text_kinds(arg):
            yield PlaintextSecret(f"args[{index}]", kinds[0])
        previous = arg


def _text_kinds(text: str) -> list[str]:
    return [f.kind for f in _GUARD.scan(text).findings]


def _redacted(text: str) -> str:
    value = _GUARD.scan(text).value
    return value if isinstance(value, str) else text


def _auth(raw: dict[str, Any], spec: ServerSpec) -> str:
    if spec.url is None:
        return "local process"
    if raw.get("bearer_token_env_var"):
        return f"bearer token from ${raw['bearer_token_env_var']}"
    for name in spec.headers:
        if name.lower() == "authorization":
            scheme = spec.headers[name].split(" ", 1)[0].lower()
            return f"{scheme} token in header {name}" if scheme in {"bearer", "basic"} \
                else f"header {name}"
    named = [n for n in spec.headers if is_secret_key(n)]
    if named:
        return f"key in header {named[0]}"
    if raw.get("env_http_headers"):
        return "headers from environment variables"
    if raw.get("oauth") or raw.get("authProviderType"):
        return f"oauth ({raw.get('authProviderType') or 'configured'})"
    return "none configured (OAuth, if the server asks)"


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}

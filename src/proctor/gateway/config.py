"""The gateway's configuration file (YAML): its limits and its upstream MCP servers.

::

    gateway:
      public_url: https://mcp.acme.example     # what agents address (HTTP mode); needed
                                               # to listen on anything but loopback
      listen: 127.0.0.1:8765
      max_message_bytes: 1048576
      max_answer_bytes: 4194304                # an upstream's answer (a line, body, event)
      call_timeout_seconds: 30
      connect_timeout_seconds: 20
      approval_timeout_seconds: 120
      relay_timeout_seconds: 60                # an upstream's question to the agent
      relay_send_timeout_seconds: 10           # a log, progress or update to the agent
      authorization_servers: [https://proctor.acme.example]   # where grants come from
      trusted_proxies: [10.0.0.2]              # read X-Forwarded-For/-Proto from these only
    upstreams:
      git:                                     # the server name in tool ids: git/git_log
        command: [python, -m, mcp_server_git, --repository, /srv/repos/app]
        env: {GITHUB_TOKEN: "${secret:github-token}"}
        labels: {sensitivity: internal, destination: localhost}
        tools:
          git_commit: {sensitivity: confidential}
      crm:
        url: https://crm.vendor.example/mcp
        headers: {Authorization: "Bearer ${secret:crm-token}"}
        pin: strict                            # strict (default) | warn | off
    manifests:                                 # what each agent behind it runs (HTTP mode)
      support: manifests/support.yaml          # an agent name, or its SPIFFE ID

``pin`` says what a tool whose definition changed since a human reviewed it (or a new
tool on a known server) gets: hidden and denied (``strict``), reported and audited
but let through (``warn``), or nothing, the server not being pinned (``off``); see
:mod:`proctor.oversight.pinning`.

``${secret:NAME}`` in an ``env`` or ``headers`` value is filled in from proctor's
secret store when the upstream is connected, under a lease of the session's grant.

``manifests`` names, per agent, a manifest file (relative to this file) that the
gateway presents for the agent when a session of its grant opens, as ``proctor mcp
wrap --manifest`` does: the file's ``system_prompt_file`` and ``dependency_lock_file``
are measured (their SHA-256) when the configuration is read.

Without ``public_url`` agents address ``http://<listen>``; that is only allowed on
loopback (:meth:`GatewayConfig.check_listen`), so a gateway others can reach
checks proofs against the address its operator chose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proctor.documents import read_yaml
from proctor.errors import ConfigError, ProctorError
from proctor.identity import Manifest, load_manifest
from proctor.listening import require_public_url, split_listen, trusted_proxies
from proctor.policy.catalog import Sensitivity

__all__ = ["GatewayConfig", "ToolLabels", "UpstreamConfig", "load_gateway_config",
           "parse_gateway_config", "secret_names"]

_MAX_CONFIG_BYTES = 256 * 1024
# no `__` and no trailing `_`: on the shared endpoint `<server>__<name>` is split at its
# first `__`, which `crm_`'s `x` (`crm___x`) would put inside `crm`'s `_x`
_SERVER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]|_(?!_|\Z)){0,63}\Z")
_SECRET_REF = re.compile(r"\$\{secret:([A-Za-z0-9_.-]{1,128})\}")
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# Headers proctor sets itself or that would carry the agent's credentials onwards.
_RESERVED_HEADERS = {"dpop", "mcp-session-id", "mcp-protocol-version", "host", "content-length"}


@dataclass(frozen=True, slots=True)
class ToolLabels:
    """Labels for a tool; ``None`` fields fall back to the next source."""

    sensitivity: Sensitivity | None = None
    destination: str | None = None
    connector: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream MCP server: a command (stdio) or a URL (streamable HTTP)."""

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    labels: ToolLabels = ToolLabels()
    tools: Mapping[str, ToolLabels] = field(default_factory=dict)
    pin: str = "strict"  # strict | warn | off



@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Limits and upstreams; every limit has a safe default."""

    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    public_url: str = ""  # not set: http://<listen>, on loopback only
    listen: str = "127.0.0.1:8765"
    max_message_bytes: int = 1 << 20
    max_answer_bytes: int = 4 << 20  # an upstream's answer: a stdio line, HTTP body or event
    call_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 20.0
    approval_timeout_seconds: float = 120.0
    relay_timeout_seconds: float = 60.0  # a relayed sampling or elicitation request
    relay_send_timeout_seconds: float = 10.0  # a log, progress or update the agent must take
    revocation_poll_seconds: float = 1.0
    session_idle_seconds: float = 300.0
    authorization_servers: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For/-Proto are read
    manifests: Mapping[str, Manifest] = field(default_factory=dict)  # agent name or id

    def manifest_for(self, agent_id: str) -> Manifest | None:
        """The manifest configured for ``agent_id`` (a SPIFFE ID), by id or by name."""
        return self.manifests.get(agent_id) or self.manifests.get(agent_id.rsplit("/", 1)[-1])

    @property
    def address(self) -> str:
        """The URL agents address, without a trailing ``/``: what their proofs' ``htu``
        and the protected resource metadata name."""
        return (self.public_url or f"http://{self.listen}").rstrip("/")

    def check_listen(self) -> None:
        """Raise :class:`ConfigError` if the gateway would listen on anything but
        loopback without ``public_url``."""
        host, _ = split_listen(self.listen)
        require_public_url(host, self.public_url, what="the gateway",
                           where="the gateway config (`gateway.public_url`)")

    def upstream(self, name: str) -> UpstreamConfig:
        found = self.upstreams.get(name)
        if found is None:
            raise ConfigError(f"upstream `{name}` is not configured")
        return found


def secret_names(value: str) -> list[str]:
    """The secret names ``${secret:NAME}`` referenced in ``value``."""
    return _SECRET_REF.findall(value)


def fill_secrets(value: str, secrets: Mapping[str, str]) -> str:
    """``value`` with each ``${secret:NAME}`` replaced by ``secrets[NAME]``."""
    return _SECRET_REF.sub(lambda m: secrets[m.group(1)], value)


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and check a gateway configuration file."""
    data = read_yaml(path, what="gateway config", error=ConfigError,
                     max_bytes=_MAX_CONFIG_BYTES)
    return parse_gateway_config(data, source=str(path), base=path.parent)


def parse_gateway_config(data: Any, *, source: str = "<config>",
                         base: Path | None = None) -> GatewayConfig:
    """Check a parsed configuration document; raises :class:`ConfigError` naming the key.
    Manifest files are read relative to ``base`` (the current directory if None)."""
    data = data or {}
    _keys(data, {"gateway", "upstreams", "manifests"}, source)
    settings = data.get("gateway") or {}
    _keys(settings, {"public_url", "listen", "max_message_bytes", "max_answer_bytes",
                     "call_timeout_seconds",
                     "connect_timeout_seconds", "approval_timeout_seconds",
                     "relay_timeout_seconds", "relay_send_timeout_seconds",
                     "revocation_poll_seconds", "session_idle_seconds", "authorization_servers",
                     "trusted_proxies"},
          f"{source}: gateway")
    upstreams_data = data.get("upstreams") or {}
    if not isinstance(upstreams_data, dict):
        raise ConfigError(f"{source}: `upstreams` must be a mapping of name to server")
    upstreams = {str(name): _upstream(str(name), spec, source)
                 for name, spec in upstreams_data.items()}
    limits: dict[str, Any] = {}
    for key in ("max_message_bytes", "max_answer_bytes"):
        if key in settings:
            limits[key] = _positive(settings[key], key, source, integer=True)
    for key in ("call_timeout_seconds", "connect_timeout_seconds", "approval_timeout_seconds",
                "relay_timeout_seconds", "relay_send_timeout_seconds", "revocation_poll_seconds",
                "session_idle_seconds"):
        if key in settings:
            limits[key] = _positive(settings[key], key, source)
    for key in ("public_url", "listen"):
        if key in settings:
            limits[key] = _text(settings[key], key, source)
    if not str(limits.get("public_url", "http://")).startswith(("http://", "https://")):
        raise ConfigError(f"{source}: `public_url` must be an http(s) URL")
    servers = settings.get("authorization_servers") or []
    if not isinstance(servers, list) or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in servers):
        raise ConfigError(f"{source}: `authorization_servers` must be a list of http(s) URLs")
    limits["authorization_servers"] = tuple(servers)
    limits["trusted_proxies"] = trusted_proxies(settings.get("trusted_proxies"),
                                                where=f"{source}: gateway")
    return GatewayConfig(upstreams=upstreams,
                         manifests=_manifests(data.get("manifests"), source, base), **limits)


def _manifests(spec: Any, source: str, base: Path | None) -> dict[str, Manifest]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: `manifests` must be a mapping of agent to manifest file")
    found = {}
    for agent, path in spec.items():
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{source}: manifests: `{agent}` must name a manifest file")
        try:
            found[str(agent)] = load_manifest((base or Path()) / path)
        except ProctorError as exc:
            raise ConfigError(f"{source}: manifests: `{agent}`: {exc.message}") from exc
    return found


def _upstream(name: str, spec: Any, source: str) -> UpstreamConfig:
    where = f"{source}: upstream `{name}`"
    if not _SERVER_RE.match(name):
        raise ConfigError(f"{where}: a name is lowercase letters, digits, `.`, `-` "
                          "and single `_`, not ending in `_`")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping")
    _keys(spec, {"command", "url", "env", "headers", "cwd", "labels", "tools", "pin"}, where)
    pin = spec.get("pin", "strict")
    if pin not in ("strict", "warn", "off"):
        raise ConfigError(f"{where}: `pin` is `strict`, `warn` or `off`")
    command = spec.get("command") or []
    if isinstance(command, str):
        command = command.split()
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise ConfigError(f"{where}: `command` must be a list of strings")
    url = spec.get("url")
    if url is not None and (command or not str(url).startswith(("http://", "https://"))):
        raise ConfigError(f"{where}: give either `command` or an http(s) `url`, not both")
    env = _string_map(spec.get("env"), "env", where, _ENV_RE)
    headers = _string_map(spec.get("headers"), "headers", where, _HEADER_RE)
    reserved = sorted(h for h in headers if h.lower() in _RESERVED_HEADERS)
    if reserved:
        raise ConfigError(f"{where}: header `{reserved[0]}` is set by the gateway")
    if headers and url is None:
        raise ConfigError(f"{where}: `headers` apply to an HTTP upstream (`url`)")
    tools_spec = spec.get("tools") or {}
    if not isinstance(tools_spec, dict):
        raise ConfigError(f"{where}: `tools` must map tool names to labels")
    return UpstreamConfig(
        name=name, command=tuple(command), url=str(url) if url is not None else None,
        env=env, headers=headers, cwd=_text(spec["cwd"], "cwd", where) if "cwd" in spec else None,
        labels=_labels(spec.get("labels"), f"{where}: labels"),
        tools={str(t): _labels(v, f"{where}: tool `{t}`") for t, v in tools_spec.items()},
        pin=pin,
    )


def _labels(spec: Any, where: str) -> ToolLabels:
    if spec is None:
        return ToolLabels()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping")
    _keys(spec, {"sensitivity", "destination", "connector"}, where)
    sensitivity = spec.get("sensitivity")
    return ToolLabels(
        Sensitivity.parse(str(sensitivity)) if sensitivity is not None else None,
        str(spec["destination"]) if spec.get("destination") is not None else None,
        str(spec["connector"]) if spec.get("connector") is not None else None,
    )


def _string_map(spec: Any, key: str, where: str, name_re: re.Pattern[str]) -> dict[str, str]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: `{key}` must be a mapping")
    out: dict[str, str] = {}
    for name, value in spec.items():
        if not name_re.match(str(name)):
            raise ConfigError(f"{where}: `{key}` name `{name}` is not valid")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: `{key}.{name}` must be a string")
        out[str(name)] = str(value)
    return out


def _keys(spec: Any, allowed: set[str], where: str) -> None:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(set(map(str, spec)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key `{unknown[0]}`")


def _positive(value: Any, key: str, where: str, *, integer: bool = False) -> Any:
    # not NaN (`.nan` in YAML), which every comparison passes, nor an infinity
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0 or (integer and not isinstance(value, int)):
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{where}: `{key}` must be {kind}")
    return value


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: `{key}` must be a non-empty string")
    return value

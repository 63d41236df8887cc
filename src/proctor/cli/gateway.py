"""``proctor mcp wrap`` (stdio) and ``proctor gateway`` (streamable HTTP)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proctor.cli.output import err_console, fail
from proctor.config import load_settings
from proctor.errors import ConfigError, ProctorError
from proctor.listening import split_listen

if TYPE_CHECKING:
    from proctor.gateway import GatewayConfig
    from proctor.identity import Manifest
    from proctor.runtime import Runtime

__all__ = ["mcp_app", "server_name_for", "upstream_env"]

mcp_app = typer.Typer(no_args_is_help=True, help="Put proctor in front of MCP servers.")

_PACKAGE_NAME = re.compile(r"mcp[-_]server[-_]([a-z0-9][a-z0-9_.-]{0,40})", re.IGNORECASE)
_EXIT_SESSION_CLOSED = 2
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


def server_name_for(command: list[str]) -> str:
    """A server name from an upstream command: ``mcp-server-git`` and
    ``python -m mcp_server_git`` give ``git``; otherwise the program's name."""
    for part in command:
        match = _PACKAGE_NAME.search(Path(part).name)
        if match:
            return match.group(1).lower().replace("_", "-")
    name = Path(command[0]).stem.lower() if command else ""
    return re.sub(r"[^a-z0-9.-]+", "-", name).strip("-.") or "mcp"


@mcp_app.command("wrap", context_settings={"ignore_unknown_options": True})
def wrap(
    agent: Annotated[str, typer.Option("--agent", help="The agent: a name or SPIFFE ID.")],
    command: Annotated[list[str] | None, typer.Argument(
        help="The upstream server's command, after `--`.")] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="Gateway config (YAML): labels, env, secrets per upstream.")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", help="The server name in tool ids (default: from the command).")] = None,
    grant_file: Annotated[Path | None, typer.Option(
        "--grant-file", help="The grant token (default: $PROCTOR_GRANT).")] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="The agent's private key, PEM or JWK "
                           "(default: $PROCTOR_AGENT_KEY_FILE).")] = None,
    env_vars: Annotated[list[str] | None, typer.Option(
        "--env", metavar="NAME[=VALUE]",
        help="Give the server this variable: VALUE, or the wrapper's own $NAME; "
             "`${secret:S}` in it is filled in from the secret store. Repeatable.")] = None,
    manifest_file: Annotated[Path | None, typer.Option(
        "--manifest", help="The manifest the agent runs (YAML/JSON; `system_prompt_file` "
        "and `dependency_lock_file` are measured): presented at session open, so a "
        "change makes the agent drifted without it reporting anything.")] = None,
) -> None:
    """Serve one agent over stdio in front of one MCP server; every call is decided.

    Use it in an MCP client's configuration in place of the server's command:
    ``proctor mcp wrap --agent coder -- python -m mcp_server_git --repository R``.
    """
    # The config, grant and key are checked before the gateway (and the MCP SDK under
    # it, about 1 s of CPU) is imported: a wrapper that cannot start says why at once.
    from proctor.gateway.config import GatewayConfig, UpstreamConfig, load_gateway_config
    from proctor.gateway.launch import LaunchCredentials, load_agent_key, load_grant
    from proctor.identity import agent_id_for, load_manifest

    try:
        settings = load_settings()
        config = load_gateway_config(config_file) if config_file else GatewayConfig()
        argv = tuple(command or ())
        name = server or (server_name_for(list(argv)) if argv else _only_upstream(config))
        upstream = config.upstreams.get(name) or UpstreamConfig(name=name)
        if argv:
            upstream = replace(upstream, command=argv, url=None)
        if env_vars:
            upstream = replace(upstream, env={**upstream.env, **upstream_env(env_vars)})
        if not upstream.command and upstream.url is None:
            raise ConfigError(f"no command for upstream `{name}`: give it after `--`")
        config = replace(config, upstreams={**config.upstreams, name: upstream})
        token = load_grant(grant_file, os.environ.get("PROCTOR_GRANT"))
        key_path = key_file or _env_path("PROCTOR_AGENT_KEY_FILE")
        if key_path is None:
            raise ConfigError("no agent key: pass --key-file or set PROCTOR_AGENT_KEY_FILE")
        key = load_agent_key(key_path)
        agent_id = agent_id_for(agent, settings.trust_domain).id
        presented = load_manifest(manifest_file) if manifest_file is not None else None
    except ProctorError as exc:
        fail(exc.message, code=exc.code)
    # imported before the runtime starts any thread of its own (see proctor.gateway)
    import anyio

    from proctor.gateway.core import Gateway
    from proctor.gateway.stdio import claim_stdio
    from proctor.gateway.wrap import run_wrapper
    from proctor.runtime import open_runtime

    try:
        runtime = open_runtime(settings)
        runtime.deliver_webhooks()
    except ProctorError as exc:
        fail(exc.message, code=exc.code)
    try:
        gateway = Gateway.on(runtime, config, errlog=sys.stderr)
        creds = LaunchCredentials(token, key)
        reader, writer = claim_stdio()
        outcome = anyio.run(lambda: run_wrapper(
            gateway, server=name, agent_id=agent_id, creds=creds, reader=reader,
            writer=writer, store=runtime.store,
            on_open=None if presented is None else
            lambda: present_manifest(runtime, agent_id, presented)))
    except ProctorError as exc:
        fail(exc.message, code=exc.code)
    finally:
        runtime.close()
    if outcome.closed_by is not None:
        err_console.print(f"session {outcome.session_id} closed: {outcome.closed_by}",
                          markup=False)
        raise typer.Exit(_EXIT_SESSION_CLOSED)


def present_manifest(runtime: Runtime, agent_id: str, manifest: Manifest) -> None:
    """Present the manifest the wrapper is configured with; a change is audited as the
    wrapper's (the agent reported nothing) and its rules apply at the next decision."""
    from proctor.gateway.manifests import present_manifest as present

    present(runtime, agent_id, manifest, by="proctor-wrapper")


def upstream_env(specs: list[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """``--env`` options as the upstream's environment: ``NAME=VALUE``, or ``NAME`` for
    the value the wrapper itself was given (an MCP client passes its entry's ``env`` to
    the wrapper, not to the server behind it)."""
    own = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for spec in specs:
        name, has_value, value = spec.partition("=")
        if not _ENV_NAME.match(name):
            raise ConfigError(f"`--env {name}`: a variable name is letters, digits and `_`")
        if not has_value:
            if name not in own:
                raise ConfigError(f"`--env {name}`: the wrapper was not given ${name}")
            value = own[name]
        out[name] = value
    return out


def _only_upstream(config: GatewayConfig) -> str:
    if len(config.upstreams) != 1:
        raise ConfigError("give the upstream's command after `--`, or --server NAME")
    return next(iter(config.upstreams))


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value) if value else None


def gateway(
    config_file: Annotated[Path, typer.Option("--config", help="Gateway config (YAML).")],
    listen: Annotated[str | None, typer.Option(
        "--listen", help="HOST:PORT to serve on (default: the config's `listen`).")] = None,
) -> None:
    """Serve the configured upstreams over streamable HTTP; every call is decided.

    Agents reach /mcp/<server> (or /mcp, tools prefixed <server>__) with their grant
    as a bearer token and a DPoP proof per call. Listening on anything but loopback
    needs `public_url` in the config.
    """
    import uvicorn

    from proctor.gateway import Gateway, load_gateway_config
    from proctor.gateway.http import build_http_app, serve_http
    from proctor.runtime import open_runtime

    try:
        settings = load_settings()
        config = load_gateway_config(config_file)
        if listen:
            config = replace(config, listen=listen)
        host, port = split_listen(config.listen)
        config.check_listen()
        runtime = open_runtime(settings)
        runtime.deliver_webhooks()
    except ProctorError as exc:
        fail(exc.message, code=exc.code)
    try:
        app = build_http_app(Gateway.on(runtime, config, errlog=sys.stderr),
                             store=runtime.store)
        err_console.print(f"proctor gateway on http://{host}:{port}/mcp "
                          f"({', '.join(config.upstreams) or 'no upstreams'}); "
                          f"agents address {config.address}", markup=False)
        # proctor serve's protocol: httptools (C) with h11's limit on a request's head,
        # the time limits on a head and a body and the framing refusals; uvicorn's
        # h11 protocol (pure Python) took ~0.2 ms of CPU a call both ways
        from proctor.listening import forwarded_options
        from proctor.server.asgi import NoDelayHttpToolsProtocol
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                               access_log=False, http=NoDelayHttpToolsProtocol,
                                               ws="none",
                                               **forwarded_options(config.trusted_proxies)))
        if not serve_http(server):
            raise typer.Exit(code=3)  # as uvicorn.run: the server could not start
    finally:
        runtime.close()

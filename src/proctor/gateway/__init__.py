"""The MCP gateway: proctor's enforcement point in front of MCP servers.

An agent talks to the gateway as if it were the MCP server. Every
``tools/call``, ``resources/read``, ``prompts/get``, ``completion/complete`` and
``resources/(un)subscribe`` passes the grant check,
the agent's state, Cedar (with the arguments and the tool's labels), approvals
and the audit log (:class:`proctor.enforcement.Enforcer`) before it reaches
the upstream; upstream credentials are injected from the secret store under a
lease of the session's grant; every result passes the output guard; and
revoking the grant closes the session.

Transports: stdio (``proctor mcp wrap``, :func:`run_wrapper`) and streamable
HTTP (``proctor gateway``, :func:`proctor.gateway.http.build_http_app`, imported on its own so
that the stdio wrapper loads no web server). See ``docs/gateway.md``.

The names below are loaded when first used: ``proctor mcp wrap`` checks its config,
grant and key (``proctor.gateway.config``, ``proctor.gateway.launch``) before it loads the
MCP SDK (about 1 s of CPU), so a wrapper that cannot start says why at once.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proctor.gateway.client import GrantAuth
    from proctor.gateway.config import (
        GatewayConfig,
        ToolLabels,
        UpstreamConfig,
        load_gateway_config,
        parse_gateway_config,
    )
    from proctor.gateway.core import Gateway
    from proctor.gateway.launch import LaunchCredentials, load_agent_key, load_grant
    from proctor.gateway.server import build_server
    from proctor.gateway.session import GatewaySession
    from proctor.gateway.stdio import StdioTransport
    from proctor.gateway.tools import ExposedTool, ToolRegistry
    from proctor.gateway.upstream import UpstreamConnection
    from proctor.gateway.views import View
    from proctor.gateway.visibility import Visibility
    from proctor.gateway.watch import RevocationWatch
    from proctor.gateway.wrap import WrapOutcome, run_wrapper

__all__ = [
    "ExposedTool",
    "Gateway",
    "GatewayConfig",
    "GatewaySession",
    "GrantAuth",
    "LaunchCredentials",
    "RevocationWatch",
    "StdioTransport",
    "ToolLabels",
    "ToolRegistry",
    "UpstreamConfig",
    "UpstreamConnection",
    "View",
    "Visibility",
    "WrapOutcome",
    "build_server",
    "load_agent_key",
    "load_gateway_config",
    "load_grant",
    "parse_gateway_config",
    "run_wrapper",
]

# Where each public name lives (the module is imported on first use).
_HOMES = {
    "ExposedTool": "tools",
    "Gateway": "core",
    "GatewayConfig": "config",
    "GatewaySession": "session",
    "GrantAuth": "client",
    "LaunchCredentials": "launch",
    "RevocationWatch": "watch",
    "StdioTransport": "stdio",
    "ToolLabels": "config",
    "ToolRegistry": "tools",
    "UpstreamConfig": "config",
    "UpstreamConnection": "upstream",
    "View": "views",
    "Visibility": "visibility",
    "WrapOutcome": "wrap",
    "build_server": "server",
    "load_agent_key": "launch",
    "load_gateway_config": "config",
    "load_grant": "launch",
    "parse_gateway_config": "config",
    "run_wrapper": "wrap",
}
# One thread at a time loads a name: two threads importing modules that import each
# other can deadlock in the import system (see ``proctor.identity.load_spiffe``).
_LOADING = threading.RLock()


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _LOADING:
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""The control-plane HTTP API (``proctor serve``): authenticated humans and agents,
authorized by Cedar, errors as RFC 9457 problems. See ``docs/api.md``.

>>> app = create_app(open_runtime(load_settings()))   # doctest: +SKIP

Each name is imported when first asked for: ``proctor init`` and ``proctor token``
need the API tokens, not the web application (FastAPI and every route: about 0.7 s of
CPU at each start).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from proctor.errors import ApiError

if TYPE_CHECKING:
    from proctor.server.app import create_app
    from proctor.server.config import ServerConfig, load_server_config
    from proctor.server.control import ControlPlane
    from proctor.server.principals import HUMAN_ROLES, ROLES, Principal, PrincipalKind
    from proctor.server.tokens import ApiToken, ApiTokens, MintedToken

__all__ = [
    "HUMAN_ROLES",
    "ROLES",
    "ApiError",
    "ApiToken",
    "ApiTokens",
    "ControlPlane",
    "MintedToken",
    "Principal",
    "PrincipalKind",
    "ServerConfig",
    "create_app",
    "load_server_config",
]

_MODULE_OF = {
    "create_app": "app",
    "ServerConfig": "config",
    "load_server_config": "config",
    "ControlPlane": "control",
    "HUMAN_ROLES": "principals",
    "ROLES": "principals",
    "Principal": "principals",
    "PrincipalKind": "principals",
    "ApiToken": "tokens",
    "ApiTokens": "tokens",
    "MintedToken": "tokens",
}


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'proctor.server' has no attribute {name!r}")
    value = getattr(import_module(f"proctor.server.{module}"), name)
    globals()[name] = value
    return value

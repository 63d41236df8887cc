"""The control-plane HTTP API (``proctor serve``): authenticated humans and agents,
authorized by Cedar, errors as RFC 9457 problems. See ``docs/api.md``.

>>> app = create_app(open_runtime(load_settings()))   # doctest: +SKIP
"""

from proctor.errors import ApiError
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

"""proctor: runtime authorization and oversight for AI agents.

Agents never hold standing access: each tool call is decided at that moment by
Cedar policies with full context. See ``docs/`` for the concepts.

This file ships in the ``proctor-client`` distribution (the agent-side SDK), which has
none of the server's modules: the server's settings are imported when first asked for.
"""

from typing import TYPE_CHECKING

from proctor.clock import Clock, FrozenClock, SystemClock
from proctor.errors import ProctorError

if TYPE_CHECKING:
    from proctor.config import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "FrozenClock",
    "ProctorError",
    "Settings",
    "SystemClock",
    "__version__",
    "load_settings",
]


def __getattr__(name: str) -> object:
    if name in {"Settings", "load_settings"}:
        from proctor import config

        return getattr(config, name)
    raise AttributeError(f"module 'proctor' has no attribute {name!r}")

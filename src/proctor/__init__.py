"""proctor: runtime authorization and oversight for AI agents.

Agents never hold standing access: each tool call is decided at that moment by
Cedar policies with full context. See ``docs/`` for the concepts.
"""

from proctor.clock import Clock, FrozenClock, SystemClock
from proctor.config import Settings, load_settings
from proctor.errors import ProctorError

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

"""What an agent addresses: the upstreams behind one MCP endpoint, and how their names
appear there, plus the credentials it presented for one request.

A stdio wrapper and an HTTP path ``/mcp/<server>`` expose one upstream under its
own tool names. The HTTP endpoint ``/mcp`` exposes every upstream, each tool
prefixed with its server: ``git__git_log`` (``__`` because MCP clients and model
APIs accept only ``[A-Za-z0-9_-]`` in tool names, and proctor's server names
never contain ``__``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proctor.enforcement import CallVerdict, Enforcer, ToolCall
    from proctor.grants import GrantAuthority, GrantUse

__all__ = ["PREFIX_SEPARATOR", "Credentials", "View"]

PREFIX_SEPARATOR = "__"


@dataclass(frozen=True, slots=True)
class View:
    """The upstreams one endpoint serves."""

    servers: tuple[str, ...]
    prefixed: bool = False

    def exposed(self, server: str, name: str) -> str:
        return f"{server}{PREFIX_SEPARATOR}{name}" if self.prefixed else name

    def resolve(self, exposed: str) -> tuple[str, str] | None:
        """The (server, upstream name) an exposed name stands for, or None."""
        if not self.prefixed:
            return (self.servers[0], exposed) if self.servers else None
        server, sep, name = exposed.partition(PREFIX_SEPARATOR)
        if not sep or not name or server not in self.servers:
            return None
        return server, name


class Credentials(Protocol):
    """What the agent presented for one request: its grant and a proof of possession
    (HTTP), or the grant the wrapper holds with its key (stdio), and how a call made
    with them is decided."""

    @property
    def source_ip(self) -> str | None: ...

    def target_for(self, server: str, name: str) -> str:
        """The address the call's proof is made for (its ``htu``)."""
        ...

    def decide(self, enforcer: Enforcer, call: ToolCall) -> Awaitable[CallVerdict]:
        """``call`` decided with these credentials, off the event loop."""
        ...

    def refusal_use(self, grants: GrantAuthority) -> GrantUse | None:
        """For a request refused before its decision: the use its proof makes, checked
        now (raises the check's error) and written with the refusal's audit event, its
        nonce claimed; None when nothing is left to check (the door checked the proof;
        the wrapper holds the key). Reads the store: in a worker thread."""
        ...

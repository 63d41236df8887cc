"""What the gateway needs of the secret store and the output guard, as protocols.

:class:`proctor.secrets.SecretStore` and :class:`proctor.oversight.OutputGuard`
satisfy them; the gateway depends on these shapes only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from proctor.grants import LeaseTree

__all__ = ["Guard", "GuardOutcome", "LeasedSecret", "SecretSource"]


class LeasedSecret(Protocol):
    @property
    def lease_id(self) -> str: ...

    @property
    def value(self) -> str: ...


class SecretSource(Protocol):
    def lease(self, name: str, *, leases: LeaseTree, parent_id: str, task_id: str,
              agent_id: str, expires_at: datetime | None, upstream: str = ""
              ) -> LeasedSecret: ...

    def release(self, leased: Mapping[str, str], reason: str, *, agent_id: str,
                task_id: str, with_nodes: Sequence[str] = ()) -> list[str]: ...


class GuardOutcome(Protocol):
    @property
    def value(self) -> Any: ...

    @property
    def findings(self) -> Sequence[Any]: ...

    @property
    def grant_tokens(self) -> Sequence[str]: ...


class Guard(Protocol):
    def scan(self, value: Any) -> GuardOutcome: ...

    def add_known_secret(self, value: str) -> None: ...

    def redact_media(self, encoded: str) -> tuple[str, int]: ...

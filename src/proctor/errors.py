"""One error vocabulary for proctor, each with a stable machine-readable code.

Errors of foreign libraries (SQLAlchemy, cedarpy, YAML) are translated where
they cross into proctor (``raise ProctorError(...) from exc``), so callers see
only these::

    ProctorError                       proctor_error
    ├── ConfigError                    config_invalid
    ├── StoreError                     store_unavailable
    │   └── MigrationError             store_migration_failed
    ├── NotFoundError                  not_found
    ├── RequestError                   request_invalid
    └── PolicyError                    policy_error
        ├── PolicyValidationError      policy_invalid
        └── PolicyTestError            policy_test_invalid

Messages follow Cedar's style: lowercase, no trailing period, user input in
backticks. An authorization *answer* is never an exception: ``decide`` returns a
deny that carries the error instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "Diagnostic",
    "MigrationError",
    "NotFoundError",
    "PolicyError",
    "PolicyTestError",
    "PolicyValidationError",
    "ProctorError",
    "RequestError",
    "StoreError",
]


class ProctorError(Exception):
    """Base of every error proctor raises on purpose."""

    code: str = "proctor_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ProctorError):
    code = "config_invalid"


class StoreError(ProctorError):
    code = "store_unavailable"


class MigrationError(StoreError):
    code = "store_migration_failed"


class NotFoundError(ProctorError):
    code = "not_found"


class RequestError(ProctorError):
    code = "request_invalid"


class PolicyError(ProctorError):
    code = "policy_error"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in one policy source, located as ``file:line:column``."""

    file: str
    line: int
    column: int
    message: str
    policy_id: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyValidationError(PolicyError):
    """A policy set that failed to parse or validate; it was not activated."""

    code = "policy_invalid"

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = str(self.diagnostics[0]) if self.diagnostics else "no diagnostics"
        more = len(self.diagnostics) - 1
        suffix = f" (and {more} more)" if more > 0 else ""
        super().__init__(f"invalid policy set: {first}{suffix}")


class PolicyTestError(PolicyError):
    """A policy test file that cannot be read as test cases."""

    code = "policy_test_invalid"

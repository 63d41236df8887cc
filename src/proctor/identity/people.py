"""Checks on the humans and groups an agent record names.

Owners, reviewers and whoever changes a trust state are humans (or, for an
automatic suspension, a ``system:`` actor), never agents: an agent cannot
vouch for itself or for another agent.
"""

from __future__ import annotations

from collections.abc import Iterable

from proctor.errors import RequestError, ReviewerError

__all__ = ["check_groups", "check_human"]

_MAX_ID = 256
_MAX_GROUPS = 64


def _printable(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value == value.strip() and all(
        ord(c) >= 0x20 and c != "\x7f" for c in value)


def check_human(value: str, role: str) -> str:
    """``value`` if it can name a human ``role`` (owner, reviewer, actor); raise if not."""
    error = RequestError if role == "owner" else ReviewerError
    if not isinstance(value, str) or not _printable(value, _MAX_ID):
        raise error(f"the {role} must be a human id of at most {_MAX_ID} printable characters")
    if value.lower().startswith("spiffe://"):
        raise error(f"the {role} `{value[:80]}` is an agent; only humans may be {role}s")
    return value


def check_groups(groups: Iterable[str]) -> list[str]:
    """The groups, sorted and without duplicates; raise if one is not a valid group id."""
    out = sorted(set(groups))
    if len(out) > _MAX_GROUPS:
        raise RequestError(f"an agent is in at most {_MAX_GROUPS} groups")
    for group in out:
        if not isinstance(group, str) or not _printable(group, 128):
            raise RequestError("a group id is 1 to 128 printable characters")
    return out

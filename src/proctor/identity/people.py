"""Checks on the humans and groups an agent record names.

Owners, reviewers, approvers and whoever changes a trust state are humans (or,
for an automatic suspension, a ``system:`` actor), never agents: an agent cannot
vouch for itself or for another agent. A human id is kept in its canonical form
(:mod:`proctor.human_ids`), so letter case or a Unicode variant never makes one
human two.
"""

from __future__ import annotations

from collections.abc import Iterable

from proctor.errors import IdentityError, ProctorError, RequestError
from proctor.human_ids import canonical_human_id, human_id_problem

__all__ = ["SYSTEM_PREFIX", "check_groups", "check_human"]

SYSTEM_PREFIX = "system:"  # an actor that is proctor itself (an automatic suspension)

_DECIDING = frozenset({"reviewer", "actor", "approver", "operator"})
_MAX_GROUPS = 64


def _printable(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value == value.strip() and all(
        ord(c) >= 0x20 and c != "\x7f" for c in value)


def check_human(value: str, role: str) -> str:
    """The canonical form of ``value`` if it can name a human ``role``; raise if not.

    ``role`` is the word the error uses: a ``reviewer``, ``actor``, ``approver`` or
    ``operator`` gets ``reviewer_invalid``, any other (``owner``, ``human``)
    ``request_invalid``.
    """
    def error(message: str) -> ProctorError:
        return (IdentityError("reviewer_invalid", message) if role in _DECIDING
                else RequestError(message))

    problem = human_id_problem(value)
    if problem is not None:
        raise error(f"the {role} {problem}")
    canonical = canonical_human_id(value)
    if canonical.startswith("spiffe://"):
        raise error(f"the {role} `{canonical[:80]}` names an agent; only humans are accepted")
    if canonical.startswith(SYSTEM_PREFIX) and role != "actor":
        # only an automatic state change is the system's: a human named so would have
        # their actions recorded as the system's
        raise error(f"the {role} `{canonical[:80]}` names the system; only humans are "
                    "accepted")
    return canonical


def check_groups(groups: Iterable[str]) -> list[str]:
    """The groups, sorted and without duplicates; raise if one is not a valid group id."""
    out = sorted(set(groups))
    if len(out) > _MAX_GROUPS:
        raise RequestError(f"an agent is in at most {_MAX_GROUPS} groups")
    for group in out:
        if not isinstance(group, str) or not _printable(group, 128):
            raise RequestError("a group id is 1 to 128 printable characters")
    return out

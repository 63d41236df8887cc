"""Building the context of a tool call, as the schema declares it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from proctor.human_ids import canonical_human_id
from proctor.policy.catalog import Sensitivity

__all__ = ["call_context", "issue_context"]


def call_context(
    *,
    now: datetime,
    args: Mapping[str, Any] | None = None,
    task: str = "",
    purpose: str = "",
    on_behalf_of: str = "",
    delegation_chain: Sequence[str] = (),
    source_ip: str | None = None,
    approved: bool = False,
    sensitivity_seen: Sensitivity = Sensitivity.PUBLIC,
    grant_constrained: Iterable[str] = (),
) -> dict[str, Any]:
    """The context of one tool call.

    ``delegation_chain`` lists the agents the grant passed through, the
    original holder first; its length is the delegation depth. ``args`` are
    the raw arguments: the decision point checks them against the tool's type.
    ``on_behalf_of`` is given to policies in canonical form (:mod:`proctor.human_ids`).
    ``grant_constrained`` names the arguments whose values the call's grant
    constrains (``context.grant.constrained``): values its issuer chose, before
    the agent read anything.
    """
    context: dict[str, Any] = {
        "task": task,
        "purpose": purpose,
        "on_behalf_of": canonical_human_id(on_behalf_of),
        "delegation": {"depth": len(delegation_chain), "chain": list(delegation_chain)},
        "time": {
            "epoch": int(now.timestamp()),
            "hour": now.hour,
            "weekday": now.weekday(),
        },
        "approved": approved,
        "sensitivity_seen": int(sensitivity_seen),
        "grant": {"constrained": sorted(set(grant_constrained))},
        "args": dict(args or {}),
    }
    if source_ip:
        context["source_ip"] = {"__extn": {"fn": "ip", "arg": source_ip}}
    return context


def issue_context(
    *,
    now: datetime,
    task: str,
    purpose: str,
    on_behalf_of: str,
    ttl_seconds: int,
    max_uses: int | None,
    delegation_chain: Sequence[str] = (),
    approved: bool = False,
) -> dict[str, Any]:
    """The context of a grant issuance (``Action::"grant:issue"``), one per tool in scope.

    ``has_use_limit`` says whether ``max_uses`` applies (it is 0 when there is no
    limit): a policy ``context.max_uses <= 10`` must also require ``has_use_limit``.
    """
    return {
        "task": task,
        "purpose": purpose,
        "on_behalf_of": canonical_human_id(on_behalf_of),
        "delegation": {"depth": len(delegation_chain), "chain": list(delegation_chain)},
        "time": {"epoch": int(now.timestamp()), "hour": now.hour, "weekday": now.weekday()},
        "ttl_seconds": ttl_seconds,
        "max_uses": max_uses or 0,
        "has_use_limit": max_uses is not None,
        "approved": approved,
    }

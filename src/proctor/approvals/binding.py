"""What an approval is bound to: a digest of the exact call."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["binding_digest", "canonical_arguments"]


def canonical_arguments(args: Mapping[str, Any]) -> str:
    """The arguments as sorted, compact JSON: equal arguments give equal text.

    >>> canonical_arguments({"b": 1, "a": [True, None]})
    '{"a":[true,null],"b":1}'
    """
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def binding_digest(*, agent_id: str, task_id: str, tool_id: str, args: Mapping[str, Any],
                   grant_id: str) -> str:
    """SHA-256 over the call's agent, task, tool, canonical arguments and grant.

    Each part is length-prefixed, so no two different calls share a digest by
    moving characters from one part into the next.
    """
    digest = hashlib.sha256()
    for part in (agent_id, task_id, tool_id, canonical_arguments(args), grant_id):
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()

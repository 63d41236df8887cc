"""A suite's grants: what each user task's planner asks for, in ``grants.yaml``.

One entry per user task::

    user_task_3:
      tools: [get_most_recent_transactions, send_money]
      args:
        send_money: {recipient: {in: [GB29NWBK60161331926819]}}

The rule that drafts them (``bench/efficacy.py --suite NAME --write-grants``), and
that a test holds the committed files to: the tools are those of the task's
ground truth (what a planner would ask for); an argument is constrained only when,
in every ground-truth call of that tool, its value — a string or an integer, or
each item of a list of them — appears in the user's request as a whole word. The
constraint is ``in`` those values. Nothing is taken from the injection tasks, and
nothing from what a call would read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from examples.agentdojo.suites import HarnessError, UserTask

__all__ = ["draft_grant", "load_grants", "scope_of", "write_grants"]

GRANTS_FILE = "grants.yaml"


def draft_grant(task: UserTask) -> dict[str, Any]:
    """The grant of ``task`` by the rule above."""
    tools = sorted({call.function for call in task.calls})
    args: dict[str, dict[str, Any]] = {}
    for tool in tools:
        calls = [call for call in task.calls if call.function == tool]
        pinned = {}
        for name in sorted(set.intersection(*(set(c.args) for c in calls))):
            values = _named_values([c.args[name] for c in calls], task.prompt)
            if values is not None:
                pinned[name] = {"in": values}
        if pinned:
            args[tool] = pinned
    return {"tools": tools, **({"args": args} if args else {})}


def _named_values(values: Sequence[Any], request: str) -> list[Any] | None:
    """The values, flattened, if every one appears in ``request`` as a whole word."""
    out: list[Any] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        if not items:
            return None
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int):
                return None
            if not _appears(str(item), request):
                return None
            if item not in out:
                out.append(item)
    return out


def _appears(text: str, request: str) -> bool:
    return bool(text) and re.search(rf"(?<![\w.@-]){re.escape(text)}(?![\w@-])", request) \
        is not None


def scope_of(server: str, grant: Mapping[str, Any]) -> dict[str, Any]:
    """The grant as a proctor scope document, its tools on ``server``."""
    args = grant.get("args") or {}
    return {"tools": [
        {"tool": f"{server}/{tool}", **({"args": args[tool]} if tool in args else {})}
        for tool in grant["tools"]]}


def load_grants(policy_dir: Path, tasks: Sequence[UserTask]) -> dict[str, dict[str, Any]]:
    """The grants of ``policy_dir``, one for each of ``tasks``; raises if one is missing."""
    path = policy_dir / GRANTS_FILE
    if not path.is_file():
        raise HarnessError(f"`{path}` is missing: draft it with --write-grants")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise HarnessError(f"`{path}` must map user task ids to grants")
    missing = [t.id for t in tasks if t.id not in data]
    if missing:
        raise HarnessError(f"`{path}` has no grant for `{missing[0]}`")
    for task_id, grant in data.items():
        if not isinstance(grant, dict) or not isinstance(grant.get("tools"), list):
            raise HarnessError(f"the grant of `{task_id}` in `{path}` needs a `tools` list")
    return data


def write_grants(policy_dir: Path, tasks: Sequence[UserTask]) -> Path:
    """Draft every task's grant by the rule and write ``grants.yaml``."""
    path = policy_dir / GRANTS_FILE
    header = ("# Drafted by `bench/efficacy.py --write-grants` by the rule of "
              "docs/efficacy.md:\n# the tools of each task's ground truth; an argument "
              "constrained only to values\n# the request names. Never from the injection "
              "tasks.\n")
    body = yaml.safe_dump({t.id: draft_grant(t) for t in tasks}, sort_keys=False,
                          allow_unicode=True, width=100)
    path.write_text(header + body, encoding="utf-8")
    return path



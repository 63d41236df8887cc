"""How values are shown on console pages: times, outcomes, arguments.

Filters return plain strings, so the templates' autoescaping still applies to
whatever they produce: an agent-supplied value can never become markup. Every value a
page writes has its control characters and its invisible or reordering format
characters (bidirectional overrides, zero-width spaces) written ``\\uXXXX`` (the
environment's ``finalize``): raw, an agent's argument ``"\\u202e1001-c"`` showed on an
approval card as ``c-1001``, another customer than the one the call names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from proctor.oversight.compliance.render import shown

__all__ = ["OUTCOME_CLASSES", "register_filters", "relative", "when"]

# The colour class of a decision or status: allow green, deny red, pending amber.
OUTCOME_CLASSES = {
    "allow": "ok", "allowed": "ok", "approved": "ok", "used": "ok", "trusted": "ok",
    "granted": "ok", "signed_in": "ok", "registered": "ok", "stored": "ok", "active": "ok",
    "deny": "bad", "denied": "bad", "refused": "bad", "revoked": "bad", "suspended": "bad",
    "retired": "bad", "forbidden": "bad",
    "approval_required": "warn", "pending": "warn", "drifted": "warn", "shadowing": "warn",
    "candidate": "warn",
    "expired": "mute", "retired_revision": "mute",
}


def when(value: datetime | str | None) -> str:
    """``2026-11-29 16:48:06`` (UTC)."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def relative(value: datetime | None, now: datetime) -> str:
    """``in 9 min``, ``3 min ago``, ``just now``."""
    if value is None:
        return ""
    seconds = int((value - now).total_seconds())
    size = abs(seconds)
    if size < 45:
        return "just now" if seconds <= 0 else "in under a minute"
    if size < 5400:
        amount = f"{round(size / 60)} min"
    elif size < 172800:
        amount = f"{round(size / 3600)} h"
    else:
        amount = f"{round(size / 86400)} days"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _outcome(value: Any) -> str:
    return OUTCOME_CLASSES.get(str(value or ""), "mute")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(
        value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 160 else text[:157] + "…"


def _short(value: Any, size: int = 14) -> str:
    text = str(value or "")
    return text if len(text) <= size else text[:size] + "…"


def _agent_name(value: Any) -> str:
    """``spiffe://acme.example/agent/support`` → ``support``."""
    text = str(value or "")
    return text.rsplit("/agent/", 1)[-1] if "/agent/" in text else text


def _finalized(value: Any) -> Any:
    if isinstance(value, Markup):  # escaped already: only its hidden characters shown
        return Markup(shown(value))  # noqa: S704
    return shown(value)


def register_filters(env: Environment) -> None:
    env.finalize = _finalized
    env.filters.update({"when": when, "outcome": _outcome, "pretty": _pretty,
                        "compact": _compact, "short": _short, "agent_name": _agent_name})
    env.globals["relative"] = relative

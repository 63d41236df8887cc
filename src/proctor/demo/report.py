"""The demo's steps as a narrative (Rich) and as data (``--json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

__all__ = ["DemoReport", "Step"]

_COLOURS = {"allow": "green", "deny": "red", "approval_required": "yellow", "ok": "green",
            "revoked": "red", "redacted": "yellow", "drifted": "yellow", "failed": "bold red"}


@dataclass
class Step:
    """One step: what it shows, what came out, and whether that is what it must show."""

    key: str
    title: str
    outcome: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "outcome": self.outcome, "ok": self.ok,
                "detail": self.detail}


@dataclass
class DemoReport:
    """Every step so far; printed as it goes unless the output is JSON."""

    console: Console | None
    steps: list[Step] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        if self.console is not None:
            self._print(len(self.steps), step)
        return step

    def say(self, text: str, *, always: bool = False) -> None:
        """Narrate; with ``always``, even when the output is JSON (then on stderr)."""
        if self.console is not None:
            self.console.print(text)
        elif always:
            Console(stderr=True).print(text)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.info, "steps": [s.as_json() for s in self.steps]}

    def dumps(self) -> str:
        return json.dumps(self.as_json(), indent=2, default=str)

    def _print(self, number: int, step: Step) -> None:
        assert self.console is not None
        colour = _COLOURS.get(step.outcome, "white")
        mark = "" if step.ok else "  [bold red]✗ not what this step must show[/]"
        self.console.print(f"[bold]{number:>2}.[/] {step.title}  "
                           f"[bold {colour}]{step.outcome.upper()}[/]{mark}")
        for line in step.lines:
            self.console.print(f"     {line}", markup=False, highlight=False)

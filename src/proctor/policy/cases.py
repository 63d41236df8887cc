"""Data-driven policy tests: requests with their expected decisions.

A test file (``*.test.yaml``, ``*.test.yml`` or ``*.test.json``)::

    cases:
      - name: the coding agent reads its own repository
        request: {agent: spiffe://acme.example/agent/coder, tool: git/git_log,
                  args: {repo_path: /srv/repos/app}}
        expect:
          decision: allow             # allow | deny | approval_required
          policies: [coder-git-read]  # optional: exactly these determining policies
          reasons: [...]              # optional: each of these among the reasons
          code: policy_permit         # optional
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from proctor.documents import read_json, read_yaml
from proctor.errors import PolicyTestError, ProctorError
from proctor.policy.engine import PolicyEngine
from proctor.policy.model import Decision, Outcome
from proctor.policy.requests import request_from_spec

__all__ = ["CaseResult", "PolicyCase", "find_case_files", "load_cases", "run_cases"]

_SUFFIXES = (".test.yaml", ".test.yml", ".test.json")


@dataclass(frozen=True, slots=True)
class PolicyCase:
    file: str
    name: str
    request: Mapping[str, Any]
    expect: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def find_case_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))


def load_cases(path: Path, root: Path | None = None) -> list[PolicyCase]:
    name = path.relative_to(root).as_posix() if root else path.name
    read = read_json if path.suffix == ".json" else read_yaml
    data = read(path, what="test file", name=name, error=PolicyTestError)
    items = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise PolicyTestError(f"test file `{name}` must have a `cases` list")
    cases = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            raise PolicyTestError(f"test file `{name}`: case {i} needs a `request` mapping")
        expect = item.get("expect")
        if not isinstance(expect, dict) or "decision" not in expect:
            raise PolicyTestError(f"test file `{name}`: case {i} needs `expect.decision`")
        problem = _expect_problem(expect)
        if problem:
            raise PolicyTestError(f"test file `{name}`: case {i}: {problem}")
        if expect["decision"] not in {o.value for o in Outcome}:
            raise PolicyTestError(
                f"test file `{name}`: case {i} expects unknown decision `{expect['decision']}`"
            )
        cases.append(PolicyCase(name, str(item.get("name") or f"case {i}"), item["request"],
                                expect))
    return cases


def _expect_problem(expect: Mapping[str, Any]) -> str | None:
    for key in ("decision", "code"):
        if key in expect and not isinstance(expect[key], str):
            return f"`expect.{key}` must be a string"
    for key in ("policies", "reasons"):
        value = expect.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            return f"`expect.{key}` must be a list of strings"
    return None


def run_cases(engine: PolicyEngine, cases: list[PolicyCase], *, now: datetime) -> list[CaseResult]:
    """Decide each case's request and compare with its expectations."""
    results = []
    for case in cases:
        try:
            request = request_from_spec(case.request, now=now)
        except ProctorError as exc:
            raise PolicyTestError(f"{case.file}: case `{case.name}`: {exc.message}") from exc
        decision = engine.decide(request)
        results.append(CaseResult(case, decision, _compare(case.expect, decision)))
    return results


def _compare(expect: Mapping[str, Any], decision: Decision) -> tuple[str, ...]:
    out = []
    if expect["decision"] != decision.outcome.value:
        out.append(f"decision: expected {expect['decision']}, got {decision.outcome.value}")
    if "code" in expect and expect["code"] != decision.code.value:
        out.append(f"code: expected {expect['code']}, got {decision.code.value}")
    if "policies" in expect and sorted(expect["policies"] or []) != sorted(decision.policy_ids):
        out.append(
            f"policies: expected {sorted(expect['policies'] or [])}, "
            f"got {sorted(decision.policy_ids)}"
        )
    for reason in expect.get("reasons") or ():
        if reason not in decision.reasons:
            out.append(f"reasons: expected `{reason}` among {list(decision.reasons)}")
    return tuple(out)

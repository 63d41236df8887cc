"""Every recipe of docs/cookbook.md works as the page says: its Cedar validates
against the example schema next to the example policies, and each of its test
cases gets the decision (and determining policies) the page shows."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.grants import GrantScope
from proctor.policy import load_bundle
from proctor.policy.cases import load_cases, run_cases

from .markdown import DOCS, ROOT, Section, sections

EXAMPLES = ROOT / "examples" / "policies"
COOKBOOK = DOCS / "cookbook.md"
# A Monday at 10:00 UTC: cases that do not set `time` are decided then.
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def _recipes() -> list[Section]:
    return [s for s in sections(COOKBOOK.read_text(encoding="utf-8"))
            if any(b.language == "cedar" for b in s.blocks)]


RECIPES = _recipes()


def _policy_dir(tmp_path: Path, recipes: list[Section]) -> Path:
    """The example policies (without their own test cases) plus ``recipes``."""
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("*.test.*"))
    for number, recipe in enumerate(recipes):
        cedar = "\n".join(b.text for b in recipe.blocks if b.language == "cedar")
        (target / f"recipe{number}.cedar").write_text(cedar, encoding="utf-8")
    return target


def _cases_text(recipe: Section) -> str:
    found = [b.text for b in recipe.blocks
             if b.language == "yaml" and b.text.lstrip().startswith("cases:")]
    assert len(found) == 1, f"recipe `{recipe.title}` needs one ```yaml block of cases"
    return found[0]


def test_the_cookbook_has_the_recipes_the_issue_asks_for() -> None:
    titles = {r.title for r in RECIPES}
    assert {"Least privilege per task", "Argument constraints", "Data sensitivity",
            "Approvals", "Drift", "Delegation", "Time windows"} <= titles


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.title for r in RECIPES])
def test_each_recipe_decides_its_cases_as_the_page_shows(recipe: Section,
                                                          tmp_path: Path) -> None:
    directory = _policy_dir(tmp_path, [recipe])
    cases_file = directory / "recipe.test.yaml"
    cases_file.write_text(_cases_text(recipe), encoding="utf-8")
    engine = load_bundle(directory).engine()  # raises on any invalid policy
    cases = load_cases(cases_file)
    assert len(cases) >= 2
    for case in cases:
        # pinned to the policies that decide, not just to the outcome
        assert "policies" in case.expect or "code" in case.expect, case.name
    results = run_cases(engine, cases, now=NOW)
    failures = {r.case.name: r.mismatches for r in results if not r.passed}
    assert failures == {}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.title for r in RECIPES])
def test_each_recipes_own_policies_decide_at_least_one_case(recipe: Section) -> None:
    ids = {line.split('"')[1] for b in recipe.blocks if b.language == "cedar"
           for line in b.text.splitlines() if line.startswith("@id(")}
    named = {p for case in yaml.safe_load(_cases_text(recipe))["cases"]
             for p in case["expect"].get("policies", [])}
    assert ids, f"recipe `{recipe.title}` has no @id"
    assert ids <= named, f"policies of `{recipe.title}` no case shows: {sorted(ids - named)}"


def test_all_recipes_validate_together_with_the_examples(tmp_path: Path) -> None:
    directory = _policy_dir(tmp_path, RECIPES)
    result = CliRunner().invoke(app, ["policy", "validate", str(directory), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


def test_a_broken_recipe_would_fail_the_build(tmp_path: Path) -> None:
    broken = Section("broken", tuple(
        b if b.language != "cedar" else type(b)(
            "cedar", b.text.replace("context.args.account", "context.args.acount"), b.line)
        for b in next(r for r in RECIPES if r.title == "Argument constraints").blocks))
    directory = _policy_dir(tmp_path, [broken])
    result = CliRunner().invoke(app, ["policy", "validate", str(directory)])
    assert result.exit_code == 1
    assert "recipe0.cedar" in result.stdout


def test_the_least_privilege_scope_allows_only_what_the_page_says() -> None:
    recipe = next(r for r in RECIPES if r.title == "Least privilege per task")
    (block,) = [b for b in recipe.blocks if b.language == "json"]
    scope = GrantScope.from_json(json.loads(block.text))
    app_log = {"repo_path": "/srv/repos/app/src", "max_count": 50}
    assert scope.allows("git/git_log", app_log)
    assert scope.allows("time/get_current_time", {"timezone": "UTC"})
    assert not scope.allows("git/git_log", {**app_log, "repo_path": "/srv/repos/billing/"})
    assert not scope.allows("git/git_log", {**app_log, "repo_path": "/srv/repos/app2/src"})
    assert not scope.allows("git/git_commit", {"repo_path": "/srv/repos/app/", "message": "x"})
    assert not scope.allows("git/git_log", {"repo_path": "/srv/repos/app/src"})

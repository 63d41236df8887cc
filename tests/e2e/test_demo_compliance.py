"""A compliance report from the demo's real run: evidence for every entry the demo
exercises, the gaps it shows, an evidence bundle that verifies offline and stops
verifying when one cited event is changed, and the HTML report in Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser
from typer.testing import CliRunner, Result

from proctor.cli.main import app
from tests.console.browser import browser  # noqa: F401  (the fixture)
from tests.e2e.conftest import DemoRun

pytestmark = pytest.mark.slow

# what the demo's twelve steps cannot show: no agent's risk score is high in the demo
WITHOUT_EVIDENCE_IN_DEMO: set[str] = set()


def _proctor(home: Path, *args: str) -> Result:
    """``proctor`` on the demo's home, in this process: the demo ran as real processes;
    the report reads what they wrote, and the bundle is checked from its file alone (a
    process each would add only its start, about a second of CPU)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PROCTOR_")}
    return CliRunner().invoke(app, list(args), env={**unset, "PROCTOR_HOME": str(home)})


@pytest.fixture(scope="module")
def demo_home(demo_run: DemoRun) -> Path:
    """The home of the demo's run (``tests/e2e/conftest.py``: one run for its tests too)."""
    ran = demo_run.completed
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    return demo_run.home


@pytest.fixture(scope="module")
def report_and_bundle(demo_home: Path) -> tuple[dict[str, Any], Path]:
    bundle = demo_home.parent / "bundle.json"
    made = _proctor(demo_home, "report", "compliance", "--since", "2000-01-01T00:00:00Z",
                    "--format", "json", "--bundle", str(bundle))
    assert made.exit_code == 0, made.stderr[-3000:]
    return json.loads(made.stdout), bundle


def test_the_report_names_evidence_for_every_entry_the_demo_exercises(
        report_and_bundle: tuple[dict[str, Any], Path]) -> None:
    report, _ = report_and_bundle
    frameworks = {e["framework"] for e in report["entries"]}
    assert frameworks == {"owasp_asi", "maestro", "nist_ai_rmf", "eu_ai_act"}
    asi = [e["ref"] for e in report["entries"] if e["framework"] == "owasp_asi"]
    assert asi == [f"ASI{n:02d}" for n in range(1, 11)]
    assert [e["ref"] for e in report["entries"] if e["framework"] == "maestro"] == [
        f"L{n}" for n in range(1, 8)]
    assert {"Art. 12", "Art. 14"} <= {e["ref"] for e in report["entries"]}
    missing = {e["ref"] for e in report["entries"] if e["status"] != "evidenced"}
    assert missing == WITHOUT_EVIDENCE_IN_DEMO
    by_query = {f["query"]: f for e in report["entries"] for f in e["evidence"]}
    assert by_query["human_decisions"]["count"] == 1  # the demo's one approval
    assert by_query["leaks"]["count"] == 1 and by_query["redactions"]["count"] == 1
    assert by_query["drift_denies"]["count"] >= 1
    assert report["checkpoint"] is not None
    cited = {x["seq"] for f in by_query.values() for x in f["examples"]}
    assert cited and max(cited) <= report["checkpoint"]["seq"]


def test_the_report_lists_the_gaps_the_demo_leaves(
        report_and_bundle: tuple[dict[str, Any], Path]) -> None:
    report, _ = report_and_bundle
    kinds = {(g["kind"], g["subject"]) for g in report["gaps"]}
    # the worker drifted in step 10 and nobody reviewed it
    assert ("agent_not_reviewed", "spiffe://acme.example/agent/worker") in kinds
    # pinning and secrets are measured: the demo's gateways pin (strict) and its
    # connectors' secrets are sealed; what proctor cannot see is said
    assert ("not_measured", "secrets outside proctor") in kinds
    assert not any(kind in ("server_not_pinned", "plaintext_secret") for kind, _ in kinds)
    # tools of the example catalog no policy names (the demo's catalog has several)
    assert any(kind == "tool_without_policy" for kind, _ in kinds)
    # the demo's approver is local-admin, not alice, for whom the worker acted
    assert not any(kind == "approval_by_owner" for kind, _ in kinds)


def test_the_bundle_verifies_offline_and_fails_when_one_cited_event_is_changed(
        demo_home: Path, report_and_bundle: tuple[dict[str, Any], Path]) -> None:
    _, bundle = report_and_bundle
    ok = _proctor(demo_home, "report", "verify", str(bundle), "--json")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["valid"] is True
    data = json.loads(bundle.read_text())
    cited = data["report"]["entries"][0]["evidence"][0]["examples"][0]
    for link in data["events"]:
        if link["event"]["id"] == cited["id"]:
            link["event"]["outcome"] = "allowed" if link["event"]["outcome"] != "allowed" \
                else "denied"
    tampered = bundle.parent / "tampered.json"
    tampered.write_text(json.dumps(data))
    bad = _proctor(demo_home, "report", "verify", str(tampered), "--json")
    assert bad.exit_code == 1
    assert "was changed" in json.loads(bad.stdout)["problem"]


def test_the_html_report_renders_in_chromium(demo_home: Path,
                                             browser: Browser) -> None:  # noqa: F811
    out = demo_home.parent / "report.html"
    made = _proctor(demo_home, "report", "compliance", "--since", "2000-01-01T00:00:00Z",
                    "--format", "html", "--out", str(out))
    assert made.exit_code == 0, made.stderr[-3000:]
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(out.as_uri())
    assert page.locator("h1").inner_text() == "Compliance report"
    assert page.locator("table.framework").count() == 4
    assert page.locator('tr[data-ref="ASI09"] td.evidenced').count() == 1
    assert page.locator("#gaps li").count() >= 3
    assert errors == []
    page.close()

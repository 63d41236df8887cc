"""``proctor demo`` as the README's first command runs it: unattended, as a real
process, against real MCP servers; every step's outcome is checked from ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proctor.cli.main import app
from tests.e2e.conftest import DemoRun

pytestmark = pytest.mark.slow


def test_the_demo_runs_unattended_and_every_step_shows_what_it_must(demo_run: DemoRun) -> None:
    completed = demo_run.completed
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    steps = {step["key"]: step for step in report["steps"]}
    outcomes = [(step["key"], step["outcome"]) for step in report["steps"]]
    assert outcomes == [
        ("grant_issued", "allow"), ("delegated", "allow"), ("allowed_time", "allow"),
        ("allowed_git", "allow"), ("out_of_scope", "deny"), ("policy_denied", "deny"),
        ("redacted", "redacted"), ("approval", "allow"), ("leaked_grant", "revoked"),
        ("drift", "drifted"), ("task_ended", "revoked"), ("audit", "ok"),
    ]
    assert report["ok"] and all(step["ok"] for step in report["steps"])
    assert steps["out_of_scope"]["detail"]["code"] == "grant_out_of_scope"
    assert steps["policy_denied"]["detail"]["code"] == "no_matching_permit"
    assert "sk_live_" not in steps["redacted"]["detail"]["notes"]
    assert steps["approval"]["detail"]["approved_by"]
    assert steps["approval"]["detail"]["approval"].startswith("apr_")
    assert steps["leaked_grant"]["detail"]["revoked"] is True
    risk = steps["leaked_grant"]["detail"]["risk"]  # folded from the audit stream
    assert risk["after"] > risk["before"] and "leaked_grant" in risk["factors"]
    assert steps["drift"]["detail"] == {"trust_state": "drifted", "crm": "policy_forbid",
                                        "git": "allow"}
    assert steps["task_ended"]["detail"]["worker_call"] != "allow"
    counts = steps["audit"]["detail"]["counts"]
    assert counts["agent"] > 0 and counts["human"] >= 1
    # the demo printed its admin token once, to the terminal only: never into the report
    assert "ptk_" not in completed.stdout


def test_the_demo_refuses_to_replace_a_directory_it_did_not_make(tmp_path: Path) -> None:
    # in process: it refuses before it starts anything (the demo as a process is above)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    completed = CliRunner().invoke(app, ["demo", "--json", "--home", str(precious)])
    assert completed.exit_code == 1
    assert "was not made by `proctor demo`" in completed.stdout + completed.stderr
    assert (precious / "notes.txt").read_text() == "keep me"

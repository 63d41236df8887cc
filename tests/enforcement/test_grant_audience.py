"""Two deployments that share issuer keys and grant rows (one restored from the other's
backup) still refuse each other's grants when each has its own `grant_audience`."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from proctor.enforcement import ToolCall
from proctor.grants import GrantScope
from proctor.policy import Outcome
from proctor.runtime import open_runtime

from .conftest import OWNER, SUPPORT, TARGET, Agents, refund


def test_a_deployment_refuses_a_grant_made_for_another_deployments_audience(
        agents: Agents, tmp_path: Path) -> None:
    # staging restored from production's backup: the same issuer keys, master key and
    # grant rows, but its own audience
    production = agents.runtime
    grant = agents.grant(SUPPORT, [{"tool": "crm/issue_refund"}])
    assert grant.claims.audience == "proctor"
    staging_home = tmp_path / "staging"
    shutil.copytree(production.settings.home, staging_home)
    staging_settings = replace(production.settings, home=staging_home,
                               grant_audience="proctor-staging")
    staging = open_runtime(staging_settings, clock=production.clock)
    try:
        staging.enforcer.refresh_principals()
        verdict = staging.enforcer.decide_call(
            grant.token, agents.proof(grant),
            ToolCall("crm/issue_refund", refund(100), target=TARGET))
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_wrong_audience")
        task = staging.grants.start_task(SUPPORT, purpose="help", on_behalf_of=OWNER)
        theirs = staging.grants.issue(task.id, GrantScope.from_json(
            {"tools": [{"tool": "crm/issue_refund"}]}))
        assert theirs.claims.audience == "proctor-staging"
    finally:
        staging.close()
    assert agents.call(theirs, "crm/issue_refund", refund(100)).code == "grant_wrong_audience"
    assert agents.call(grant, "crm/issue_refund", refund(100)).is_allowed

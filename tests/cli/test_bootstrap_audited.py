"""What a home's first opening makes is the effects of its own event, on each database:
the example policies stored and activated when there is no active revision (``init``,
the first ``serve``, any first open) with a ``policy.activate`` event (the operator of
the command, else the system), and the demo's admin token with its ``token.create``
event. Both were made with no event at all."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from proctor.audit import iter_events
from proctor.config import load_settings
from proctor.demo.world import build_world
from proctor.runtime import init_home, open_runtime
from proctor.store import open_store
from proctor.store.tables import api_tokens, policy_revisions
from tests.cli.audited import account, chain_verifies, human_events, run
from tests.cli.test_audited_commands import audit_down, home  # noqa: F401 (a fixture)

OLIVIA = "olivia@acme.example"


def _revisions(database_url: str) -> list[tuple[int, str]]:
    store = open_store(database_url)
    try:
        with store.reading() as conn:
            return [(int(r.id), r.status) for r in conn.execute(
                select(policy_revisions.c.id, policy_revisions.c.status))]
    finally:
        store.close()


def test_init_activates_the_home_policies_with_the_operators_event(
        home: Path, database_url: str) -> None:  # noqa: F811
    assert run("init", "--by", OLIVIA)[0] == 0
    first, token = human_events()[:2]
    assert (first["action"], first["target"], first["actor"]["id"], first["outcome"],
            first["source"], first["detail"]["os_user"]) == (
        "policy.activate", "PolicyRevision::1", OLIVIA, "activated", "cli", account())
    assert first["detail"]["policies"] > 0
    assert (token["action"], token["actor"]["id"]) == ("token.create", OLIVIA)
    assert _revisions(database_url) == [(1, "active")]
    assert chain_verifies()


def test_a_first_open_without_an_operator_activates_them_as_the_system(
        home: Path, database_url: str) -> None:  # noqa: F811
    settings = load_settings()
    init_home(settings)
    runtime = open_runtime(settings)
    try:
        active = runtime.policies.active_revision()
        events = [e.event for e in iter_events(runtime.store)]
    finally:
        runtime.close()
    assert active is not None
    activated = [e for e in events if e["action"] == "policy.activate"]
    assert [(e["actor"]["type"], e["actor"]["id"], e["target"]) for e in activated] == [
        ("system", "proctor", f"PolicyRevision::{active.id}")]


def test_a_first_open_whose_activation_cannot_be_audited_stores_no_policy(
        home: Path, database_url: str) -> None:  # noqa: F811
    with audit_down(database_url):
        code, answer = run("init", "--by", OLIVIA)
    assert (code, answer["error"]["code"]) == (1, "audit_unavailable")
    assert answer["error"]["message"].startswith("`policy.activate`")
    assert _revisions(database_url) == []  # nothing in force that no event put there


def test_the_demo_admin_token_is_made_with_its_event(tmp_path: Path) -> None:
    # the demo's home is SQLite, whatever the tests run on
    world = build_world(tmp_path / "demo")
    try:
        with world.runtime.store.reading() as conn:
            tokens = [r.id for r in conn.execute(select(api_tokens.c.id))]
        events = [e.event for e in iter_events(world.runtime.store)]
    finally:
        world.runtime.close()
    created = [(e["actor"]["type"], e["actor"]["id"], e["target"]) for e in events
               if e["action"] == "token.create"]
    assert created == [("system", "proctor-demo", f'ApiToken::"{t}"') for t in tokens]
    assert len(tokens) == 1
    assert [e["actor"]["id"] for e in events if e["action"] == "policy.activate"] == [
        "proctor"]



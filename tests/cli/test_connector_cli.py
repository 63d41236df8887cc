"""``proctor connector`` and ``proctor discover --register``: the inventory from the
terminal, each change the operator's own audit event."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.audited import human_events, run

ERIN = ("--by", "erin@acme.example")
FIXTURES = Path(__file__).resolve().parents[1] / "oversight" / "clients"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PROCTOR_HOME", str(home))
    monkeypatch.setenv("PROCTOR_TRUST_DOMAIN", "acme.example")
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    for var in ("PROCTOR_CONFIG", "PROCTOR_OPERATOR", "PROCTOR_MASTER_KEY"):
        monkeypatch.delenv(var, raising=False)
    code, _ = run("init", *ERIN)
    assert code == 0
    return home


def test_a_connector_is_added_shown_with_who_reaches_it_and_retired(home: Path) -> None:
    code, added = run("connector", "add", "salesforce", "--kind", "oauth_app", "--name",
                      "Salesforce CRM", "--provider", "salesforce", "--client-id", "3MVG9",
                      "--scope", "api", "--scope", "full", "--server", "crm", *ERIN)
    assert code == 0, added
    code, shown = run("connector", "show", "salesforce")
    assert code == 0, shown
    assert "spiffe://acme.example/agent/support" in {r["agent"] for r in shown["reachable_by"]}
    assert {f["code"] for f in shown["findings"]} == {"no_owner", "over_broad_scopes"}
    code, listed = run("connector", "list")
    assert [c["id"] for c in listed["connectors"]] == ["salesforce"]
    code, retired = run("connector", "retire", "salesforce", *ERIN)
    assert code == 0 and retired["retired_by"] == "erin@acme.example"
    code, listed = run("connector", "list")
    assert listed["connectors"] == []
    actions = [(e["action"], e["target"]) for e in human_events()]
    assert ("connector.add", "Connector::salesforce") in actions
    assert ("connector.retire", "Connector::salesforce") in actions
    code, refused = run("connector", "add", "Bad Id", "--kind", "saas", "--name", "x", *ERIN)
    assert code == 1 and refused["error"]["code"] == "request_invalid"


def test_discover_registers_each_server_and_flags_a_plaintext_secret(home: Path) -> None:
    code, found = run("discover", "--register", str(FIXTURES / "claude-desktop"), *ERIN)
    assert code == 1  # a plaintext secret was found
    assert found["registered"] == ["filesystem", "github"]
    code, shown = run("connector", "show", "github")
    assert code == 0
    assert "plaintext_secret" in {f["code"] for f in shown["findings"]}
    code, again = run("discover", "--register", str(FIXTURES / "claude-desktop"), *ERIN)
    assert again["registered"] == []  # once per id


def test_a_gateway_configs_upstreams_are_imported_with_their_secrets(
        home: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "upstreams:\n"
        "  github:\n"
        "    command: [github-mcp-server, stdio]\n"
        "    env: {GITHUB_PERSONAL_ACCESS_TOKEN: \"${secret:github-token}\"}\n"
        "  crm:\n"
        "    url: https://crm.vendor.example/mcp\n"
        "    headers: {Authorization: \"Bearer ${secret:crm-token}\"}\n"
        "    labels: {connector: salesforce}\n")
    code, imported = run("connector", "import", str(config), *ERIN)
    assert code == 0, imported
    assert imported["registered"] == ["github", "salesforce"]
    code, shown = run("connector", "show", "salesforce")
    assert (shown["secrets"], shown["servers"], shown["source"]) == (
        ["crm-token"], ["crm"], "gateway")
    code, again = run("connector", "import", str(config), *ERIN)
    assert again["registered"] == []

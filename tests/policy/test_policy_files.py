"""An ``entities.yaml`` or ``tools.yaml`` of the wrong shape is refused with one line
naming the file, the entry and the key: a typo or a string where a list belongs was read
as something else (no roles at all, a group per letter, a restricted tool `internal`) and
the policies saw principals and tools nobody wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.errors import ConfigError
from proctor.policy.catalog import load_catalog
from proctor.policy.entities import load_principals

AGENT = '{id: "spiffe://acme.example/agent/coder", owner: alice@acme.example'


@pytest.mark.parametrize(("text", "says"), [
    # a section's name mistyped: no agents at all
    ("agent:\n  - " + AGENT + "}\n",
     "unknown section `agent` (known: humans, groups, agents, connectors)"),
    # a key mistyped: alice had no roles
    ("humans:\n  - {id: alice@acme.example, role: [admin]}\n",
     "`humans` entry 1 has unknown key `role`"),
    # a string for a list: roles `a`, `d`, `m`, `i`, `n`; groups `o`, `p`, `s`
    ("humans:\n  - {id: alice@acme.example, roles: admin}\n",
     "`humans` entry 1: `roles` must be a list of strings"),
    ("agents:\n  - " + AGENT + ", groups: ops}\n",
     "`agents` entry 1: `groups` must be a list of strings"),
    # 1.9 was 1
    ("agents:\n  - " + AGENT + ", risk_score: 1.9}\n",
     "`agents` entry 1: `risk_score` must be a whole number"),
    # Python's own words: "'int' object is not iterable", "'owner'"
    ("agents: 5\n", "`agents` must be a list"),
    ("agents:\n  - {id: \"spiffe://acme.example/agent/coder\"}\n",
     "`agents` entry 1 needs `owner`"),
    ("groups:\n  - coders\n", "`groups` entry 1 must be a mapping"),
    ("- humans\n", "the document must be a mapping of humans, groups, agents and connectors"),
])
def test_an_entities_file_of_the_wrong_shape_names_the_entry_and_key(
        tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "entities.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_principals(path)
    assert refused.value.message == f"entities file `{path}`: {says}"


def test_an_entities_file_of_the_right_shape_is_read(tmp_path: Path) -> None:
    path = tmp_path / "entities.yaml"
    path.write_text("humans:\n  - {id: alice@acme.example, roles: [admin], groups: [ops]}\n"
                    "groups:\n  - {id: ops}\nagents:\n  - " + AGENT
                    + ", groups: [ops], risk_score: 3}\n"
                    "connectors:\n  - {id: crm, vendor: acme, scopes: [read]}\n")
    entities = {e["uid"]["id"]: e for e in load_principals(path)}
    assert entities["alice@acme.example"]["attrs"]["roles"] == ["admin"]
    assert entities["spiffe://acme.example/agent/coder"]["attrs"]["risk_score"] == 3
    assert entities["crm"]["attrs"]["scopes"] == ["read"]


@pytest.mark.parametrize(("entry", "says"), [
    # the label mistyped: the tool was `internal`, the default
    ("{server: hr, name: read, sensitvity: restricted}",
     "has unknown key `sensitvity` (known: server, name, sensitivity, destination, "
     "connector, input_schema)"),
    ("{server: hr, name: 7}", ": `name` must be a non-empty string"),
    ("{server: hr, name: read, input_schema: [a]}",
     ": `input_schema` must be a mapping (a JSON schema)"),
])
def test_a_tool_catalog_entry_of_the_wrong_shape_names_the_entry_and_key(
        tmp_path: Path, entry: str, says: str) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(f"tools:\n  - {{server: hr, name: list}}\n  - {entry}\n")
    with pytest.raises(ConfigError) as refused:
        load_catalog(path)
    assert refused.value.message.startswith(f"tool catalog `{path}`: entry 2")
    assert refused.value.message.endswith(says)

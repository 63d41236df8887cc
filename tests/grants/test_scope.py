from __future__ import annotations

import pytest

from proctor.errors import ScopeError
from proctor.grants import GrantScope

PARENT = GrantScope.from_json({"tools": [
    {"tool": "git/*", "args": {"repo_path": {"prefix": ["/srv/repos/"]}}},
    {"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 5000}}},
    {"tool": "time/get_current_time", "args": {"timezone": {"in": ["UTC", "Europe/Berlin"]}}},
]})


@pytest.mark.parametrize(("tool", "args", "allowed"), [
    ("git/git_log", {"repo_path": "/srv/repos/app"}, True),
    ("git/git_log", {"repo_path": "/etc"}, False),
    ("git/git_log", {}, False),
    ("crm/issue_refund", {"amount_cents": 5000}, True),
    ("crm/issue_refund", {"amount_cents": 5001}, False),
    ("crm/issue_refund", {"amount_cents": True}, False),
    ("time/get_current_time", {"timezone": "UTC"}, True),
    ("time/get_current_time", {"timezone": "Asia/Tokyo"}, False),
    ("crm/lookup_customer", {}, False),
])
def test_a_scope_allows_only_its_tools_within_their_constraints(
    tool: str, args: dict[str, object], allowed: bool
) -> None:
    assert PARENT.allows(tool, args) is allowed


@pytest.mark.parametrize(("child", "covered"), [
    ({"tools": [{"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/repos/app"]}}}]},
     True),
    ({"tools": [{"tool": "git/git_log", "args": {"repo_path": {"in": ["/srv/repos/a"]}}}]}, True),
    ({"tools": [{"tool": "git/git_log"}]}, False),  # drops the path constraint
    ({"tools": [{"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/"]}}}]}, False),
    ({"tools": [{"tool": "*"}]}, False),
    ({"tools": [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 100}}}]}, True),
    ({"tools": [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 9000}}}]}, False),
    ({"tools": [{"tool": "time/get_current_time", "args": {"timezone": {"in": ["UTC"]}}}]}, True),
    ({"tools": [{"tool": "time/get_current_time",
                 "args": {"timezone": {"in": ["UTC", "Asia/Tokyo"]}}}]}, False),
    ({"tools": [{"tool": "crm/lookup_customer"}]}, False),
])
def test_a_child_scope_is_covered_only_when_it_is_no_wider(
    child: dict[str, object], covered: bool
) -> None:
    assert PARENT.covers(GrantScope.from_json(child)) is covered


def test_a_scope_survives_its_json_form() -> None:
    assert GrantScope.from_json(PARENT.as_json()) == PARENT


@pytest.mark.parametrize(("doc", "message"), [
    ({}, "non-empty `tools` list"),
    ({"tools": []}, "non-empty `tools` list"),
    ({"tools": [{"tool": "git"}]}, "must be `server/tool`"),
    ({"tools": [{"tool": "git/*x"}]}, "must be `server/tool`"),
    ({"tools": [{"tool": "git/a", "args": {"p": {"like": "x"}}}]}, "constraint `like`"),
    ({"tools": [{"tool": "git/a", "args": {"p": {"in": [], "max": 1}}}]}, "exactly one of"),
    ({"tools": [{"tool": "git/a", "args": {"p": {"max": "10"}}}]}, "constraint `max`"),
    ({"tools": [{"tool": f"s/t{i}"} for i in range(300)]}, "at most 256 tools"),
])
def test_a_malformed_scope_is_a_specific_error(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ScopeError, match=message) as caught:
        GrantScope.from_json(doc)
    assert caught.value.code == "scope_invalid"


def test_an_integer_value_list_does_not_allow_booleans() -> None:
    scope = GrantScope.from_json({"tools": [{"tool": "s/t", "args": {"n": {"in": [1, 0]}}}]})
    assert scope.allows("s/t", {"n": 1})
    assert not scope.allows("s/t", {"n": True})
    assert not scope.allows("s/t", {"n": False})


def test_a_list_argument_is_allowed_only_when_each_of_its_items_is() -> None:
    scope = GrantScope.from_json({"tools": [
        {"tool": "mail/send", "args": {"to": {"in": ["a@x.example", "b@x.example"]}}},
        {"tool": "fs/read", "args": {"paths": {"prefix": ["/srv/"]}}},
    ]})
    assert scope.allows("mail/send", {"to": ["a@x.example"]})
    assert scope.allows("mail/send", {"to": ["b@x.example", "a@x.example"]})
    assert not scope.allows("mail/send", {"to": ["a@x.example", "spy@y.example"]})
    assert not scope.allows("mail/send", {"to": [["a@x.example"]]})
    assert not scope.allows("mail/send", {})
    assert scope.allows("fs/read", {"paths": ["/srv/a", "/srv/b"]})
    assert not scope.allows("fs/read", {"paths": ["/srv/a", "/etc/passwd"]})

"""Argument constraints hold at their edges: a range has a floor, only integers pass
it, a prefix is a place (no sibling, no `..` in any form the upstream may read), and a
child constraint is never wider than its parent's, whatever its kind."""

from __future__ import annotations

import json

import pytest

from proctor.approvals import similar_scope
from proctor.errors import ScopeError
from proctor.grants import GrantScope


def _scope(args: dict[str, object]) -> GrantScope:
    return GrantScope.from_json({"tools": [{"tool": "s/t", "args": args}]})


REFUND = _scope({"amount_cents": {"max": 5000}})


@pytest.mark.parametrize("value", [
    -1, -1_000_000, -(2**80), 5001, 2**64,
    True, False, 4999.0, -0.0, float("nan"), float("inf"), float("-inf"),
    json.loads("1e309"), json.loads("-1e309"), "5000", "-5", None, [], {"v": 1}, [-1, 1],
])
def test_a_max_alone_refuses_negatives_non_integers_and_everything_past_it(
        value: object) -> None:
    assert not REFUND.allows("s/t", {"amount_cents": value})


@pytest.mark.parametrize("value", [0, 1, 5000, [0, 5000]])
def test_a_max_alone_allows_zero_up_to_it(value: object) -> None:
    assert REFUND.allows("s/t", {"amount_cents": value})


def test_a_min_lets_a_range_go_below_zero_and_bounds_it_there() -> None:
    scope = _scope({"delta": {"min": -100, "max": 100}})
    assert scope.allows("s/t", {"delta": -100})
    assert scope.allows("s/t", {"delta": 100})
    assert not scope.allows("s/t", {"delta": -101})
    assert not scope.allows("s/t", {"delta": 101})
    floor = _scope({"page": {"min": 1}})
    assert floor.allows("s/t", {"page": 10**12})
    assert not floor.allows("s/t", {"page": 0})
    assert GrantScope.from_json(scope.as_json()) == scope


@pytest.mark.parametrize(("constraint", "message"), [
    ({"max": -5}, "below 0 .*add a `min`"),
    ({"min": 10, "max": 5}, "below `min`"),
    ({"max": 2**53}, "whole number from"),
    ({"min": -(2**60)}, "whole number from"),
    ({"max": 5000.0}, "constraint `max`"),
    ({"max": True}, "constraint `max`"),
    ({"min": "1"}, "constraint `min`"),
    ({"max": 5, "in": [1]}, "exactly one of"),
    ({}, "exactly one of"),
    ({"prefix": ["/srv/../etc"]}, "`..` segment"),
    ({"prefix": ["/srv/\x00"]}, "control character"),
])
def test_a_constraint_that_bounds_nothing_sensible_is_refused_when_read(
        constraint: dict[str, object], message: str) -> None:
    with pytest.raises(ScopeError, match=message):
        _scope({"a": constraint})


REPO = _scope({"path": {"prefix": ["/srv/repos/app"]}})
DOCS = _scope({"uri": {"prefix": ["file:///srv/docs/"]}})
API = _scope({"url": {"prefix": ["https://api.example.com"]}})


# (scope, allowed, values): a prefix allows what lies under it, no sibling, no way up
PREFIX_CASES: list[tuple[GrantScope, bool, tuple[str, ...]]] = [
    (REPO, False, (
        "/srv/repos/app-evil",
        "/srv/repos/app2/x",
        "/srv/repos/app/../../etc/passwd",
        "/srv/repos/app/..",
        "/srv/repos/app\\..\\secrets",
        "/srv/repos/app/%2e%2e/%2e%2e/etc",
        "/srv/repos/app/%252e%252e/etc",
        "/srv/repos/app/..%2f..%2fetc",
        "/srv/repos/app/\u2025/etc",  # two dot leader: NFKC `..`
        "/srv/repos/app/\uff0e\uff0e/etc",  # fullwidth full stops
        "/srv/repos/app\uff0f..\uff0fetc",  # fullwidth solidus
        "/srv/repos/app/x\x00.txt",
        "/srv/repos/app/x%00.txt",
        "/srv/repos/app/x\nInjected: 1",
        "/srv/repos/app\u0301/x",  # a combining acute after `app`: no boundary, `apṕ` in NFKC
        "/SRV/repos/app",
    )),
    (DOCS, False, (
        "file:///srv/docs/../../etc/shadow",
        "file:///srv/docs/%2E%2E/secrets",
    )),
    (API, False, (
        "https://api.example.com.evil.example/",
        "https://api.example.com@evil.example/",
    )),
    (REPO, True, (
        "/srv/repos/app",
        "/srv/repos/app/src/main.py",
        "/srv/repos/app/notes..txt",
        "/srv/repos/app/./src",
        "/srv/repos/app/caf\u00e9",
    )),
    (DOCS, True, (
        "file:///srv/docs/a%20b.md",
    )),
    (API, True, (
        "https://api.example.com/v1/items",
    )),
]


@pytest.mark.parametrize(("scope", "value", "allowed"), [
    (scope, value, allowed) for scope, allowed, values in PREFIX_CASES for value in values])
def test_a_prefix_allows_what_lies_under_it_and_no_sibling_nor_way_up(
        scope: GrantScope, value: str, allowed: bool) -> None:
    name = next(iter(scope.tools[0].args))
    assert scope.allows("s/t", {name: value}) is allowed


def test_a_prefix_ending_in_a_separator_is_a_plain_prefix() -> None:
    scope = _scope({"id": {"prefix": ["INV-", "/srv/"]}})
    assert scope.allows("s/t", {"id": "INV-2041"})
    assert scope.allows("s/t", {"id": "/srv/anything"})
    assert not scope.allows("s/t", {"id": "INV"})


@pytest.mark.parametrize(("parent", "child", "covered"), [
    ({"max": 5000}, {"max": 100}, True),
    ({"max": 5000}, {"min": 0, "max": 5000}, True),
    ({"max": 5000}, {"min": -1, "max": 100}, False),
    ({"max": 5000}, {"min": 1}, False),
    ({"min": -50, "max": 50}, {"max": 50}, True),
    ({"min": -50, "max": 50}, {"min": -51, "max": 0}, False),
    ({"min": 1}, {"min": 5, "max": 9}, True),
    ({"min": 1}, {"min": 0}, False),
    ({"max": 5000}, {"in": [0, 5000]}, True),
    ({"max": 5000}, {"in": [-1]}, False),
    ({"max": 5000}, {"in": [True]}, False),
    ({"max": 5000}, {"prefix": ["1"]}, False),
    ({"in": [1, 2]}, {"max": 1}, False),
    ({"prefix": ["/srv/repos/app"]}, {"prefix": ["/srv/repos/app"]}, True),
    ({"prefix": ["/srv/repos/app"]}, {"prefix": ["/srv/repos/app/src"]}, True),
    ({"prefix": ["/srv/repos/app"]}, {"prefix": ["/srv/repos/app-evil"]}, False),
    ({"prefix": ["/srv/repos/app"]}, {"prefix": ["/srv/repos/app2"]}, False),
    ({"prefix": ["/srv/repos/"]}, {"prefix": ["/srv/repos/app"]}, True),
    ({"prefix": ["/srv/repos/app"]}, {"in": ["/srv/repos/app/../x"]}, False),
    ({"prefix": ["/srv/repos/app"]}, {"in": ["/srv/repos/app/x"]}, True),
    ({"in": ["a", "b"]}, {"prefix": ["a"]}, False),
])
def test_a_child_constraint_is_never_wider_than_its_parents(
        parent: dict[str, object], child: dict[str, object], covered: bool) -> None:
    assert _scope({"a": parent}).covers(_scope({"a": child})) is covered


def test_a_child_prefix_allows_nothing_its_parent_refuses() -> None:
    parent, child = _scope({"p": {"prefix": ["/srv/"]}}), _scope({"p": {"prefix": ["/srv/."]}})
    assert parent.covers(child)
    for value in ("/srv/../etc", "/srv/./x", "/srv/.x"):
        assert not child.allows("s/t", {"p": value}) or parent.allows("s/t", {"p": value})


@pytest.mark.parametrize(("approved", "allowed", "refused"), [
    (900, [0, 900], [-1, -1_000_000, 901]),
    (-300, [-300], [-301, 0, 1]),  # a negative approved value is pinned exactly
])
def test_a_pre_approval_scope_allows_no_more_than_the_approved_amount_in_its_direction(
        approved: int, allowed: list[int], refused: list[int]) -> None:
    scope = similar_scope("crm/issue_refund", {"customer_id": "c-1", "amount_cents": approved})
    for amount in allowed:
        assert scope.allows("crm/issue_refund", {"customer_id": "c-1", "amount_cents": amount})
    for amount in refused:
        assert not scope.allows("crm/issue_refund",
                                {"customer_id": "c-1", "amount_cents": amount})

"""A scope document as asked for (issuance, an offer, an exchange, the CLI): a key it
does not know, at the top or in an entry, or a value of the wrong type is refused by
name (``scope_invalid``), never dropped: an entry's misspelt ``argz`` dropped meant a
grant without the constraints asked for."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.errors import ScopeError
from proctor.grants import GrantScope

KB = {"tool": "kb/search_articles"}


@pytest.mark.parametrize(("doc", "message"), [
    ({"tools": [KB], "extra": float("nan")}, "unknown key `extra`"),
    ({"tools": [KB], "extra": 10**400}, "unknown key `extra`"),
    ({"tools": [KB], "\x00": "\x00"}, "unknown key `\\\\x00`"),
    ({"tools": [{**KB, "argz": {"q": {"in": ["a"]}}}]}, "unknown key `argz`"),
    ({"tools": [{**KB, "args": {"q": {"in": [10**400]}}}]}, "constraint `in`"),
    ({"tools": [{**KB, "args": {"q": {"in": [1.5]}}}]}, "constraint `in`"),
    ({"tools": [{**KB, "args": {"q": {"in": ["a\x00"]}}}]}, "NUL"),
    ({"tools": [{"tool": "kb/search\x00"}]}, "control character"),
    ({"tools": [{"tool": "kb/search\x85"}]}, "control character"),  # C1, as prefixes
    ({"tools": [{**KB, "args": {"q\x00": {"in": ["a"]}}}]}, "control character"),
    ({"tools": [{**KB, "args": {"q": {"prefix": ["/srv"], "x": 1}}}]}, "exactly one of"),
])
def test_a_scope_document_with_an_unknown_key_or_a_wrong_value_is_refused_by_name(
        doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ScopeError, match=message) as caught:
        GrantScope.from_request(doc)
    assert caught.value.code == "scope_invalid"


def test_a_scope_document_as_asked_reads_as_the_stored_form_does() -> None:
    doc = {"tools": [{**KB, "args": {"q": {"in": ["a", 2, True]}}}, {"tool": "crm/*"}]}
    assert GrantScope.from_request(doc) == GrantScope.from_json(doc)
    assert GrantScope.from_request(GrantScope.from_json(doc).as_json()) == GrantScope.from_json(doc)

"""Agent ids are SPIFFE IDs of the form spiffe://<trust-domain>/agent/<name>."""

from __future__ import annotations

import pytest

from proctor.errors import IdentityError
from proctor.identity import agent_id_for, parse_agent_id


def test_an_agent_id_parses_into_trust_domain_and_name() -> None:
    parsed = parse_agent_id("spiffe://acme.example/agent/coder-2.v1")
    assert parsed == ("spiffe://acme.example/agent/coder-2.v1", "acme.example", "coder-2.v1")


def test_the_scheme_and_trust_domain_are_canonicalised_to_lower_case() -> None:
    assert parse_agent_id("SPIFFE://Acme.Example/agent/Coder").id == \
        "spiffe://acme.example/agent/Coder"


def test_a_bare_name_is_placed_in_the_configured_trust_domain() -> None:
    assert agent_id_for("coder", "acme.example").id == "spiffe://acme.example/agent/coder"
    assert agent_id_for("spiffe://other.example/agent/x", "acme.example").trust_domain == \
        "other.example"


@pytest.mark.parametrize("value", [
    "",
    "coder",
    "https://acme.example/agent/coder",
    "spiffe://acme.example",
    "spiffe://acme.example/agent",
    "spiffe://acme.example/agent/",
    "spiffe://acme.example/service/coder",
    "spiffe://acme.example/agent/coder/extra",
    "spiffe://acme.example/agent/../admin",
    "spiffe://acme.example/agent/co der",
    "spiffe://acme.example/agent/coder?x=1",
    "spiffe://user@acme.example/agent/coder",
    "spiffe://acme.example:443/agent/coder",
    "spiffe://acme.example/agent/" + "a" * 129,
    "spiffe://" + "a" * 600 + "/agent/coder",
    # look-alikes of spiffe://acme.example/agent/coder (found by review: each was an
    # agent id of its own)
    "spiffe://acme.example/agent/coder\n",
    "spiffe://acme.example./agent/coder",
    "spiffe://.acme.example/agent/coder",
    "spiffe://acme..example/agent/coder",
])
def test_a_malformed_agent_id_is_refused_with_agent_id_invalid(value: str) -> None:
    with pytest.raises(IdentityError) as caught:
        parse_agent_id(value)
    assert caught.value.code == "agent_id_invalid"


def test_the_error_message_quotes_the_input_once_in_backticks() -> None:
    with pytest.raises(IdentityError) as caught:
        parse_agent_id("spiffe://acme.example/agent/../admin")
    assert caught.value.message == ("agent id `spiffe://acme.example/agent/../admin` is not a "
                                    "valid SPIFFE ID: path segments '.' and '..' are not allowed")

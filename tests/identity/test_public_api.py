"""The identity package's public surface is its `__all__`."""

from __future__ import annotations

import proctor.identity as identity
from proctor import errors


def test_every_exported_name_exists_and_the_list_is_sorted() -> None:
    assert [n for n in identity.__all__ if not hasattr(identity, n)] == []
    assert identity.__all__ == sorted(identity.__all__, key=lambda n: (not n.isupper(), n))


def test_identity_errors_carry_the_documented_codes() -> None:
    expected = {
        "AgentIdError": "agent_id_invalid", "AgentUnknownError": "agent_unknown",
        "AgentNotActiveError": "agent_not_active", "ProofTooLargeError": "proof_too_large",
        "ProofSignatureError": "proof_invalid_signature",
        "ProofAlgorithmError": "proof_algorithm_not_allowed",
        "ProofExpiredError": "proof_expired", "ProofNotYetValidError": "proof_not_yet_valid",
        "ProofAudienceError": "proof_wrong_audience", "ProofIssuerError": "proof_wrong_issuer",
    }
    assert {name: getattr(errors, name).code for name in expected} == expected
    for name in expected:
        assert issubclass(getattr(errors, name), errors.IdentityError)

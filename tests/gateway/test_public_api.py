"""The gateway's public surface is what `__all__` says."""

from __future__ import annotations

import proctor.gateway as gateway


def test_every_exported_name_exists_and_the_entry_points_are_there() -> None:
    assert [n for n in gateway.__all__ if not hasattr(gateway, n)] == []
    assert gateway.__all__ == sorted(gateway.__all__)
    assert {"Gateway", "run_wrapper", "GrantAuth", "load_gateway_config"} <= set(gateway.__all__)


def test_the_http_gateway_is_a_module_of_its_own() -> None:
    from proctor.gateway.http import build_http_app

    assert "build_http_app" not in gateway.__all__ and callable(build_http_app)

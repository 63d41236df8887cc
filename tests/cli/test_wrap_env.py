"""``proctor mcp wrap --env``: what the wrapper hands on to the server it starts."""

from __future__ import annotations

import pytest

from proctor.cli.gateway import upstream_env
from proctor.errors import ConfigError


def test_a_name_takes_the_wrappers_own_value_and_a_pair_its_value() -> None:
    own = {"API_KEY": "${secret:mcp.x.API_KEY}", "HOME": "/home/me"}
    assert upstream_env(["API_KEY", "MODE=fast", "EMPTY="], own) == {
        "API_KEY": "${secret:mcp.x.API_KEY}", "MODE": "fast", "EMPTY": ""}


def test_a_name_the_wrapper_was_not_given_or_a_bad_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="was not given"):
        upstream_env(["MISSING"], {})
    with pytest.raises(ConfigError, match="letters, digits"):
        upstream_env(["BAD-NAME=1"], {})

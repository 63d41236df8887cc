"""The enforcement fixtures: a whole runtime on a real store, agents with real keys."""

from tests.enforcement.conftest import agents, frozen, runtime

__all__ = ["agents", "frozen", "runtime"]

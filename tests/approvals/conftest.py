"""The enforcement fixtures: a whole runtime on a real store, agents with real keys."""

from tests.enforcement.conftest import agents, frozen, other, runtime

__all__ = ["agents", "frozen", "other", "runtime"]

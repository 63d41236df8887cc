"""A policy directory as one unit: policies, tool catalog, principals, test cases.

Layout::

    policies/
      *.cedar             policies (any depth)
      tools.yaml          the tool catalog (optional: no tools, no tool actions)
      entities.yaml       humans, groups, agents, connectors (optional)
      *.test.yaml|json    policy test cases (see proctor.policy.cases)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.policy.catalog import ToolCatalog, load_catalog
from proctor.policy.engine import PolicyEngine
from proctor.policy.entities import load_principals
from proctor.policy.revisions import digest_sources
from proctor.policy.source import read_policy_dir

__all__ = ["PolicyBundle", "load_bundle"]


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    directory: Path
    catalog: ToolCatalog
    principals: list[dict[str, Any]]
    sources: dict[str, str]

    def engine(self) -> PolicyEngine:
        """An engine with this bundle's policies active; raises if they are invalid."""
        engine = PolicyEngine(self.catalog, self.principals)
        engine.activate(engine.compile(self.sources, digest=digest_sources(self.sources)))
        return engine


def load_bundle(
    directory: Path, *, tools: Path | None = None, entities: Path | None = None
) -> PolicyBundle:
    """Read ``directory`` (and optional separate catalog and entities files)."""
    tools = tools or directory / "tools.yaml"
    entities = entities or directory / "entities.yaml"
    catalog = load_catalog(tools) if tools.is_file() else ToolCatalog()
    principals = load_principals(entities) if entities.is_file() else []
    return PolicyBundle(directory, catalog, principals, read_policy_dir(directory))

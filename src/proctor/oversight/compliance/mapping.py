"""The mapping data file: proctor's controls against OWASP's agentic Top 10, CSA
MAESTRO's layers, NIST AI RMF 1.0 and the EU AI Act's Articles 12 and 14.

Each entry names the framework item (``ref``, ``title``), the control it asks for,
the proctor feature that provides it and the evidence queries that show it working
(names from :data:`proctor.oversight.compliance.evidence.QUERIES`).

>>> entries = load_mapping()
>>> sorted({e.framework for e in entries})
['eu_ai_act', 'maestro', 'nist_ai_rmf', 'owasp_asi']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.documents import read_yaml
from proctor.errors import ConfigError

__all__ = ["FRAMEWORKS", "MAPPING_FILE", "MappingEntry", "load_mapping"]

MAPPING_FILE = Path(__file__).resolve().parent / "mapping.yaml"

FRAMEWORKS = {
    "owasp_asi": "OWASP Top 10 for Agentic Applications (2026)",
    "maestro": "CSA MAESTRO layers",
    "nist_ai_rmf": "NIST AI RMF 1.0",
    "eu_ai_act": "EU AI Act",
}


@dataclass(frozen=True, slots=True)
class MappingEntry:
    framework: str
    ref: str
    title: str
    control: str
    feature: str
    evidence: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"framework": self.framework, "ref": self.ref, "title": self.title,
                "control": self.control, "feature": self.feature,
                "evidence_queries": list(self.evidence)}


def load_mapping(path: Path = MAPPING_FILE, *, queries: frozenset[str] | None = None
                 ) -> list[MappingEntry]:
    """The entries of ``path``, in file order; an unknown framework or query is refused."""
    document = read_yaml(path, what="compliance mapping", error=ConfigError) or {}
    if not isinstance(document, dict):
        raise ConfigError(f"compliance mapping `{path}` is not a mapping of frameworks")
    entries: list[MappingEntry] = []
    for framework, items in document.items():
        if framework not in FRAMEWORKS:
            raise ConfigError(f"compliance mapping names unknown framework `{framework}`")
        for item in items or ():
            try:
                entry = MappingEntry(framework, str(item["ref"]), str(item["title"]),
                                     str(item["control"]), str(item["feature"]),
                                     tuple(str(q) for q in item.get("evidence") or ()))
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"compliance mapping entry in `{framework}` lacks {exc}"
                                  ) from exc
            unknown = [q for q in entry.evidence if queries is not None and q not in queries]
            if unknown:
                raise ConfigError(f"compliance mapping entry `{entry.ref}` names unknown "
                                  f"evidence query `{unknown[0]}`")
            entries.append(entry)
    return entries

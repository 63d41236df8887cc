"""Builds the proctor-client wheel from the repository's ``src/proctor``: the agent-side SDK
and the few modules it shares with the server (JOSE, codes, errors, clock, documents).

The server's distribution (``proctor``) ships everything else and depends on this one, so
no file is in both. An editable install takes nothing here: ``dev-mode-dirs`` puts the
whole ``src/`` on the path instead (copying these files into site-packages would hide the
server's modules from ``import proctor``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SHIPPED = ["__init__.py", "client", "jose", "clock.py", "codes.py", "errors.py",
           "documents.py", "files.py"]


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        # in the repository the files are two levels up; in the sdist, under src/
        unpacked = Path(self.root, "src", "proctor")
        source = unpacked if unpacked.is_dir() else Path(self.root, "..", "..", "src", "proctor")
        prefix = "src/proctor" if self.target_name == "sdist" else "proctor"
        for name in SHIPPED:
            build_data["force_include"][str(source.resolve() / name)] = f"{prefix}/{name}"

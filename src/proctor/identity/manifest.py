"""An agent's manifest: what it is made of, and the digest that names it.

The digest is SHA-256 over the canonical JSON of the manifest (keys sorted, no
whitespace, UTF-8), written ``sha256:<hex>``. The tool list is a set: its order
does not change the digest, and a tool listed twice is refused.

>>> m = Manifest(model_id="claude-sonnet-4", weights_digest="sha256:" + "a" * 64,
...              system_prompt_digest="sha256:" + "b" * 64, tools=("git/git_log",),
...              dependency_lock_digest="sha256:" + "c" * 64)
>>> m.digest.startswith("sha256:")
True
>>> Manifest.from_json(m.as_json()) == m
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

from proctor.documents import read_yaml
from proctor.errors import IdentityError

__all__ = ["DIGEST_PATTERN", "Manifest", "canonical_json", "load_manifest"]

DIGEST_PATTERN = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
_MAX_TEXT = 256
_MAX_TOOLS = 1024
_MAX_FILE_BYTES = 256 * 1024
_DIGEST_FIELDS = ("weights_digest", "system_prompt_digest", "dependency_lock_digest")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes a manifest digest is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Manifest:
    """Model id, weights digest, system-prompt digest, tool list, dependency-lock digest."""

    model_id: str
    weights_digest: str
    system_prompt_digest: str
    tools: tuple[str, ...]
    dependency_lock_digest: str

    def __post_init__(self) -> None:
        _check_text("model_id", self.model_id)
        for name in _DIGEST_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not DIGEST_PATTERN.match(value):
                raise IdentityError(
                    "manifest_invalid",
                    f"manifest field `{name}` must be `sha256:` and 64 lowercase hex digits "
                    "(or sha384/sha512)"
                )
        if isinstance(self.tools, str) or not isinstance(self.tools, tuple | list):
            raise IdentityError("manifest_invalid",
                                "manifest field `tools` must be a list of tool ids")
        if len(self.tools) > _MAX_TOOLS:
            raise IdentityError("manifest_invalid", f"manifest lists more than {_MAX_TOOLS} tools")
        for tool in self.tools:
            _check_text("tools", tool)
        if len(set(self.tools)) != len(self.tools):
            duplicate = next(t for t in self.tools if self.tools.count(t) > 1)
            raise IdentityError("manifest_invalid", f"manifest lists tool `{duplicate}` twice")
        object.__setattr__(self, "tools", tuple(sorted(self.tools)))

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """A manifest from a JSON object with exactly the five fields."""
        if not isinstance(data, Mapping):
            raise IdentityError("manifest_invalid", "a manifest must be a JSON object")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise IdentityError("manifest_invalid", f"manifest has unknown field `{unknown[0]}`")
        missing = [n for n in names if n not in data]
        if missing:
            raise IdentityError("manifest_invalid", f"manifest is missing field `{missing[0]}`")
        tools = data["tools"]
        if not isinstance(tools, list):
            raise IdentityError("manifest_invalid",
                                "manifest field `tools` must be a list of tool ids")
        return cls(
            model_id=data["model_id"], weights_digest=data["weights_digest"],
            system_prompt_digest=data["system_prompt_digest"], tools=tuple(tools),
            dependency_lock_digest=data["dependency_lock_digest"],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "weights_digest": self.weights_digest,
            "system_prompt_digest": self.system_prompt_digest,
            "tools": list(self.tools),
            "dependency_lock_digest": self.dependency_lock_digest,
        }

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.as_json())).hexdigest()

    def differences(self, other: Manifest) -> dict[str, tuple[Any, Any]]:
        """The fields that differ, as ``{field: (self's value, other's value)}``."""
        mine, theirs = self.as_json(), other.as_json()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise IdentityError("manifest_invalid",
                            f"manifest field `{name}` must be a non-empty string")
    if len(value) > _MAX_TEXT or any(ord(c) < 0x20 for c in value):
        raise IdentityError(
            "manifest_invalid",
            f"manifest field `{name}` must be at most {_MAX_TEXT} printable characters"
        )


def load_manifest(path: Path) -> Manifest:
    """Read a manifest from a JSON or YAML file."""
    # YAML is a superset of JSON
    data = read_yaml(path, what="manifest file",
                     error=partial(IdentityError, "manifest_invalid"), max_bytes=_MAX_FILE_BYTES)
    return Manifest.from_json(data)

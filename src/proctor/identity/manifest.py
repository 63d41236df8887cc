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

Three optional fields are what a platform attests rather than what the agent says:
``image_digest`` (the container image), ``workflow_ref`` (the CI workflow that
built or runs it) and ``commit``. They are filled from workload-token claims by
configuration (see ``docs/identity.md``) and are part of the digest only when set,
so a manifest without them keeps its digest.

A manifest file may name ``system_prompt_file`` and ``dependency_lock_file``
(relative to the file) instead of the two digests: the digests are computed from
the files' bytes, so what runs is what is measured (:func:`load_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from proctor.documents import read_yaml
from proctor.errors import IdentityError

__all__ = ["ATTESTED_FIELDS", "DIGEST_PATTERN", "Manifest", "canonical_json", "file_digest",
           "load_manifest"]

DIGEST_PATTERN = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})\Z")
_MAX_TEXT = 256
_MAX_TOOLS = 1024
_MAX_FILE_BYTES = 256 * 1024
_DIGEST_FIELDS = ("weights_digest", "system_prompt_digest", "dependency_lock_digest")
ATTESTED_FIELDS = ("image_digest", "workflow_ref", "commit")
_MAX_MEASURED_BYTES = 256 * 1024 * 1024


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
    image_digest: str | None = None
    workflow_ref: str | None = None
    commit: str | None = None

    def __post_init__(self) -> None:
        _check_text("model_id", self.model_id)
        if self.image_digest is not None and (not isinstance(self.image_digest, str)
                                              or not DIGEST_PATTERN.match(self.image_digest)):
            raise IdentityError("manifest_invalid", "manifest field `image_digest` must be "
                                "`sha256:` and 64 lowercase hex digits (or sha384/sha512)")
        for name in ("workflow_ref", "commit"):
            if getattr(self, name) is not None:
                _check_text(name, getattr(self, name))
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
        missing = [n for n in names if n not in data and n not in ATTESTED_FIELDS]
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
            **{name: data[name] for name in ATTESTED_FIELDS if data.get(name) is not None},
        )

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "model_id": self.model_id,
            "weights_digest": self.weights_digest,
            "system_prompt_digest": self.system_prompt_digest,
            "tools": list(self.tools),
            "dependency_lock_digest": self.dependency_lock_digest,
        }
        for name in ATTESTED_FIELDS:  # only when attested: older digests stay as they were
            if getattr(self, name) is not None:
                document[name] = getattr(self, name)
        return document

    def attested(self, values: Mapping[str, str]) -> Manifest:
        """This manifest with the attested fields in ``values`` set."""
        return replace(self, image_digest=values.get("image_digest", self.image_digest),
                       workflow_ref=values.get("workflow_ref", self.workflow_ref),
                       commit=values.get("commit", self.commit))

    @property
    def digest(self) -> str:
        return _digest_of(self)

    def differences(self, other: Manifest) -> dict[str, tuple[Any, Any]]:
        """The fields that differ, as ``{field: (self's value, other's value)}``."""
        mine, theirs = self.as_json(), other.as_json()
        return {k: (mine.get(k), theirs.get(k)) for k in [*mine, *(t for t in theirs
                                                                   if t not in mine)]
                if mine.get(k) != theirs.get(k)}


@lru_cache(maxsize=4096)
def _digest_of(manifest: Manifest) -> str:
    # every grant check compares the agent's digest (a canonical dump and a SHA-256:
    # ~0.05 ms); equal manifests have equal digests, so one per distinct manifest
    return "sha256:" + hashlib.sha256(canonical_json(manifest.as_json())).hexdigest()


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise IdentityError("manifest_invalid",
                            f"manifest field `{name}` must be a non-empty string")
    if len(value) > _MAX_TEXT or any(ord(c) < 0x20 for c in value):
        raise IdentityError(
            "manifest_invalid",
            f"manifest field `{name}` must be at most {_MAX_TEXT} printable characters"
        )


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file's bytes (read in chunks, at most 256 MiB)."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                size += len(chunk)
                if size > _MAX_MEASURED_BYTES:
                    raise IdentityError("manifest_invalid",
                                        f"`{path.name}` is larger than 256 MiB")
                digest.update(chunk)
    except OSError as exc:
        raise IdentityError("manifest_invalid",
                            f"cannot read `{path.name}`: {exc.strerror}") from exc
    return "sha256:" + digest.hexdigest()


def load_manifest(path: Path) -> Manifest:
    """Read a manifest from a JSON or YAML file; ``system_prompt_file`` and
    ``dependency_lock_file`` (relative to it) are measured in place of the digests."""
    # YAML is a superset of JSON
    data = read_yaml(path, what="manifest file",
                     error=partial(IdentityError, "manifest_invalid"), max_bytes=_MAX_FILE_BYTES)
    if isinstance(data, dict):
        for named, field in (("system_prompt_file", "system_prompt_digest"),
                             ("dependency_lock_file", "dependency_lock_digest")):
            if named in data:
                if field in data:
                    raise IdentityError("manifest_invalid",
                                        f"manifest gives both `{named}` and `{field}`")
                target = data.pop(named)
                if not isinstance(target, str) or not target:
                    raise IdentityError("manifest_invalid",
                                        f"manifest field `{named}` must be a file path")
                data[field] = file_digest(path.parent / target)
    return Manifest.from_json(data)

"""A manifest names what an agent is made of; its digest changes when any part does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from proctor.errors import IdentityError
from proctor.identity import Manifest, load_manifest

from .factories import digest, manifest


def test_the_digest_is_sha256_over_sorted_compact_json() -> None:
    m = manifest()
    canonical = json.dumps(m.as_json(), sort_keys=True, separators=(",", ":")).encode()
    assert m.digest == "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_the_order_of_tools_does_not_change_the_digest() -> None:
    assert manifest(tools=("b", "a")).digest == manifest(tools=("a", "b")).digest
    assert manifest(tools=("b", "a")).tools == ("a", "b")


@pytest.mark.parametrize("change", [
    {"model_id": "claude-opus-4"}, {"weights_digest": digest("d")},
    {"system_prompt_digest": digest("e")}, {"tools": ("git/git_log",)},
    {"dependency_lock_digest": digest("f")},
])
def test_any_changed_field_changes_the_digest(change: dict[str, Any]) -> None:
    assert manifest(**change).digest != manifest().digest


def test_differences_name_the_changed_fields() -> None:
    assert manifest().differences(manifest(model_id="other")) == {
        "model_id": ("claude-sonnet-4", "other")}


@pytest.mark.parametrize("change", [
    {"model_id": ""}, {"model_id": "x" * 257}, {"model_id": "a\nb"}, {"model_id": 7},
    {"weights_digest": "sha256:abc"}, {"weights_digest": "md5:" + "a" * 32},
    {"system_prompt_digest": "sha256:" + "A" * 64}, {"tools": "git/git_log"},
    {"tools": ("a", "a")}, {"tools": ("",)}, {"tools": tuple(str(i) for i in range(1025))},
    {"weights_digest": digest("d") + "\n"},  # a digest's pattern holds to the end
])
def test_an_invalid_manifest_is_refused_with_manifest_invalid(change: dict[str, Any]) -> None:
    with pytest.raises(IdentityError) as caught:
        manifest(**change)
    assert caught.value.code == "manifest_invalid"


@pytest.mark.parametrize("document", [
    [], {"model_id": "x"}, {**manifest().as_json(), "extra": 1},
    {**manifest().as_json(), "tools": "git"},
])
def test_a_document_that_is_not_exactly_a_manifest_is_refused(document: Any) -> None:
    with pytest.raises(IdentityError):
        Manifest.from_json(document)


def test_a_manifest_file_may_be_yaml_or_json(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest().as_json()))
    (tmp_path / "m.json").write_text(json.dumps(manifest().as_json()))
    assert load_manifest(tmp_path / "m.yaml") == load_manifest(tmp_path / "m.json") == manifest()


def test_an_oversized_or_unreadable_manifest_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(" " * (256 * 1024 + 1))
    for path in (big, tmp_path / "missing.json"):
        with pytest.raises(IdentityError):
            load_manifest(path)

"""The documentation holds together: every relative link in docs/*.md and the
README points at a file that exists (and at a heading that exists, for an
anchor), and every page is in mkdocs.yml's nav, which names only real pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from .markdown import DOCS, ROOT, anchors, links, slugify

PAGES = sorted(DOCS.glob("*.md"))
SOURCES = [ROOT / "README.md", *PAGES]


def _broken_links(source: Path, docs: Path = DOCS) -> Iterator[str]:
    text = source.read_text(encoding="utf-8")
    for line, target in links(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        where = f"{source.name}:{line}: `{target}`"
        path_part, _, anchor = target.partition("#")
        path = (source.parent / unquote(path_part)).resolve() if path_part else source
        if not path.exists():
            yield f"{where} points at a file that does not exist"
            continue
        if source.parent == docs and not path.is_relative_to(docs):
            yield f"{where} leaves docs/ (the site cannot link there; name the path in code)"
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(
                path.read_text(encoding="utf-8")):
            yield f"{where} names a heading that does not exist"


@pytest.mark.parametrize("source", SOURCES, ids=[str(s.relative_to(ROOT)) for s in SOURCES])
def test_every_relative_link_resolves(source: Path) -> None:
    assert list(_broken_links(source)) == []


def _nav_pages(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_pages(value)


def _nav() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs"
    return list(_nav_pages(config["nav"]))


def test_every_page_is_in_the_nav_exactly_once() -> None:
    nav = _nav()
    assert sorted(nav) == sorted(p.name for p in PAGES)


def test_the_index_lists_every_page() -> None:
    index = {target.partition("#")[0]
             for _line, target in links((DOCS / "README.md").read_text(encoding="utf-8"))}
    assert sorted(p.name for p in PAGES if p.name != "README.md" and p.name not in index) == []


def test_broken_links_anchors_and_links_out_of_docs_are_reported(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "outside.md").write_text("# Outside\n")
    (docs / "b.md").write_text("# B\n\n## The lease tree and revocation\n")
    (docs / "a.md").write_text(
        "[ok](b.md#the-lease-tree-and-revocation) [`code` text](b.md)\n"
        "[missing](nowhere.md) [anchor](b.md#no-such-heading) [out](../outside.md)\n"
        "`[not a link](nowhere.md)`\n```\n[not a link either](nowhere.md)\n```\n")
    problems = list(_broken_links(docs / "a.md", docs))
    assert [p.split(": ", 1)[0] for p in problems] == ["a.md:2"] * 3
    assert "does not exist" in problems[0]
    assert "heading" in problems[1]
    assert "leaves docs/" in problems[2]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("The order of one decision", "the-order-of-one-decision"),
    ("Own key (`own_key`)", "own-key-own_key"),
    ("Using a grant: proof of possession", "using-a-grant-proof-of-possession"),
    ("Tasks, grants, delegation and revocation", "tasks-grants-delegation-and-revocation"),
])
def test_anchors_are_made_as_mkdocs_makes_them(heading: str, anchor: str) -> None:
    assert slugify(heading) == anchor

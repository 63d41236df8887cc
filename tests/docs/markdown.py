"""Reading the documentation's Markdown the way the tests need it: sections, fenced
blocks, links and headings' anchors (as MkDocs' default ``toc`` extension makes them)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "Section", "anchors", "blocks", "links", "sections", "slugify"]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
# [text](target) and ![alt](target), not inside code; the target stops at space or ')'
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced code block: its language (info string) and text."""

    language: str
    text: str
    line: int


@dataclass(frozen=True, slots=True)
class Section:
    """The text under one ``## `` heading, up to the next one."""

    title: str
    blocks: tuple[Block, ...]


def blocks(text: str) -> list[Block]:
    """Every fenced code block of ``text``, in order."""
    out: list[Block] = []
    fence: str | None = None
    language, start = "", 0
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence, language, start, body = match.group(1), match.group(2), number, []
        elif fence is not None and line.strip() == fence:
            out.append(Block(language, "\n".join(body) + "\n", start))
            fence = None
        elif fence is not None:
            body.append(line)
    return out


def sections(text: str) -> list[Section]:
    """``text`` cut at its ``## `` headings (outside code blocks)."""
    found: list[Section] = []
    title, fenced = "", False
    lines: list[str] = []
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            found.append(Section(title, tuple(blocks("\n".join(lines)))))
            title, lines = line[3:].strip(), []
        else:
            lines.append(line)
    found.append(Section(title, tuple(blocks("\n".join(lines)))))
    return found


def _prose(text: str) -> list[tuple[int, str]]:
    """The lines of ``text`` outside fenced code."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """``(line, target)`` of every Markdown link in ``text``'s prose."""
    # inline code is not a link, but may be a link's text: keep a placeholder
    return [(n, m.group(1)) for n, line in _prose(text)
            for m in _LINK.finditer(_INLINE_CODE.sub("code", line))]


def slugify(heading: str) -> str:
    """The anchor of a heading as Python-Markdown's ``toc`` makes it (MkDocs' default)."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(text: str) -> set[str]:
    """The anchors of every heading of ``text`` (duplicates get ``_1``, ``_2``, …)."""
    seen: set[str] = set()
    for _number, line in _prose(text):
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = base = slugify(match.group(2))
        count = 0
        while slug in seen:
            count += 1
            slug = f"{base}_{count}"
        seen.add(slug)
    return seen

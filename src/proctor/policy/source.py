"""Reading ``.cedar`` files into located policies: ids, annotations, lines.

Cedar's parser reports *what* is wrong but not *where*; proctor splits each file
into statements itself (a small scanner that knows strings and ``//``
comments), so every policy and every error is reported as ``file:line:column``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cedarpy
from cedarpy import pst

from proctor.errors import Diagnostic, PolicyValidationError

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "LocatedPolicy",
    "Statement",
    "forget_parsed",
    "nests_too_deep",
    "parse_sources",
    "read_policy_dir",
    "split_statements",
]

MAX_FILE_BYTES = 1 << 20
MAX_FILES = 1000
# Cedar's parser and validator recurse once per level of nesting and, a few hundred
# levels down, overflow the thread's stack, which kills the process: deeper policies are
# refused before Cedar sees them. Levels are open brackets plus the statement's `if`s so far.
MAX_NESTING = 100
# A chain of operators nests without brackets: `a || b || ...`, `x.a.b.c`, `x["a"]["b"]`
# are a level of Cedar's tree per operator. cedarpy refuses a tree over 100 levels when it
# hands it over, but its own walk overflows the stack past about 1,500 (a segfault). Every
# operator, member access, index and call counts as a level until its bracket closes: an
# over-estimate (`a.b == c.d` counts 3, Cedar's tree has 2), hence a cap well above 100.
MAX_CHAIN = 500
_EOF = "unexpected end of input"
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"?|//[^\n]*|[(\[{]|[)\]}]|\bif\b'
                      r'|&&|\|\||[=!<>]=|[-+*<>.]|\b(?:in|has|like|is)\b')


@dataclass(frozen=True, slots=True)
class Statement:
    """The text of one policy statement and where it starts."""

    text: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class LocatedPolicy:
    """A parsed policy with its proctor id, source position and annotations."""

    id: str
    file: str
    line: int
    column: int
    text: str
    node: pst.Template

    @property
    def effect(self) -> str:
        return self.node.effect

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.node.annotations


def read_policy_dir(directory: Path) -> dict[str, str]:
    """Read every ``*.cedar`` file under ``directory`` as ``{relative path: text}``.

    Raises :class:`PolicyValidationError` for unreadable, oversized or non-UTF-8 files.
    """
    if not directory.is_dir():
        raise PolicyValidationError(
            [Diagnostic(str(directory), 0, 0, "policy directory does not exist")]
        )
    paths = sorted(p for p in directory.rglob("*.cedar") if p.is_file())
    if len(paths) > MAX_FILES:
        raise PolicyValidationError(
            [Diagnostic(str(directory), 0, 0, f"more than {MAX_FILES} policy files")]
        )
    sources: dict[str, str] = {}
    problems: list[Diagnostic] = []
    for path in paths:
        name = path.relative_to(directory).as_posix()
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.append(
                Diagnostic(name, 1, 1, f"file is {size} bytes, over the {MAX_FILE_BYTES} limit")
            )
            continue
        data = path.read_bytes()
        try:
            sources[name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            problems.append(Diagnostic(name, line, column, "file is not valid UTF-8"))
    if problems:
        raise PolicyValidationError(problems)
    return sources


# Tokens that matter for splitting: string literals (with escapes), comments,
# semicolons, and the first non-blank character of a statement.
_SPLIT = re.compile(r'"(?:[^"\\]|\\.)*"?|//[^\n]*|;|[^\s";/]+|/')


def split_statements(text: str) -> Iterator[Statement]:
    """Yield each ``;``-terminated statement (and any unterminated tail)."""
    start: int | None = None
    counted, line = 0, 1  # newlines are counted up to `counted`
    for match in _SPLIT.finditer(text):
        piece = match.group()
        if piece.startswith("//"):
            continue
        if start is None:
            start = match.start()
            line += text.count("\n", counted, start)
            counted = start
        if piece == ";":
            yield Statement(text[start:match.end()], line, start - text.rfind("\n", 0, start))
            start = None
    if start is not None:
        yield Statement(text[start:], line, start - text.rfind("\n", 0, start))


def parse_sources(sources: Mapping[str, str]) -> list[LocatedPolicy]:
    """Parse every file; ids come from ``@id`` or are ``<file>#<n>``.

    Raises :class:`PolicyValidationError` listing every syntax error and duplicate id.
    """
    policies: list[LocatedPolicy] = []
    problems: list[Diagnostic] = []
    seen: dict[str, LocatedPolicy] = {}
    for name, text in sources.items():
        statements = list(split_statements(text))
        deep = [(s, problem) for s in statements
                if (problem := _nesting_problem(s.text)) is not None]
        if deep:
            problems.extend(Diagnostic(name, s.line, s.column, problem) for s, problem in deep)
            continue
        nodes = _parse_file(name, text, statements, problems)
        if nodes is None:
            continue
        for index, (stmt, node) in enumerate(zip(statements, nodes, strict=True), start=1):
            if isinstance(node, Diagnostic):
                problems.append(node)
                continue
            pid = node.annotations.get("id") or f"{name}#{index}"
            located = LocatedPolicy(
                pid, name, stmt.line, stmt.column, stmt.text, dataclasses.replace(node, id=pid)
            )
            if pid in seen:
                first = seen[pid]
                problems.append(
                    Diagnostic(
                        name, stmt.line, stmt.column,
                        f"duplicate policy id `{pid}` (first at {first.file}:{first.line})", pid,
                    )
                )
                continue
            seen[pid] = located
            policies.append(located)
    if problems:
        raise PolicyValidationError(problems)
    return policies


def nests_too_deep(text: str) -> bool:
    """Whether a statement of the file ``text`` nests past what Cedar may be given (see
    :data:`MAX_NESTING`, :data:`MAX_CHAIN`): such a file must not reach Cedar at all, on
    any thread (``parse_sources`` refuses it with its place)."""
    return any(_nesting_problem(s.text) is not None for s in split_statements(text))


def _nesting_problem(text: str) -> str | None:
    """Why the statement ``text`` nests too deep for Cedar, or None."""
    depth = ifs = chained = 0
    levels = [0]  # per open bracket: the operators counted at its level so far
    for match in _NESTING.finditer(text):
        piece = match.group()
        if piece[0] in "\"/":  # a string or a comment
            continue
        if piece in ("(", "[", "{"):
            depth += 1
            chained += 1  # a call, an index or a literal: a level of the chain it is in
            levels[-1] += 1
            levels.append(0)
        elif piece in (")", "]", "}"):
            depth -= 1
            if len(levels) > 1:
                chained -= levels.pop()
        elif piece == "if":
            ifs += 1
        else:
            chained += 1
            levels[-1] += 1
        if depth + ifs > MAX_NESTING:
            return f"the policy nests deeper than {MAX_NESTING} levels (brackets and `if`s)"
        if chained + ifs > MAX_CHAIN:
            return (f"the policy chains more than {MAX_CHAIN} operators, member accesses "
                    "and brackets in one expression")
    return None


def _parse_file(
    name: str, text: str, statements: list[Statement], problems: list[Diagnostic]
) -> list[pst.Template | Diagnostic] | None:
    """One node per statement; the fast path parses the file once."""
    nodes = _parse_whole(text)
    if nodes is not None and len(nodes) == len(statements):
        return list(nodes)
    return [_parse_statement(name, stmt) for stmt in statements]


@functools.lru_cache(maxsize=32)
def _parse_whole(text: str) -> tuple[pst.Template, ...] | None:
    """The nodes of a file parsed at once, in order; None if it does not parse or holds a
    template (the caller then parses statement by statement, to locate each problem).

    Kept per text for the process (nodes are frozen values): a runtime's policy files
    are parsed again, unchanged, at every open, each time the engine's catalog grows, and
    by every revision loaded from the store. :func:`forget_parsed` empties it, for a
    benchmark of a cold load."""
    try:
        parsed = cedarpy.PolicySet.from_str(text).to_pst()
    except ValueError:
        return None
    if parsed.templates:
        return None
    return tuple(parsed.static_policies[f"policy{i}"]
                 for i in range(len(parsed.static_policies)))


def forget_parsed() -> None:
    """Empty the parses kept per file text, so that the next parse of a file is a cold one."""
    _parse_whole.cache_clear()


def _parse_statement(name: str, stmt: Statement) -> pst.Template | Diagnostic:
    try:
        parsed = cedarpy.PolicySet.from_str(stmt.text).to_pst()
    except ValueError as exc:
        offset = _locate_error(stmt.text)
        line = stmt.line + stmt.text.count("\n", 0, offset)
        last_nl = stmt.text.rfind("\n", 0, offset)
        column = offset - last_nl if last_nl >= 0 else stmt.column + offset
        return Diagnostic(name, line, column, str(exc))
    if parsed.templates:
        return Diagnostic(name, stmt.line, stmt.column, "policy templates are not supported")
    if len(parsed.static_policies) != 1:
        return Diagnostic(name, stmt.line, stmt.column, "expected exactly one policy")
    return next(iter(parsed.static_policies.values()))


def _locate_error(text: str) -> int:
    """The offset of the token where parsing first fails.

    A prefix that ends before the error parses as "unexpected end of input";
    the shortest prefix failing otherwise ends at the offending token.
    """
    cuts = [i for i in range(1, len(text) + 1) if i == len(text) or text[i].isspace()]
    lo, hi = 0, len(cuts) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            cedarpy.PolicySet.from_str(text[: cuts[mid]])
            failed_early = False
        except ValueError as exc:
            failed_early = str(exc) != _EOF
        if failed_early:
            hi = mid
        else:
            lo = mid + 1
    end = cuts[lo]
    token_start = end
    while token_start > 0 and not text[token_start - 1].isspace():
        token_start -= 1
    return token_start

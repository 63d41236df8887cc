"""Reading JSON, YAML and TOML that comes from outside: a size cap, a depth cap, one error.

Python's parsers recurse once per level of nesting, so a few kilobytes of ``[``
raise ``RecursionError`` (which is not a ``ValueError``), and YAML aliases let a
small document stand for an enormous one. Every parse of a message, a request
body, a token part or a file proctor did not write itself goes through here,
in this order:

1. the size: at most ``max_bytes`` (characters, for text);
2. the nesting: at most ``max_depth`` arrays and objects inside each other
   (:data:`MAX_DEPTH`); JSON is measured before it is parsed, YAML as it is
   composed, TOML once parsed (its parser's recursion is caught);
3. the syntax: YAML with the safe loader and no aliases (``*name``); in JSON and YAML a
   key given twice in one object is refused (both formats' parsers keep the last, other
   readers may keep the first: a reviewer, or the server a message is relayed to, would
   see one value and proctor decide on another).

Any failure is a :class:`~proctor.errors.DocumentError` whose code says which
(``document_too_large``, ``document_too_deep``, ``document_malformed``,
``document_alias_refused``) and whose message is one line naming ``what``;
``RecursionError`` and ``MemoryError`` inside a parser are among them. The
``read_*`` functions read a file with the same caps and raise the caller's own
error (``ConfigError``, an ``IdentityError`` with ``manifest_invalid``...) with that
message.

>>> parse_json(b'{"a": [1, 2]}', what="the body")
{'a': [1, 2]}
>>> parse_json(b"[" * 100, what="the body")
Traceback (most recent call last):
proctor.errors.DocumentError: the body nests deeper than 64 levels
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from proctor.errors import DocumentError, ProctorError
from proctor.files import read_capped

if TYPE_CHECKING:
    import yaml

# what a file loader raises, given the message: a family's class, or one with its code
_ErrorOf = Callable[[str], ProctorError]

__all__ = ["MAX_BYTES", "MAX_DEPTH", "check_json_nesting", "check_json_text", "check_nesting",
           "is_unicode_text", "parse_json",
           "parse_toml", "parse_yaml", "read_json", "read_toml", "read_yaml", "repeated_key"]

MAX_BYTES = 1 << 20
# Deeper than any configuration, scope, manifest or tool argument needs, and far from
# where a recursive parser, encoder, validator or Cedar would run out of stack.
MAX_DEPTH = 64
# A JSON string (an unterminated one runs to the end): brackets inside it do not count.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENING = (ord("["), ord("{"))
_UTF8 = ("utf-8", "utf-8-sig")


def check_json_nesting(data: bytes | str, *, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``document_too_deep`` if the JSON text ``data`` nests more than
    ``max_depth`` arrays and objects, without parsing it; ``document_malformed`` for
    bytes in UTF-16 or UTF-32, which the byte scan cannot read (nor RFC 8259 allows)."""
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= max_depth:
            return  # cannot be deeper than it has brackets: the usual case, and cheap
        raw = data.encode("utf-8", "surrogatepass")
    else:
        if json.detect_encoding(data) not in _UTF8:
            raise DocumentError("document_malformed", f"{what} is not UTF-8")
        if data.count(b"[") + data.count(b"{") <= max_depth:
            return
        raw = data
    # strings out, then only the brackets: C-speed passes, then one per bracket
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            if depth > max_depth:
                raise _too_deep(what, max_depth)
        else:
            depth -= 1


def check_nesting(value: Any, *, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``document_too_deep`` if the parsed ``value`` nests more than
    ``max_depth`` mappings and lists; walks without recursing."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > max_depth:
            raise _too_deep(what, max_depth)
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list | tuple))


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def check_json_text(data: bytes | str, *, what: str) -> None:
    """Raise ``document_malformed`` if the JSON text ``data`` escapes a lone surrogate
    (``"\\ud800"``: valid JSON, a Python string, but no Unicode text: nothing can encode
    it as UTF-8, neither the store, nor the audit log, nor an answer naming it). Only
    text that escapes a surrogate at all is parsed to look (a pair is an emoji)."""
    if isinstance(data, str):
        if not is_unicode_text(data):
            raise _lone_surrogate(what)
        if _SURROGATE_ESCAPE.search(data) is None:
            return
    elif _SURROGATE_ESCAPE_BYTES.search(data) is None:
        return
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return  # not valid JSON: the parser that reads it says so
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_unicode_text(item):
                raise _lone_surrogate(what)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def is_unicode_text(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a Python string may hold a lone surrogate
    (``"\ud800"``), which no store, audit log or answer can hold."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(what: str) -> DocumentError:
    return DocumentError("document_malformed", f"{what} holds a lone surrogate "
                         "(\\ud800-\\udfff not in a pair): not Unicode text")


def repeated_key(data: bytes) -> str | None:
    """The first key JSON text ``data`` gives twice in one object, if any, as text an
    answer can carry; None for text that is not JSON too (its own parser says so).

    For a reader that parses the text itself but keeps the last of a repeated key
    (FastAPI's request bodies): it costs one more parse of the text."""
    try:
        _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except _RepeatedKeyError as exc:
        return exc.key[:100].encode("utf-8", "backslashreplace").decode("utf-8")
    except (ValueError, RecursionError, MemoryError):
        return None
    return None


def parse_json(data: bytes | str, *, what: str, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``data``; ``what`` names it in the error (``the body``)."""
    _check_size(data, what, max_bytes)
    check_json_nesting(data, what=what, max_depth=max_depth)
    try:
        if not isinstance(data, str):  # as json.loads reads bytes
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        return _DECODER.decode(data)
    except _RepeatedKeyError as exc:
        # the key as text any answer can carry: a lone surrogate escaped, not kept
        key = exc.key[:100].encode("utf-8", "backslashreplace").decode("utf-8")
        raise DocumentError("document_malformed", f"{what} gives the key `{key}` twice in "
                            "one object; keys must be unique") from None
    except RecursionError:
        raise _too_deep(what, max_depth) from None
    except MemoryError:
        raise _too_large(what, max_bytes) from None
    except UnicodeDecodeError:
        raise DocumentError("document_malformed", f"{what} is not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise DocumentError("document_malformed", f"{what} is not valid JSON: "
                            f"{_first_line(exc)}") from None


class _RepeatedKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict, or :class:`_RepeatedKeyError` if a name is given twice
    (``json`` would keep the last; RFC 8259 leaves it to the reader, RFC 7515 lets a JOSE
    reader refuse it)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKeyError(key)
            seen.add(key)
    return value


# One decoder for every parse: ``json.loads`` given a hook builds a decoder per call, which
# cost more than the parse of a token's part (2.0 us -> 4.5 us; 2.4 us with this one).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def parse_yaml(data: bytes | str, *, what: str, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> Any:
    """The value of the one YAML document in ``data`` (JSON is YAML too), read with
    the safe loader; an alias is refused."""
    _check_size(data, what, max_bytes)
    text = _text(data, what)
    # PyYAML is imported on first use: the agent-side SDK reads no YAML and does without it
    import yaml

    try:  # libyaml encodes the text to UTF-8 here: a lone surrogate (a command-line
        # argument holds undecodable bytes so) cannot be
        loader = _bounded_loader()(text, what, max_depth)
    except UnicodeEncodeError:
        raise DocumentError("document_malformed", f"{what} is not UTF-8 text "
                            "(it holds a lone surrogate)") from None
    except yaml.YAMLError as exc:  # PyYAML's own reader (no libyaml) checks it here
        raise DocumentError("document_malformed", f"{what} is not valid YAML: "
                            f"{_first_line(exc)}") from None
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        if exc.problem and "exceeded maximum nesting depth" in exc.problem:
            # libyaml's own cap (1,000 levels): its scanner reads a flow collection ahead
            raise _too_deep(what, max_depth) from None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise DocumentError("document_malformed", f"{what} is not valid YAML: "
                            f"{problem[:200]}{where}") from None
    except yaml.YAMLError as exc:
        raise DocumentError("document_malformed", f"{what} is not valid YAML: "
                            f"{_first_line(exc)}") from None
    except RecursionError:
        raise _too_deep(what, max_depth) from None
    except MemoryError:
        raise _too_large(what, max_bytes) from None
    except ValueError as exc:  # a scalar the safe constructor cannot convert
        raise DocumentError("document_malformed", f"{what} is not valid YAML: "
                            f"{_first_line(exc)}") from None
    finally:
        loader.dispose()


def parse_toml(data: bytes | str, *, what: str, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The table of the TOML document ``data``."""
    _check_size(data, what, max_bytes)
    text = _text(data, what)
    try:
        table = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(what, max_depth) from None
    except MemoryError:
        raise _too_large(what, max_bytes) from None
    except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
        raise DocumentError("document_malformed", f"{what} is not valid TOML: "
                            f"{_first_line(exc)}") from None
    check_nesting(table, what=what, max_depth=max_depth)
    return table


def read_json(path: Path, *, what: str, error: _ErrorOf, name: str | None = None,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in file ``path``; any problem raises ``error`` naming
    ``what`` and the file (``name``, else its path): ``key set `keys/agents.jwks```."""
    raw = read_capped(path, max_bytes, what, error, name=name)
    try:
        return parse_json(raw, what=f"{what} `{name or path}`", max_bytes=max_bytes,
                          max_depth=max_depth)
    except DocumentError as exc:
        raise error(exc.message) from exc


def read_yaml(path: Path, *, what: str, error: _ErrorOf, name: str | None = None,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The YAML (or JSON) value in file ``path``, as :func:`read_json`."""
    raw = read_capped(path, max_bytes, what, error, name=name)
    try:
        return parse_yaml(raw, what=f"{what} `{name or path}`", max_bytes=max_bytes,
                          max_depth=max_depth)
    except DocumentError as exc:
        raise error(exc.message) from exc


def read_toml(path: Path, *, what: str, error: _ErrorOf, name: str | None = None,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The TOML table in file ``path``, as :func:`read_json`."""
    raw = read_capped(path, max_bytes, what, error, name=name)
    try:
        return parse_toml(raw, what=f"{what} `{name or path}`", max_bytes=max_bytes,
                          max_depth=max_depth)
    except DocumentError as exc:
        raise error(exc.message) from exc


@functools.cache
def _bounded_loader() -> Callable[[str, str, int], yaml.SafeLoader]:
    import yaml

    class _BoundedLoader(_safe_loader()):  # type: ignore[misc]
        """The safe loader, counting depth as it composes and refusing aliases: the
        composer recurses per level, and an alias is a reference that later walks of
        the value (masking, hashing, JSON) would expand."""

        def __init__(self, text: str, what: str, max_depth: int) -> None:
            super().__init__(text)
            self._what = what
            self._max_depth = max_depth
            self._depth = 0

        def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
            if self.check_event(yaml.AliasEvent):
                line = self.peek_event().start_mark.line + 1
                raise DocumentError("document_alias_refused", (
                    f"{self._what} uses a YAML alias (line {line}); aliases are not allowed"))
            if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
                return cast("yaml.Node | None", super().compose_node(parent, index))
            self._depth += 1
            try:
                if self._depth > self._max_depth:
                    raise _too_deep(self._what, self._max_depth)
                return cast("yaml.Node | None", super().compose_node(parent, index))
            finally:
                self._depth -= 1

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
            """A key given twice is refused: YAML says keys are unique, PyYAML kept the
            last, so a reader (a reviewer, another tool) could see one value and proctor
            take another. Merge keys (``<<``) may be overridden, as YAML says."""
            seen: set[Any] = set()
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the constructor says so below
                    continue
                if repeated:
                    raise DocumentError("document_malformed", (
                        f"{self._what} gives the key `{str(key)[:100]}` twice (line "
                        f"{key_node.start_mark.line + 1}); keys must be unique"))
            return super().construct_mapping(node, deep)

    return _BoundedLoader


def _safe_loader() -> type[yaml.SafeLoader]:
    """PyYAML's safe loader, its scanner and parser from libyaml when PyYAML has it (a
    seventh of the time: a runtime reads its tool catalog and entities at every open).
    The composer stays PyYAML's own, in Python, so that every node passes through
    ``compose_node``; libyaml's parser keeps its nesting on a heap stack, not the C one."""
    import yaml

    try:
        from yaml.cyaml import CParser  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - PyYAML built without libyaml
        return yaml.SafeLoader
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class _LibyamlSafeLoader(Composer, CParser, SafeConstructor, Resolver):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    return _LibyamlSafeLoader  # type: ignore[return-value]


def _check_size(data: bytes | str, what: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise _too_large(what, max_bytes)


def _text(data: bytes | str, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("document_malformed", f"{what} is not UTF-8") from None


def _too_deep(what: str, max_depth: int) -> DocumentError:
    return DocumentError("document_too_deep", f"{what} nests deeper than {max_depth} levels")


def _too_large(what: str, max_bytes: int) -> DocumentError:
    return DocumentError("document_too_large", f"{what} is larger than {max_bytes} bytes")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

"""How the command line's values are coerced: without pydantic unless a value needs it.

typer (0.29) coerces each parameter of the command it runs through a pydantic
``TypeAdapter`` built for it, even for a parameter left at its default: importing
pydantic and building the adapters of one command costs ~0.1 to 0.2 s of CPU, in every
``proctor`` process, for options that are nearly all strings and flags. Here a string
(or a list of strings) is coerced as typer's own adapter coerces it (:func:`text`, as
its ``_parse_cli_str``, which pydantic's ``str`` then passes unchanged; that module
imports pydantic), a path as pydantic makes it and typer checks it, and any other
parameter builds typer's adapter on its first value (but for a plain integer in
range), so a default (``None``, or a number) costs nothing. What a value becomes, and
every error, are typer's.

:func:`install` replaces ``typer.core.build_runtime_param``; a test checks that it is
the one typer calls and that every parameter of every command coerces as typer's
adapter does. The lock file pins typer 0.29; installed with another typer, whose
internals this module does not find (``ImportError`` or ``AttributeError`` on import,
or no ``build_runtime_param`` to replace), the CLI leaves coercion to typer
(``proctor.cli.main``): slower to start, never broken.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

import typer.core
from typer import _coercion
from typer._click import _compat
from typer._param_types import coerce_cli_path

if TYPE_CHECKING:
    from typer._click import Context
    from typer.core import _TyperParameter

__all__ = ["build_runtime_param", "install", "is_installed", "text"]

_typer_build = _coercion.build_runtime_param
_DIGITS = re.compile(r"-?[0-9]{1,18}")  # an integer written plainly (ASCII digits)


def text(value: Any) -> str:
    """A value of the command line as a string, as ``typer._adapters._parse_cli_str``
    makes it (bytes decoded as typer decodes them)."""
    if not isinstance(value, bytes):
        return str(value)
    encoding = _compat._get_argv_encoding()
    try:
        return value.decode(encoding)
    except UnicodeError:
        fs_encoding = sys.getfilesystemencoding()
        if fs_encoding != encoding:
            try:
                return value.decode(fs_encoding)
            except UnicodeError:
                pass
        return value.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Text(_coercion.RuntimeParam):
    """A string, or each string of a list, as typer's adapter makes it."""

    is_list: bool

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        if not self.is_list:
            return text(value)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [text(item) for item in items]


@dataclass(frozen=True)
class _OnFirstValue(_coercion.RuntimeParam):
    """typer's own coercion, built when a value comes (``None`` never reaches here), but
    for an integer written plainly and a number that is one already (a default), when
    in range (out of range, typer's adapter says why)."""

    descriptor: _coercion.TypeDescriptor
    built: list[_coercion.RuntimeParam] = field(default_factory=list, compare=False)

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        info = self.parameter_info
        if self.annotation is int and isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)  # as pydantic reads it; anything else, pydantic reads
        if (self.annotation in (int, float) and type(value) is self.annotation
                and (info.min is None or value >= info.min)
                and (info.max is None or value <= info.max)):
            return value  # a number in range: pydantic returns it as it is
        if not self.built:
            self.built.append(_typer_build(self.descriptor))
        return self.built[0]._coerce_value(value, param=param, ctx=ctx)


@dataclass(frozen=True)
class _Path(_OnFirstValue):
    """A path: a string made a ``Path`` as pydantic makes it, then typer's own checks
    (``exists=`` and the like)."""

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        if isinstance(value, str) and value:
            return coerce_cli_path(Path(value), self.parameter_info, path_type=Path,
                                   param=param, ctx=ctx)
        return super()._coerce_value(value, param, ctx)


def _is_plain(descriptor: _coercion.TypeDescriptor) -> bool:
    return descriptor.file_annotation is None and descriptor.parameter_info.parser is None


def build_runtime_param(descriptor: _coercion.TypeDescriptor) -> _coercion.RuntimeParam:
    """What typer calls for each parameter of the command it runs (see the module)."""
    annotation: Any = descriptor.annotation
    if _is_plain(descriptor):
        if annotation is str:
            return _Text(descriptor.parameter_info, annotation, is_list=False)
        if get_origin(annotation) is list and get_args(annotation) == (str,):
            return _Text(descriptor.parameter_info, annotation, is_list=True)
        if annotation is Path and descriptor.parameter_info.path_type is None:
            return _Path(descriptor.parameter_info, annotation, descriptor=descriptor)
    return _OnFirstValue(descriptor.parameter_info, annotation, descriptor=descriptor)


def install() -> None:
    """Coerce the command line's values as the module says; with a typer that does not
    call ``typer.core.build_runtime_param`` (not 0.29), nothing changes."""
    if hasattr(typer.core, "build_runtime_param"):
        typer.core.build_runtime_param = build_runtime_param


def is_installed() -> bool:
    return typer.core.build_runtime_param is build_runtime_param  # type: ignore[attr-defined]

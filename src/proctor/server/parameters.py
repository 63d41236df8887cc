"""Query parameters read strictly.

A boolean query parameter is ``true`` or ``false``, nothing else: FastAPI's default
reading of a ``bool`` also takes ``1``/``0``, ``yes``/``no``, ``on``/``off`` and any
letter case, so ``?newest_first=off`` or ``?pending=YES`` meant something other than
what a reader of the URL (or of a proxy's log) would take it for. Anything else is 422
``request_invalid`` naming the parameter, as every other malformed parameter is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BeforeValidator

__all__ = ["Flag"]

_FLAGS = {"true": True, "false": False}


def _flag(value: Any) -> Any:
    if isinstance(value, bool):  # a default, not a query string
        return value
    if isinstance(value, str) and value in _FLAGS:
        return _FLAGS[value]
    raise ValueError("must be `true` or `false`")


Flag = Annotated[bool, BeforeValidator(_flag), Query()]
"""A boolean query parameter: ``true`` or ``false``."""

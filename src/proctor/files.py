"""Reading a small input file with a size cap, so an oversized one is refused before
it is read whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proctor.errors import ProctorError

__all__ = ["read_capped"]


def read_capped(path: Path, limit: int, what: str, error: Callable[[str], ProctorError], *,
                name: str | None = None) -> bytes:
    """The bytes of ``path``; raise ``error`` naming ``what`` and the file (``name``,
    else its path) if it is unreadable or over ``limit`` bytes."""
    shown = name if name is not None else str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} `{shown}` cannot be read: {exc.strerror}") from exc
    if len(raw) > limit:
        raise error(f"{what} `{shown}` is larger than {limit} bytes")
    return raw

"""The console's static files: one stylesheet, one script, the mark. Read once; served
with a fixed type, ``nosniff`` and the console's CSP; nothing else under ``static/``
is reachable."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter
from starlette.responses import Response

from proctor.server.console.web import HEADERS, HERE

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_FILES = {"console.css": "text/css; charset=utf-8",
          "console.js": "text/javascript; charset=utf-8",
          "mark.svg": "image/svg+xml"}


@cache
def _read(name: str) -> bytes:
    return (HERE / "static" / name).read_bytes()


@router.get("/console/static/{name}")
def static_file(name: str) -> Response:
    media = _FILES.get(name)
    if media is None:
        return Response(b"not found", status_code=404, media_type="text/plain",
                        headers=HEADERS)
    headers = {**HEADERS, "Cache-Control": "public, max-age=300"}
    return Response(_read(name), media_type=media, headers=headers)

"""The base of every request body the API reads.

A body is taken as the JSON types the API documents, and only with the fields it
documents: ``extra="forbid"`` refuses a field the operation does not know (a typo is
not silently ignored), and ``strict`` refuses a value of another JSON type rather than
converting it (pydantic's default would read ``true`` as the integer 1, ``"600"`` as 600
and ``1.0`` as 1: ``{"ttl_seconds": true}`` issued a grant for one second). Either is
422 ``request_invalid`` naming the field.

A NUL character (U+0000) in a string field is refused the same way, on both stores:
PostgreSQL's text cannot hold one (the request was refused there, by the store) and
SQLite's can (the same request was taken there). Values inside free-form documents
(a call's arguments, a scope) are JSON, where NUL is escaped, and are not looked at.

A key given twice in one object, at any depth, is refused before a body reaches its
model, by :class:`~proctor.server.limits.BodyLimit` (422 ``request_invalid``): pydantic,
like FastAPI, keeps the last.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["NO_NUL", "RequestBody", "StrictBody"]

NO_NUL = r"^[^\x00]*$"
"""A ``pattern`` for a text field of a :class:`StrictBody`: no NUL character."""


class StrictBody(BaseModel):
    """Its documented fields only, each of its documented type. The decision's body
    (``POST /v1/decide``) is one: its text fields that reach the store take
    :data:`NO_NUL` as their pattern, as a validator per field would cost each decision
    about 11 us."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RequestBody(StrictBody):
    """A request body: a :class:`StrictBody` whose strings (and lists of strings) hold
    no NUL character."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else (value,)
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("a string may not hold a NUL character (U+0000)")
        return value

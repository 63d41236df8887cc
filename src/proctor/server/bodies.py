"""The base of every request body the API reads.

A body is taken as the JSON types the API documents, and only with the fields it
documents: ``extra="forbid"`` refuses a field the operation does not know (a typo is
not silently ignored), and ``strict`` refuses a value of another JSON type rather than
converting it (pydantic's default would read ``true`` as the integer 1, ``"60"`` as 60
and ``1.0`` as 1: ``{"ttl_seconds": true}`` issued a grant for one second). Either is
422 ``request_invalid`` naming the field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["RequestBody"]


class RequestBody(BaseModel):
    """A request body: its documented fields only, each of its documented type."""

    model_config = ConfigDict(extra="forbid", strict=True)

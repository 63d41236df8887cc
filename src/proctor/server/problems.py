"""Errors as RFC 9457 problem details, with proctor's stable codes.

Every error response is ``application/problem+json``::

    {"type": "urn:proctor:problem:grant_revoked", "title": "Forbidden", "status": 403,
     "detail": "the grant or one it derives from is revoked", "code": "grant_revoked",
     "instance": "/v1/grants/exchange"}

``code`` is the machine-readable part (a :data:`proctor.codes.Code`) and
``type`` is derived from it. Every code's status is in :mod:`proctor.codes`
(:func:`status_for`); the OpenAPI document
lists, per operation and status, the codes it can answer with
(:func:`problem_responses`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from proctor.codes import Code, authentication_codes, http_status, retry_headers
from proctor.errors import ApiError, ProctorError

__all__ = [
    "AUTH_CODES",
    "PROBLEM_MEDIA_TYPE",
    "problem_of",
    "problem_response",
    "problem_responses",
    "status_for",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:proctor:problem:"

# Codes a failed authentication answers with (401): the API's own, the identity proof
# codes of agents' workload proofs and humans' OIDC tokens, the grant and proof codes of
# the DPoP scheme (proctor.codes marks them).
AUTH_CODES: tuple[Code, ...] = authentication_codes()


def status_for(code: Code) -> int:
    """The HTTP status of a domain error's code (:mod:`proctor.codes`)."""
    return http_status(code)


def problem_of(exc: ProctorError) -> ApiError:
    """``exc`` as an API error: its status from its code (or its own, for an
    :class:`ApiError`), policy diagnostics listed as ``errors``."""
    if isinstance(exc, ApiError):
        return exc
    extra: dict[str, Any] = {}
    diagnostics = getattr(exc, "diagnostics", None)
    if diagnostics:
        extra["errors"] = [{"file": d.file, "line": d.line, "column": d.column,
                            "message": d.message, "policy_id": d.policy_id}
                           for d in diagnostics]
    return ApiError(exc.code, exc.message, extra=extra)


def problem_response(status: int, code: Code, detail: str, *, instance: str = "",
                     headers: Mapping[str, str] | None = None,
                     extra: Mapping[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_PREFIX + code, "title": _title(status),
                            "status": status, "detail": detail, "code": code}
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    # a failure that passes says when to try again (proctor.codes): a 5xx without it
    # (a policy that cannot be evaluated) fails again as it is
    headers = {**retry_headers(code), **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers,
                        media_type=PROBLEM_MEDIA_TYPE)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_schema(codes: Iterable[Code]) -> dict[str, Any]:
    """The JSON schema of a problem document whose ``code`` is one of ``codes``."""
    listed = sorted(set(codes))
    return {
        "type": "object",
        "required": ["type", "title", "status", "code"],
        "properties": {
            "type": {"type": "string", "enum": [TYPE_PREFIX + c for c in listed]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "code": {"type": "string", "enum": listed},
            "errors": {"type": "array", "items": {"type": "object"}},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "policy_ids": {"type": "array", "items": {"type": "string"}},
        },
    }


# What any operation can answer with, besides its own codes.
COMMON: dict[int, tuple[Code, ...]] = {
    413: ("request_too_large",),
    422: ("request_invalid", "document_malformed", "document_too_deep"),
    429: ("rate_limited",),
    503: ("store_unavailable", "audit_unavailable"),
}
AUTHENTICATED: dict[int, tuple[Code, ...]] = {401: AUTH_CODES, 403: ("forbidden",),
                                               500: ("engine_error",)}
_DESCRIPTIONS = {
    401: "Not authenticated: no credentials, or credentials that do not verify",
    403: "Refused: the control-plane policy or a rule denies it (audited)",
    404: "Not found", 409: "Conflicts with the current state",
    413: "The request body is over the size limit",
    422: "The request is not valid", 429: "Rate limited: retry after `Retry-After` seconds",
    500: "The policy engine failed on the request (denied, audited): sent again, it fails again",
    503: "The store or the audit log is unavailable: retry after `Retry-After` seconds",
}


def problem_responses(*codes: Code, public: bool = False,
                      extra: Mapping[int, Iterable[Code]] | None = None
                      ) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for an operation: each status with the codes it can carry.

    ``codes`` are domain codes, placed by :func:`status_for`; ``extra`` adds codes
    at a status of the caller's choosing (e.g. grant codes answered as 401).
    """
    by_status: dict[int, set[Code]] = {s: set(c) for s, c in COMMON.items()}
    if not public:
        for status, own in AUTHENTICATED.items():
            by_status.setdefault(status, set()).update(own)
    for code in codes:
        by_status.setdefault(status_for(code), set()).add(code)
    for status, more in (extra or {}).items():
        by_status.setdefault(status, set()).update(more)
    if 404 in by_status:  # a path parameter that no route accepts (a newline, say)
        by_status[404].add("not_found")
    return {
        status: {"description": _DESCRIPTIONS.get(status, _title(status)),
                 "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_schema(found)}}}
        for status, found in sorted(by_status.items())
    }

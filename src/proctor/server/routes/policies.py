"""Policies: list revisions, upload a candidate, validate, shadow, compare, activate.

A candidate is validated against the deployment's schema before it is stored;
activation validates again, so an invalid set never becomes active. Shadow
mode evaluates a candidate beside the active set on every real decision, in
every server process, and records where it would have decided otherwise.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from proctor.errors import NotFoundError, PolicyValidationError, RequestError
from proctor.oversight import activating
from proctor.policy import PolicyRevision, request_from_spec
from proctor.policy.revisions import digest_sources
from proctor.policy.shadow import compare_policy_sets
from proctor.policy.source import MAX_FILE_BYTES, MAX_FILES
from proctor.server.bodies import RequestBody
from proctor.server.control import service
from proctor.server.deps import Call, CallContext
from proctor.server.problems import problem_responses
from proctor.server.shadow import Audited

__all__ = ["router"]

router = APIRouter(tags=["policies"])

RevisionId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Sources = Annotated[dict[str, str], Field(description=(
    "Policy files: relative path (ending `.cedar`) to text"))]


class Upload(RequestBody):
    sources: Sources
    origin: Annotated[str, Field(max_length=200)] = ""


class Validate(RequestBody):
    sources: Sources


class Compare(RequestBody):
    """Request documents as ``proctor policy diff`` takes them (agent, tool, args, ...)."""

    requests: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000)]


class RevisionView(BaseModel):
    id: int
    digest: str
    status: str
    origin: str
    created_at: datetime
    activated_at: datetime | None

    @classmethod
    def of(cls, revision: PolicyRevision) -> RevisionView:
        return cls(id=revision.id, digest=revision.digest, status=revision.status,
                   origin=revision.origin, created_at=revision.created_at,
                   activated_at=revision.activated_at)


class RevisionDetail(RevisionView):
    sources: dict[str, str]


class RevisionList(BaseModel):
    revisions: list[RevisionView]


class Diagnostic(BaseModel):
    file: str
    line: int
    column: int
    message: str
    policy_id: str | None


class Validation(BaseModel):
    valid: bool
    policies: int
    digest: str
    errors: list[Diagnostic]


class ShadowView(BaseModel):
    revision: int | None
    changed_by: str | None
    changed_at: datetime | None
    differences: int
    recent: list[dict[str, Any]]


class Comparison(BaseModel):
    active_revision: int | None
    candidate_revision: int
    requests: int
    differences: list[dict[str, Any]]


def _checked(sources: dict[str, str]) -> dict[str, str]:
    if len(sources) > MAX_FILES:
        raise RequestError(f"a policy set has at most {MAX_FILES} files")
    for name, text in sources.items():
        path = PurePosixPath(name)
        if (not name.endswith(".cedar") or path.is_absolute() or ".." in path.parts
                or len(name) > 200 or any(ord(c) < 0x20 for c in name)):
            raise RequestError(f"file name `{name[:80]}` must be a relative path ending "
                               "`.cedar`")
        if len(text.encode("utf-8")) > MAX_FILE_BYTES:
            raise RequestError(f"file `{name}` is over {MAX_FILE_BYTES} bytes")
    return sources


def _revision(call: CallContext, revision: int) -> PolicyRevision:
    for found in call.runtime.policies.list_revisions():
        if found.id == revision:
            return found
    raise NotFoundError(f"policy revision `{revision}` does not exist")


@router.get("/v1/policies/revisions", responses=problem_responses())
def list_revisions(call: Call) -> RevisionList:
    """Every revision, newest first; one is active."""
    call.require("api:policy.list", service("policies"))
    return RevisionList(revisions=[RevisionView.of(r)
                                   for r in call.runtime.policies.list_revisions()])


@router.get("/v1/policies/revisions/{revision}", responses=problem_responses("not_found"))
def read_revision(revision: RevisionId, call: Call) -> RevisionDetail:
    """One revision with its files."""
    call.require("api:policy.read", service("policies"))
    found = _revision(call, revision)
    return RevisionDetail(**RevisionView.of(found).model_dump(),
                          sources=call.runtime.policies.sources(revision))


@router.post("/v1/policies/revisions", status_code=201, responses=problem_responses(
    "policy_invalid"))
def upload_candidate(body: Upload, call: Call) -> RevisionView:
    """Store a policy set as a candidate revision, if it validates (else 422 with every
    problem located as file, line, column)."""
    call.require("api:policy.upload", service("policies"))
    sources = _checked(body.sources)
    runtime = call.runtime
    runtime.engine.compile(sources, digest=digest_sources(sources))
    origin = body.origin or f"uploaded by {call.principal.id}"
    # with its event, in one transaction (an outage: nothing stored, and 503)
    revision = activating.upload_candidate(
        runtime.audit, runtime.clock, sources, by=call.principal.actor, origin=origin[:200],
        source=call.source)
    return RevisionView.of(_revision(call, revision))


@router.post("/v1/policies/validate", responses=problem_responses())
def validate(body: Validate, call: Call) -> Validation:
    """Validate a policy set against this deployment's schema; nothing is stored."""
    call.require("api:policy.validate", service("policies"))
    sources = _checked(body.sources)
    digest = digest_sources(sources)
    try:
        compiled = call.runtime.engine.compile(sources, digest=digest)
    except PolicyValidationError as exc:
        return Validation(valid=False, policies=0, digest=digest, errors=[
            Diagnostic(file=d.file, line=d.line, column=d.column, message=d.message,
                       policy_id=d.policy_id) for d in exc.diagnostics])
    return Validation(valid=True, policies=len(compiled), digest=digest, errors=[])


@router.post("/v1/policies/revisions/{revision}/activate", responses=problem_responses(
    "not_found", "policy_invalid"))
def activate(revision: RevisionId, call: Call) -> RevisionView:
    """Validate the revision again and make it the active set, in every process."""
    call.require("api:policy.activate", service("policies"))
    _revision(call, revision)
    runtime = call.runtime
    shadow = call.state.shadow
    shadowed = shadow.status().revision
    # with its event, in one transaction (an outage: the active set unchanged, and 503),
    # and the shadowing of it stopped with its own event
    activating.activate_revision(runtime.policies, runtime.audit, runtime.clock, revision,
                                 by=call.principal.actor, source=call.source,
                                 shadowed=shadowed)
    if shadowed == revision:
        shadow.sync()  # this process's engine stops shadowing it now
    return RevisionView.of(_revision(call, revision))


@router.post("/v1/policies/revisions/{revision}/shadow", responses=problem_responses(
    "not_found", "policy_invalid"))
def start_shadow(revision: RevisionId, call: Call) -> ShadowView:
    """Shadow a candidate: every decision also evaluates it; differences are recorded."""
    call.require("api:policy.shadow", service("policies"))
    _revision(call, revision)
    # with its event, in one transaction (an outage: nothing changed, and 503)
    call.state.shadow.start(revision, by=call.principal.id, audited=_audited(call))
    return _shadow_view(call, 20)


@router.delete("/v1/policies/shadow", responses=problem_responses())
def stop_shadow(call: Call) -> ShadowView:
    """Stop shadowing; the recorded differences stay."""
    call.require("api:policy.shadow", service("policies"))
    call.state.shadow.stop(by=call.principal.id, audited=_audited(call))
    return _shadow_view(call, 20)


def _audited(call: CallContext) -> Audited:
    return Audited(call.runtime.audit, call.principal.actor, call.source)


@router.get("/v1/policies/shadow", responses=problem_responses())
def shadow_results(call: Call, limit: Annotated[int, Query(ge=1, le=1000)] = 100
                   ) -> ShadowView:
    """The shadowed revision and where it decided otherwise than the active set."""
    call.require("api:policy.shadow_results", service("policies"))
    call.state.shadow.flush()
    return _shadow_view(call, limit)


def _shadow_view(call: CallContext, limit: int) -> ShadowView:
    status = call.state.shadow.status()
    total, recent = (call.state.shadow.results(status.revision, limit=limit)
                     if status.revision is not None else (0, []))
    return ShadowView(revision=status.revision, changed_by=status.changed_by,
                      changed_at=status.changed_at, differences=total, recent=recent)


@router.post("/v1/policies/revisions/{revision}/compare", responses=problem_responses(
    "not_found", "policy_invalid"))
def compare(revision: RevisionId, body: Compare, call: Call) -> Comparison:
    """Decide the given requests with the active set and with the revision; list the
    requests decided otherwise. Nothing is recorded."""
    call.require("api:policy.validate", service("policies"))
    runtime = call.runtime
    _revision(call, revision)
    candidate = runtime.policies.compile(revision)
    now = runtime.clock.now()
    requests = [request_from_spec(spec, now=now) for spec in body.requests]
    active = runtime.engine.active
    if active is None:
        raise RequestError("no policy set is active to compare with")
    differences = compare_policy_sets(runtime.engine, active, candidate, requests)
    return Comparison(active_revision=active.revision, candidate_revision=revision,
                      requests=len(requests), differences=[{
                          "principal": str(d.request.principal), "action": d.request.action,
                          "resource": str(d.request.resource), "active": d.active.as_json(),
                          "candidate": d.candidate.as_json()} for d in differences])

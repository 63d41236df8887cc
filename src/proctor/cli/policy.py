"""``proctor policy``: validate, test, explain and diff policy sets; apply one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from proctor.cli.operator import ByOpt, acting_runtime
from proctor.cli.output import console, fail, print_json
from proctor.clock import SystemClock
from proctor.documents import read_json, read_yaml
from proctor.errors import PolicyValidationError, ProctorError, RequestError

if TYPE_CHECKING:
    from proctor.policy import (
        DecisionRequest,
        PolicyBundle,
    )

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Validate, test, explain and compare policies.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DirArg = Annotated[Path, typer.Argument(help="A policy directory.")]
ToolsOpt = Annotated[
    Path | None, typer.Option("--tools", help="Tool catalog (default: DIR/tools.yaml).")
]
EntitiesOpt = Annotated[
    Path | None, typer.Option("--entities", help="Principals (default: DIR/entities.yaml).")
]


def _bundle(directory: Path, tools: Path | None, entities: Path | None, as_json: bool
            ) -> PolicyBundle:
    from proctor.policy import load_bundle

    try:
        return load_bundle(directory, tools=tools, entities=entities)
    except PolicyValidationError as exc:
        _report_invalid(exc, as_json)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)


def _report_invalid(exc: PolicyValidationError, as_json: bool) -> NoReturn:
    if as_json:
        print_json({"valid": False, "errors": [
            {"file": d.file, "line": d.line, "column": d.column, "message": d.message,
             "policy_id": d.policy_id} for d in exc.diagnostics]})
    else:
        for diagnostic in exc.diagnostics:
            console.print(str(diagnostic), markup=False)
    raise typer.Exit(1)


@app.command()
def validate(directory: DirArg, tools: ToolsOpt = None, entities: EntitiesOpt = None,
             as_json: JsonOpt = False) -> None:
    """Parse and validate every policy against the schema.

    Exit 0 when valid; 1 with `file:line:column: message` lines otherwise.
    """
    bundle = _bundle(directory, tools, entities, as_json)
    try:
        engine = bundle.engine()
    except PolicyValidationError as exc:
        _report_invalid(exc, as_json)
    assert engine.active is not None
    count = len(engine.active)
    if as_json:
        print_json({"valid": True, "policies": count, "files": len(bundle.sources),
                    "digest": engine.active.digest})
    else:
        console.print(f"{count} policies in {len(bundle.sources)} files are valid")


@app.command("test")
def test_policies(directory: DirArg, tools: ToolsOpt = None, entities: EntitiesOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Run the test cases (`*.test.yaml|json`) found under DIR against its policies."""
    from proctor.policy.cases import find_case_files, load_cases, run_cases

    bundle = _bundle(directory, tools, entities, as_json)
    try:
        engine = bundle.engine()
        files = find_case_files(directory)
        if not files:
            fail(f"no test files (*.test.yaml, *.test.json) under `{directory}`",
                 code="policy_test_invalid", as_json=as_json)
        cases = [case for path in files for case in load_cases(path, directory)]
        results = run_cases(engine, cases, now=SystemClock().now())
    except PolicyValidationError as exc:
        _report_invalid(exc, as_json)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    failed = [r for r in results if not r.passed]
    if as_json:
        print_json({
            "passed": len(results) - len(failed), "failed": len(failed),
            "cases": [{"file": r.case.file, "name": r.case.name, "passed": r.passed,
                       "mismatches": list(r.mismatches), "decision": r.decision.as_json()}
                      for r in results],
        })
    else:
        for result in failed:
            console.print(f"[red]FAIL[/red] {result.case.file}: {result.case.name}")
            for line in result.mismatches:
                console.print(f"  - {line}", markup=False)
            got = result.decision
            console.print(f"  got: {got.outcome.value} ({got.code.value}) by "
                          f"{', '.join(got.policy_ids) or 'no policy'}: {'; '.join(got.reasons)}",
                          markup=False)
        colour = "red" if failed else "green"
        console.print(f"[{colour}]{len(results) - len(failed)} passed, {len(failed)} failed[/]")
    if failed:
        raise typer.Exit(1)


@app.command("explain")
def explain_request(
    request_file: Annotated[Path, typer.Argument(help="A request document (YAML or JSON).")],
    policies: Annotated[Path | None, typer.Option("--policies", help="Policy directory.")] = None,
    tools: ToolsOpt = None, entities: EntitiesOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show a request's decision, the policies that determined it and those that did not."""
    from proctor.policy import request_from_spec
    from proctor.policy.explain import explain

    directory = policies or Path()
    bundle = _bundle(directory, tools, entities, as_json)
    try:
        engine = bundle.engine()
        request = request_from_spec(_read_document(request_file), now=SystemClock().now())
    except PolicyValidationError as exc:
        _report_invalid(exc, as_json)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    result = explain(engine, request)
    if as_json:
        print_json(result.as_json())
        return
    d = result.decision
    colour = {"allow": "green", "deny": "red"}.get(d.outcome.value, "yellow")
    console.print(f"decision: [bold {colour}]{d.outcome.value}[/] ({d.code.value})")
    for reason in d.reasons:
        console.print(f"  reason: {reason}", markup=False)
    for error in d.errors:
        console.print(f"  error: {error}", markup=False)
    for p in result.determining:
        console.print(f"\ndetermining: {p.id} ({p.file}:{p.line})", markup=False)
        for offset, line in enumerate(p.text.splitlines()):
            console.print(f"  {p.line + offset:>4} | {line}", markup=False)
    if result.not_satisfied:
        console.print("\nevaluated, conditions not met:")
        for p in result.not_satisfied:
            console.print(f"  {p.effect} {p.id} ({p.file}:{p.line})", markup=False)
    if result.out_of_scope:
        console.print(f"\nnot applicable (scope excludes this request): "
                      f"{len(result.out_of_scope)} policies")
        for p in result.out_of_scope:
            console.print(f"  {p.effect} {p.id} ({p.file}:{p.line})", markup=False)


@app.command()
def diff(
    old_dir: Annotated[Path, typer.Argument(help="The active policy directory.")],
    new_dir: Annotated[Path, typer.Argument(help="The candidate policy directory.")],
    requests: Annotated[Path, typer.Option("--requests", help="A YAML/JSON list of requests.")],
    tools: ToolsOpt = None, entities: EntitiesOpt = None, as_json: JsonOpt = False,
) -> None:
    """Shadow-compare two policy sets on the same requests; exit 0 either way."""
    from proctor.policy import load_bundle, request_from_spec
    from proctor.policy.shadow import compare_policy_sets

    old = _bundle(old_dir, tools or old_dir / "tools.yaml", entities or old_dir / "entities.yaml",
                  as_json)
    try:
        engine = old.engine()
        assert engine.active is not None
        new_sources = load_bundle(new_dir, tools=tools or old_dir / "tools.yaml",
                                  entities=entities or old_dir / "entities.yaml").sources
        candidate = engine.compile(new_sources)
        now = SystemClock().now()
        docs = _read_document(requests)
        if isinstance(docs, dict) and "requests" in docs:
            docs = docs["requests"]
        if not isinstance(docs, list):
            fail("the requests file must hold a list of requests", code="request_invalid",
                 as_json=as_json)
        reqs = [request_from_spec(doc, now=now) for doc in docs]
    except PolicyValidationError as exc:
        _report_invalid(exc, as_json)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    differences = compare_policy_sets(engine, engine.active, candidate, reqs)
    if as_json:
        print_json({"requests": len(reqs), "differences": [
            {"request": _describe(d.request), "active": d.active.as_json(),
             "candidate": d.candidate.as_json()} for d in differences]})
        return
    if not differences:
        console.print(f"no differences on {len(reqs)} requests")
        return
    table = Table(title=f"{len(differences)} of {len(reqs)} requests decided differently")
    for column in ("principal", "action", "active", "candidate"):
        table.add_column(column)
    for d in differences:
        table.add_row(str(d.request.principal), d.request.action,
                      f"{d.active.outcome.value} {list(d.active.policy_ids)}",
                      f"{d.candidate.outcome.value} {list(d.candidate.policy_ids)}")
    console.print(table)


def _describe(request: DecisionRequest) -> dict[str, Any]:
    return {"principal": str(request.principal), "action": request.action,
            "resource": str(request.resource)}


def _read_document(path: Path) -> Any:
    read = read_json if path.suffix == ".json" else read_yaml
    return read(path, what="request file", error=RequestError)


@app.command("apply")
def apply(
    directory: Annotated[Path | None, typer.Argument(
        help="The policy directory (default: the home's).")] = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Validate the `*.cedar` files of DIR and make them the active revision.

    The tool catalog and principals stay those of the home's policy directory; an
    invalid policy set changes nothing. Running servers pick the revision up when
    they next start (or activate it through the API). The revision is stored and made
    active with its audit event, in one transaction: if the event cannot be written,
    nothing is stored and the revision active before stays active.
    """
    from proctor.oversight.activating import apply_sources

    with acting_runtime(by, as_json) as (runtime, acting):
        folder = directory or runtime.settings.policy_dir
        try:
            sources, staged = runtime.policies.read_directory(folder)
        except PolicyValidationError as exc:
            _report_invalid(exc, as_json)
        # stored and active with its event, in one transaction; unaudited: nothing stored
        compiled = apply_sources(
            runtime.policies, runtime.audit, runtime.clock, sources, staged,
            by=acting.operator.actor, origin=f"directory {folder.name}", source="cli",
            detail={"digest": staged.digest, "policies": len(staged)})
    if as_json:
        print_json({"revision": compiled.revision, "policies": len(compiled),
                    "digest": compiled.digest})
    else:
        console.print(f"revision {compiled.revision} is active: {len(compiled)} policies",
                      markup=False)

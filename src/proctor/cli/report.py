"""``proctor report``: compliance evidence from real decisions, and checking a bundle."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from proctor.cli.operator import ByOpt, acting_runtime
from proctor.cli.output import console, fail, json_escaped, print_json
from proctor.documents import read_json
from proctor.errors import ProctorError, RequestError, SigningKeyError

__all__ = ["app"]

_MAX_BUNDLE_BYTES = 256 * 1024 * 1024
_MAX_JWK_BYTES = 256 * 1024

app = typer.Typer(no_args_is_help=True,
                  help="Compliance reports from real decisions, and offline verification.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(f"`--{name}` value `{value}` is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise RequestError(f"`--{name}` value `{value}` needs a time zone (e.g. `Z`)")
    return parsed


@app.command()
def compliance(
    since: Annotated[str | None, typer.Option(
        "--since", help="From this ISO 8601 time (default: 30 days before --until).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Before this ISO 8601 time (default: now).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the report here instead of printing it.")] = None,
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", help="Also write the evidence bundle (report, checkpoint, keys, "
        "cited chain) here, for `proctor report verify`.")] = None,
    grant_threshold: Annotated[int, typer.Option(
        "--grant-threshold", help="Grants living longer than this many seconds are "
        "gaps.")] = 3600,
    by: ByOpt = None,
) -> None:
    """Map proctor's controls to OWASP ASI01 to ASI10, CSA MAESTRO, NIST AI RMF 1.0 and EU AI
    Act Art. 12 and 14, with evidence from the window's decisions and the gaps. Signs a
    checkpoint of the audit chain now, so that it covers every cited event, stored with
    the operator's `audit.checkpoint` event in one transaction: if the event cannot be
    written, no checkpoint is stored and the command fails."""
    from proctor.oversight.compliance import (
        FORMATS,
        ReportSources,
        build_report,
        make_bundle,
        render_html,
        render_markdown,
    )

    as_json = fmt == "json"
    if fmt not in FORMATS:
        fail(f"format `{fmt}` is not one of {', '.join(FORMATS)}", code="request_invalid",
             as_json=as_json)
    with acting_runtime(by, as_json) as (runtime, acting):
        try:
            end = _time(until, "until") or runtime.clock.now()
            start = _time(since, "since") or end - timedelta(days=30)
            if start >= end:
                raise RequestError("`--since` must be before `--until`")
            sources = ReportSources(
                runtime.store, runtime.engine, runtime.policies, runtime.registry,
                runtime.clock, keys=runtime.keyring, audit=runtime.audit,
                checkpointing=acting.event("audit.checkpoint", "", "signed",
                                           detail={"for": "report compliance"}))
            report = build_report(sources, since=start, until=end,
                                  grant_threshold_seconds=grant_threshold)
            document = report.as_json()
            if bundle is not None:
                signer = runtime.keyring.current_signer()
                verifiers = {**runtime.keyring.checkpoint_verifiers(), signer.kid: signer}
                packed = make_bundle(runtime.store, report,
                                     [v.public_jwk() for v in verifiers.values()], signer)
                _write(bundle, json.dumps(packed, ensure_ascii=False, sort_keys=True) + "\n",
                       as_json)
        except ValueError as exc:
            fail(str(exc), code="request_invalid", as_json=as_json)
    text = (json.dumps(document, ensure_ascii=False, indent=2) + "\n" if as_json
            else render_html(document) if fmt == "html" else render_markdown(document))
    if out is not None:
        _write(out, text, as_json)
        summary = document["summary"]
        console.print(f"wrote {out}: {summary['evidenced']} of {summary['entries']} entries "
                      f"with evidence, {summary['gaps']} gaps", markup=False)
    else:
        typer.echo(json_escaped(text) if as_json else text, nl=False)


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="The evidence bundle (from `--bundle`).")],
    jwk: Annotated[list[Path] | None, typer.Option(
        "--jwk", help="Trust only this public key (JWK or JWK Set file); may repeat.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an evidence bundle offline: the checkpoint's signature, every link of the
    chain up to it, and every cited event. Exits 1 if anything does not hold."""
    from proctor.oversight.compliance import verify_bundle

    try:
        data = read_json(path, what="evidence bundle", error=RequestError,
                         max_bytes=_MAX_BUNDLE_BYTES)
        trusted: list[dict[str, object]] = []
        for key_file in jwk or ():
            keys = read_json(key_file, what="public key", error=SigningKeyError,
                             max_bytes=_MAX_JWK_BYTES)
            listed = keys["keys"] if isinstance(keys, dict) and "keys" in keys else [keys]
            if not isinstance(listed, list) or not all(isinstance(k, dict) for k in listed):
                raise SigningKeyError(f"public key `{key_file}` is not a JWK or a JWK Set")
            trusted.extend(listed)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    check = verify_bundle(data, trusted=trusted)
    if as_json:
        print_json(check.as_json())
    elif check.is_valid:
        console.print(f"bundle verifies: {check.cited} cited events in {check.links} links, "
                      f"checkpoint at position {check.checkpoint_seq} signed by key "
                      f"{check.kid}", markup=False)
    else:
        console.print(f"bundle does not verify: {check.problem}", markup=False)
    if not check.is_valid:
        raise typer.Exit(1)


def _write(path: Path, text: str, as_json: bool) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write `{path}`: {exc.strerror or exc}", code="request_invalid",
             as_json=as_json)

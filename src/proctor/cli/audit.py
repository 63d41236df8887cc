"""``proctor audit``: verify, read, export, checkpoint and archive the audit log."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from proctor.cli.operator import ByOpt, acting_store
from proctor.cli.output import console, fail, json_escaped, print_json
from proctor.clock import SystemClock
from proctor.config import Settings, load_settings
from proctor.documents import read_json
from proctor.errors import ProctorError, SigningKeyError

if TYPE_CHECKING:
    from proctor.audit import (
        EventFilter,
        StoredEvent,
    )
    from proctor.grants import IssuerKeyring
    from proctor.keys import Verifier
    from proctor.store import Store

__all__ = ["app"]

_MAX_JWK_BYTES = 256 * 1024  # a JWK Set of a few keys
_MOST = 1_000_000  # events one tail or search shows (a larger count overflowed the store's)

app = typer.Typer(no_args_is_help=True,
                  help="Verify, search and export the tamper-evident audit log.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Only this agent's events.")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="Only this actor's events.")]
ActorTypeOpt = Annotated[str | None, typer.Option(
    "--actor-type", help="Only events by `agent`, `human` or `system` actors.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only this task's events.")]
DecisionOpt = Annotated[str | None, typer.Option(
    "--decision", help="Only `allow`, `deny` or `approval_required` decisions.")]
ActionOpt = Annotated[str | None, typer.Option("--action", help="Only this action.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="From this ISO 8601 time.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this ISO 8601 time.")]


@contextmanager
def _opened(as_json: bool) -> Iterator[tuple[Settings, Store]]:
    from proctor.store import open_store

    try:
        settings = load_settings()
        store = open_store(settings.database_url, pool_size=settings.database_pool_size,
                           pool_timeout_seconds=settings.database_pool_timeout_seconds,
                           lock_timeout_seconds=settings.database_lock_timeout_seconds)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        yield settings, store
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        store.close()


def _time(value: str | None, name: str, as_json: bool) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"`--{name}` value `{value}` is not an ISO 8601 time", code="request_invalid",
             as_json=as_json)
    if parsed.tzinfo is None:
        fail(f"`--{name}` value `{value}` needs a time zone (e.g. `Z`)", code="request_invalid",
             as_json=as_json)
    return parsed


def _filter(agent: str | None, actor: str | None, actor_type: str | None, task: str | None,
            decision: str | None, action: str | None, since: str | None, until: str | None,
            as_json: bool) -> EventFilter:
    from proctor.audit import ActorType, EventFilter

    kind = None
    if actor_type is not None:
        try:
            kind = ActorType(actor_type)
        except ValueError:
            fail(f"actor type `{actor_type}` is not one of agent, human, system",
                 code="request_invalid", as_json=as_json)
    if agent is not None:
        if kind not in (None, ActorType.AGENT) or actor not in (None, agent):
            fail("`--agent` selects agent events; it cannot be combined with another actor",
                 code="request_invalid", as_json=as_json)
        kind, actor = ActorType.AGENT, agent
    if decision is not None and decision not in ("allow", "deny", "approval_required"):
        fail(f"decision `{decision}` is not one of allow, deny, approval_required",
             code="request_invalid", as_json=as_json)
    return EventFilter(actor_type=kind, actor_id=actor, task=task, decision=decision,
                       action=action, since=_time(since, "since", as_json),
                       until=_time(until, "until", as_json))


def _keyring(settings: Settings, store: Store) -> IssuerKeyring:
    from proctor.runtime import open_keyring

    return open_keyring(settings, store, SystemClock())


def _public_keys(path: Path) -> list[Verifier]:
    """The keys in a public JWK or JWK Set file."""
    from proctor.keys import PublicKeyVerifier

    data = read_json(path, what="public key", error=SigningKeyError, max_bytes=_MAX_JWK_BYTES)
    jwks = data["keys"] if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(jwks, list) or not all(isinstance(k, dict) for k in jwks):
        raise SigningKeyError(f"public key `{path}` is not a JWK or a JWK Set")
    return [PublicKeyVerifier.from_jwk(jwk) for jwk in jwks]


def _verifiers(keyring: IssuerKeyring | None, jwk_files: list[Path] | None = None
               ) -> dict[str, Verifier]:
    """Every issuer key (whatever its ``verify_until``), plus any public keys given."""
    from proctor.audit import verifiers_for

    keys = keyring.checkpoint_verifiers() if keyring is not None else {}
    for path in jwk_files or ():
        keys.update(verifiers_for(_public_keys(path)))
    return keys


def _summary(stored: StoredEvent) -> list[str]:
    event = stored.event
    decision = event.get("decision")
    when = str(event["time"])[:19] + "Z"  # to the second; the JSON output has it all
    return [str(stored.seq), when, event["actor"]["type"], event["actor"]["id"],
            event["action"], event["target"],
            decision["outcome"] if decision else "-", event["outcome"]]


def _print_events(events: list[StoredEvent], title: str) -> None:
    table = Table(title=title)
    for column in ("seq", "time", "actor type", "actor", "action", "target", "decision",
                   "outcome"):
        table.add_column(column, overflow="fold")
    colours = {"agent": "cyan", "human": "magenta", "system": "white"}
    for stored in events:
        row = _summary(stored)
        row[2] = f"[{colours.get(row[2], 'white')}]{row[2]}[/]"
        table.add_row(*row)
    console.print(table)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@app.command()
def verify(
    archive: Annotated[Path | None, typer.Option(
        "--archive", help="Verify an archived segment file instead of the database.")] = None,
    jwk: Annotated[list[Path] | None, typer.Option(
        "--jwk", help="Also trust checkpoints signed by the keys in this public JWK or "
        "JWK Set file (repeatable).")] = None,
    keyring: Annotated[bool, typer.Option(
        "--keyring/--no-keyring", help="Trust the issuer keyring's keys (needs the master "
        "key); with --no-keyring only the --jwk keys.")] = True,
    kept: Annotated[list[Path] | None, typer.Option(
        "--checkpoint", help="A checkpoint kept out of band (`audit checkpoint --json`'s "
        "output, or a JSON array of them) that the chain must hold (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the hash chain and the signed checkpoints; name the first broken link.

    Checkpoints are checked with every key of the issuer keyring, including
    keys that no longer verify grants, and any `--jwk` given. A checkpoint kept
    out of band (`--checkpoint`) shows a tail deleted with its checkpoints, or a
    chain rewritten and signed again, which the database alone cannot; one the
    chain cannot be held to (before its first stored event, or outside the
    `--archive` segment) is `checkpoint_unverifiable`. Exit 0
    when the chain verifies, 1 otherwise.
    """
    from proctor.audit import read_kept_checkpoints, verify_archive, verify_store

    with _opened(as_json) as (settings, store):
        held = [c for path in kept or () for c in read_kept_checkpoints(path)]
        verifiers = _verifiers(_keyring(settings, store) if keyring else None, jwk)
        report = (verify_archive(archive, verifiers, held) if archive is not None
                  else verify_store(store, verifiers, held))
    if as_json:
        print_json(report.as_json())
    elif report.problem is None:
        console.print(f"[green]chain verifies[/]: {_count(report.events, 'event')} up to "
                      f"position {report.last.seq}, "
                      f"{_count(report.checkpoints, 'signed checkpoint')}, "
                      f"{_count(report.unsigned_tail, 'event')} after the last checkpoint")
        for note in report.notes:
            console.print(f"note: {note}", markup=False)
    else:
        console.print(f"[red]chain broken[/] at position {report.problem.seq} "
                      f"({report.problem.kind}): {report.problem.message}")
    if report.problem is not None:
        raise typer.Exit(1)


@app.command()
def tail(
    count: Annotated[int, typer.Option("-n", "--count", min=1, max=_MOST,
                                       help="How many events.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")]
    = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05,
                                            help="Seconds between polls with --follow.")] = 1.0,
    agent: AgentOpt = None, actor: ActorOpt = None, actor_type: ActorTypeOpt = None,
    task: TaskOpt = None, decision: DecisionOpt = None, action: ActionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the last events; with --follow, keep showing new ones (JSON Lines with --json)."""
    from proctor.audit import follow_events, tail_events

    where = _filter(agent, actor, actor_type, task, decision, action, None, None, as_json)
    with _opened(as_json) as (_settings, store):
        events = tail_events(store, where, count=count)
        if not follow:
            if as_json:
                print_json([e.as_json() for e in events])
            else:
                _print_events(events, f"last {len(events)} audit events")
            return
        stop = threading.Event()
        for stored in events:
            _print_line(stored, as_json)
        after = events[-1].seq if events else 0
        try:
            for stored in follow_events(store, where, after_seq=after,
                                        wait=lambda: not stop.wait(interval)):
                _print_line(stored, as_json)
        except KeyboardInterrupt:
            stop.set()


def _print_line(stored: StoredEvent, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json_escaped(json.dumps(stored.as_json(), sort_keys=True,
                                                 separators=(",", ":"), ensure_ascii=False))
                         + "\n")
    else:
        console.print("  ".join(_summary(stored)), markup=False)
    sys.stdout.flush()


@app.command()
def search(
    agent: AgentOpt = None, actor: ActorOpt = None, actor_type: ActorTypeOpt = None,
    task: TaskOpt = None, decision: DecisionOpt = None, action: ActionOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=_MOST,
                                       help="At most this many.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Find events by agent, actor, actor type, task, decision, action and time range."""
    from proctor.audit import search_events

    where = _filter(agent, actor, actor_type, task, decision, action, since, until, as_json)
    with _opened(as_json) as (_settings, store):
        events = search_events(store, where, limit=limit)
    if as_json:
        print_json([e.as_json() for e in events])
    else:
        _print_events(events, f"{len(events)} events ({where.describe() or 'all'}), newest first")


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help="`jsonl` or `ocsf` (OCSF 1.3.0).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    agent: AgentOpt = None, actor: ActorOpt = None, actor_type: ActorTypeOpt = None,
    task: TaskOpt = None, decision: DecisionOpt = None, action: ActionOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
) -> None:
    """Write matching events as JSON Lines, one event per line, in chain order."""
    from proctor import __version__
    from proctor.audit import EXPORT_FORMATS, export_lines

    if fmt not in EXPORT_FORMATS:
        fail(f"export format `{fmt}` is not one of {', '.join(EXPORT_FORMATS)}",
             code="request_invalid")
    where = _filter(agent, actor, actor_type, task, decision, action, since, until, False)
    with _opened(False) as (_settings, store):
        try:
            handle = out.open("w", encoding="utf-8") if out is not None else sys.stdout
            try:
                for line in export_lines(store, fmt, where, product_version=__version__):
                    handle.write((line if out is not None else json_escaped(line)) + "\n")
            finally:
                if out is not None:
                    handle.close()
        except OSError as exc:
            fail(f"cannot write the export to `{out}`: {exc.strerror or exc}",
                 code="request_invalid")


@app.command()
def checkpoint(by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Sign the current chain head with the current issuer key now.

    The checkpoint is stored with the operator's `audit.checkpoint` event, in one
    transaction: if the event cannot be written, no checkpoint is stored.
    """
    from proctor.oversight.milestones import checkpoint_with_event

    with acting_store(by, as_json) as (_settings, _store, keys, acting):
        made = checkpoint_with_event(acting.audit, keys,
                                     acting.event("audit.checkpoint", "", "signed"))
    if as_json:
        print_json(None if made is None else made.as_json())
    elif made is None:
        console.print("the audit log is empty: nothing to checkpoint")
    else:
        console.print(f"checkpoint at position {made.seq} signed by key {made.kid}")


@app.command()
def archive(
    up_to: Annotated[int, typer.Option("--up-to", min=1, max=2**63 - 1,
                                       help="Last position to archive.")],
    out: Annotated[Path, typer.Option("--out", help="The segment file to create.")],
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Move events up to a position into a segment file (verifiable on its own).

    The archive is signed (a cut) with the operator's `audit.archive` event, in one
    transaction: if the event cannot be written, nothing is archived and the segment
    file is removed. The events are then deleted a few thousand per transaction,
    never holding the decisions' writes; any left (`left`: a deletion stopped) are
    deleted by the next archive first.
    """
    from proctor.audit.retention import archived_left
    from proctor.oversight.milestones import archive_with_event

    with acting_store(by, as_json) as (_settings, store, keys, acting):
        result = archive_with_event(
            store, acting.audit, out, up_to_seq=up_to, signer=keys,
            verifiers=_verifiers(keys),
            event=acting.event("audit.archive", "", "archived")).as_json()
        result["left"] = archived_left(store)
    if as_json:
        print_json(result)
    else:
        console.print(f"archived positions {result['from_seq']} to {result['to_seq']} "
                      f"({result['events']} events) to {result['path']}"
                      + (f"; {result['left']} of them still to delete (the next archive "
                         "deletes them)" if result["left"] else ""))


@app.command("import-key")
def import_key(by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Import the home's checkpoint key of an earlier version (`keys/issuer.pem`, mode
    0600) into the issuer keyring, retired: it signs nothing new and verifies no grant,
    and the checkpoints it signed verify on every node.

    Stored with the operator's `audit.key_import` event, in one transaction; proctor
    never imports it on its own. Delete the file afterwards.
    """
    from proctor.keys import LEGACY_KEY_FILE, load_legacy_signer
    from proctor.oversight.key_import import import_key_with_event

    with acting_store(by, as_json) as (settings, _store, keys, acting):
        legacy = load_legacy_signer(settings.home)
        if legacy is None:
            fail(f"`{settings.home / LEGACY_KEY_FILE}` does not exist", code="request_invalid",
                 as_json=as_json)
        added = import_key_with_event(acting.audit, keys, legacy,
                                      acting.event("audit.key_import", "", "imported"))
    result = {"kid": legacy.kid, "file": str(settings.home / LEGACY_KEY_FILE),
              "imported": added}
    if as_json:
        print_json(result)
    else:
        console.print(f"{'imported' if added else 'the keyring holds already'} key "
                      f"{legacy.kid}; delete {result['file']}", markup=False)


@app.command("public-key")
def public_key() -> None:
    """Print every issuer key that may have signed a checkpoint, as a public JWK Set.

    Keep a copy out of band; `verify --jwk FILE` (with `--no-keyring`) checks
    the chain against it where the master key is not at hand.
    """
    with _opened(True) as (settings, store):
        verifiers = _keyring(settings, store).checkpoint_verifiers()
    print_json({"keys": [key.public_jwk() for key in verifiers.values()]})


@app.command()
def stream(
    target: Annotated[str, typer.Argument(help=(
        "`syslog://host[:514]`, `syslog+tls://host[:6514]` or an `http(s)://` URL"))],
    name: Annotated[str, typer.Option(
        "--name", help="The stream's name: its cursor in the database.")] = "siem",
    shape: Annotated[str, typer.Option(
        "--format", help="For HTTP: `json` (an array per batch) or `splunk_hec`.")] = "json",
    token_env: Annotated[str | None, typer.Option(
        "--token-env", help="The environment variable holding the collector's token.")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", help="For syslog+tls: the CA that signed the collector's certificate.")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=10_000)] = 100,
    from_end: Annotated[bool, typer.Option(
        "--from-end", help="A new stream starts at the head, not the first event.")] = False,
    once: Annotated[bool, typer.Option(
        "--once", help="Deliver what there is, then exit (non-zero if the collector fails).")
    ] = False,
    agent: AgentOpt = None, actor: ActorOpt = None, actor_type: ActorTypeOpt = None,
    task: TaskOpt = None, decision: DecisionOpt = None, action: ActionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the audit log, as OCSF events, to a SIEM: at least once, in order, from a
    cursor kept in the database; retried with backoff while the collector is down."""
    import os

    from proctor import __version__
    from proctor.audit import AuditStream, sink_for

    if shape not in {"json", "splunk_hec"}:
        fail(f"format `{shape}` is not json or splunk_hec", code="request_invalid",
             as_json=as_json)
    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            fail(f"`{token_env}` is not set", code="request_invalid", as_json=as_json)
    try:
        sink = sink_for(target, shape=shape, token=token,  # type: ignore[arg-type]
                        ca_file=str(ca_file) if ca_file else None, product_version=__version__)
    except (ValueError, OSError) as exc:
        fail(str(exc), code="request_invalid", as_json=as_json)
    where = _filter(agent, actor, actor_type, task, decision, action, None, None, as_json)
    with _opened(as_json) as (_settings, store):
        try:
            streamer = AuditStream(store, sink, SystemClock(), name=name, where=where,
                                   batch_size=batch, start="end" if from_end else "beginning")
        except ValueError as exc:
            fail(str(exc), code="request_invalid", as_json=as_json)
        try:
            if once:
                sent = streamer.catch_up()
                if as_json:
                    print_json({"stream": name, "sent": sent, "cursor": streamer.cursor()})
                else:
                    console.print(f"{_count(sent, 'event')} sent to {sink.description}; "
                                  f"stream `{name}` is at position {streamer.cursor()}")
                return
            stop = threading.Event()
            console.print(f"streaming to {sink.description} as `{name}`; Ctrl-C stops",
                          highlight=False)
            try:
                streamer.run(stop)
            except KeyboardInterrupt:
                stop.set()
        finally:
            sink.close()


@contextmanager
def streaming_in_background(target: str | None, *, shape: str, token_env: str | None,
                            settings: Settings) -> Iterator[None]:
    """``proctor serve --audit-stream``: the stream on a thread of the serving process
    (one, whatever the number of workers), stopped when serving stops."""
    if target is None:
        yield
        return
    import os

    from proctor import __version__
    from proctor.audit import AuditStream, sink_for
    from proctor.store import open_store

    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        fail(f"`{token_env}` is not set", code="request_invalid")
    if shape not in {"json", "splunk_hec"}:
        fail(f"format `{shape}` is not json or splunk_hec", code="request_invalid")
    try:
        sink = sink_for(target, shape=shape, token=token,  # type: ignore[arg-type]
                        product_version=__version__)
    except (ValueError, OSError) as exc:
        fail(str(exc), code="request_invalid")
    store = open_store(settings.database_url, pool_size=2)
    stop = threading.Event()
    streamer = AuditStream(store, sink, SystemClock(), name="siem")
    thread = threading.Thread(target=streamer.run, args=(stop,), name="audit-stream",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        sink.close()
        store.close()

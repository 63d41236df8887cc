"""Who a CLI command acts as, and how the change it makes is audited.

Whoever can open the home's database is its administrator: the CLI cannot
authenticate them, so it records who they say they are and, beside it, the
account that ran the command.

- The **operator** is ``--by``, else ``PROCTOR_OPERATOR``, else the login name
  of the account running the command. It must be a human id: a SPIFFE ID is
  refused (``reviewer_invalid``), an agent never acts as a human.
- The **account** is looked up by the process's user id (the environment can
  claim any name); it is ``uid N`` for an id without a name.

Every command that changes state records one event with actor type ``human``
(the operator), the action name the API records for the same action, the
target and the outcome; ``detail.os_user`` is the account and ``source`` is
``cli``. The part that makes the change writes that event (revocations, an agent's
registration, review, suspension and retirement, a policy's activation, a task's start,
a grant or offer, a connector added or retired, a tool's verdict, an API token, an audit
checkpoint or archive, a client's MCP config wrapped, secrets, approvals), with the
operator as actor (:meth:`Acting.event` builds it for a part that fills in what only it
knows). Each commits with its event in one transaction, the audit writer's
(:mod:`proctor.oversight.audited`): the log holds the event if and only if the change
took effect. The audit log's :class:`~proctor.audit.Attribution` adds the account to
every event of the operator and notes which of them could not be written, for
:meth:`Acting.settle`.

If an event of the operator cannot be written, the command fails
(``audit_unavailable``, exit 1) instead of reporting success: a change that gives access
is not made; one that takes access away is made all the same, since an audit outage
must never un-revoke anything. A refused command (bad input) changes nothing and is not
audited.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proctor.cli.output import fail
from proctor.clock import Clock, SystemClock
from proctor.config import Settings, load_settings
from proctor.errors import AuditUnavailableError, IdentityError, ProctorError

if TYPE_CHECKING:
    from proctor.audit import Actor, Attribution, AuditEvent, AuditLog
    from proctor.grants import IssuerKeyring
    from proctor.runtime import Runtime
    from proctor.store import Store

__all__ = ["Acting", "ByOpt", "Operator", "acting_runtime", "acting_store",
           "operator_for", "os_user", "resolve_operator"]

ByOpt = Annotated[str | None, typer.Option(
    "--by", help="The human doing this, for the audit log (default: $PROCTOR_OPERATOR, "
    "else the login name).")]


def os_user(uid: int | None = None) -> str | None:
    """The account of ``uid`` (default: this process's), looked up by id, never taken
    from the environment; ``uid N`` if the id has no name; None without user ids."""
    try:
        import pwd
    except ImportError:  # not POSIX: the login name is all there is
        try:
            return getpass.getuser() or None
        except (KeyError, OSError):
            return None
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True, slots=True)
class Operator:
    """The human a command acts as, and the account that ran it."""

    id: str
    os_user: str | None

    @property
    def actor(self) -> Actor:
        from proctor.audit import Actor, ActorType

        return Actor(ActorType.HUMAN, self.id)

    def attribution(self) -> Attribution:
        """What the audit log adds to this operator's events."""
        from proctor.audit import Attribution

        return Attribution(self.actor, {"os_user": self.os_user}, source="cli")


def resolve_operator(by: str | None, configured: str | None, account: str | None) -> Operator:
    """``by``, else ``configured`` (``PROCTOR_OPERATOR``), else ``account``; refused if
    it cannot name a human, or if there is nothing to name."""
    from proctor.identity.people import check_human

    chosen = by if by is not None else configured or account
    if chosen is None:
        raise IdentityError("reviewer_invalid",
                            "no operator to record: give `--by NAME` or set PROCTOR_OPERATOR")
    return Operator(check_human(chosen, "operator"), account)


def operator_for(by: str | None, settings: Settings) -> Operator:
    """The operator of this command, from ``--by``, the settings and the account."""
    return resolve_operator(by, settings.operator, os_user())


@dataclass(frozen=True, slots=True)
class Acting:
    """One command's changes, each audited as the operator's own event."""

    operator: Operator
    audit: AuditLog
    clock: Clock

    def event(self, action: str, target: str, outcome: str, *, task: str = "",
              detail: dict[str, Any] | None = None) -> AuditEvent:
        """The operator's event of a change, to write with the change itself (a part
        that makes it fills in what only it knows: a new token's or grant's target)."""
        from proctor.audit import human_event

        return human_event(
            self.operator.id, action, target, outcome, now=self.clock.now(), task=task,
            source="cli", detail={"os_user": self.operator.os_user, **(detail or {})})

    def settle(self) -> None:
        """Raise :class:`~proctor.errors.AuditUnavailableError` if a part that made a
        change for the operator could not write its event (and carried on)."""
        missed = self.audit.attribution.unrecorded if self.audit.attribution else []
        if missed:
            raise AuditUnavailableError("; ".join(
                f"`{e.action}` of `{e.target}` took effect but could not be audited"
                for e in missed))


@contextmanager
def acting_runtime(by: str | None, as_json: bool) -> Iterator[tuple[Runtime, Acting]]:
    """The home's parts, auditing as the operator; a proctor error ends the command."""
    from proctor.runtime import open_runtime

    try:
        settings = load_settings()
        operator = operator_for(by, settings)
        runtime = open_runtime(settings, attribution=operator.attribution())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        acting = Acting(operator, runtime.audit, runtime.clock)
        yield runtime, acting
        acting.settle()
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()


@contextmanager
def acting_store(by: str | None, as_json: bool
                 ) -> Iterator[tuple[Settings, Store, IssuerKeyring, Acting]]:
    """The home's settings, store and issuer keyring, and an audit log (checkpoints
    signed by that keyring) auditing as the operator, for commands without policies."""
    from proctor.audit import AuditLog
    from proctor.runtime import open_keyring
    from proctor.store import open_store

    try:
        settings = load_settings()
        operator = operator_for(by, settings)
        store = open_store(settings.database_url)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    audit: AuditLog | None = None
    try:
        clock = SystemClock()
        keyring = open_keyring(settings, store, clock)
        audit = AuditLog(store, signer=keyring, clock=clock, attribution=operator.attribution())
        acting = Acting(operator, audit, clock)
        yield settings, store, keyring, acting
        acting.settle()
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        if audit is not None:
            audit.close()
        store.close()

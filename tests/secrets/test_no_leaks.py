"""A secret's value never shows up in logs, errors, reprs or the audit log."""

from __future__ import annotations

import logging
import traceback

import pytest

from proctor.audit import Actor, ActorType
from proctor.errors import ProctorError

from .conftest import ALICE, VALUE, Secrets


def test_the_value_is_in_no_log_line_error_repr_or_audit_event(
        env: Secrets, caplog: pytest.LogCaptureFixture, other_master_key: bytes) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []

    def attempt(action: object) -> None:
        try:
            action()  # type: ignore[operator]
        except ProctorError as exc:
            failures.append(exc)

    env.secrets.put("github.token", VALUE, by=ALICE)
    env.secrets.put("github.token", VALUE, by=Actor(ActorType.SYSTEM, "proctor"))
    grant = env.issue()
    lease = env.lease("github.token", grant)
    attempt(lambda: env.secrets.put(VALUE, VALUE, by=ALICE))           # value as the name
    attempt(lambda: env.secrets.put("x", VALUE + "\x00", by=ALICE))
    attempt(lambda: env.secrets.put("x", VALUE, by=Actor(ActorType.AGENT, "a")))
    attempt(lambda: env.lease("github.token", grant, agent_id="spiffe://x/agent/y"))
    from proctor.secrets import SecretStore
    stranger = SecretStore(env.setup.store, env.setup.clock, other_master_key)
    attempt(lambda: stranger.lease("github.token", leases=env.setup.authority.leases,
                                   parent_id=grant.grant_id, task_id=grant.claims.task_id,
                                   agent_id=grant.claims.agent_id, expires_at=None))
    env.setup.authority.revoke(grant.accessor, "done")
    env.secrets.delete("github.token", by=ALICE)
    attempt(lambda: env.secrets.delete("github.token", by=ALICE))

    assert len(failures) == 6
    shown = [caplog.text, repr(lease), str(lease), repr(env.secrets), *env.audit_bodies()]
    for failure in failures:
        shown += [str(failure), repr(failure),
                  "".join(traceback.format_exception(failure))]
    for text in shown:
        assert VALUE not in text
        assert VALUE[4:16] not in text  # nor a recognisable part
    assert "github.token" in caplog.text  # the logs do name the secret

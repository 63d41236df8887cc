"""The proctor side of the replay, and the only module of the harness that uses
proctor's parts: a fresh deployment (home, SQLite store, policy engine, grant
authority, audit log, approvals, enforcer), the suite's tools registered in its
catalog, one agent with its own key, grants issued per task, a DPoP-style proof
for every call, and a human who answers approval requests.

Everything is the real thing, wired by proctor's own composition root
(``open_runtime``): grants are signed and bound to the agent's key, every call
carries a fresh proof, Cedar decides with the suite's policies, and every
decision is written to the hash-chained audit log.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.audit import verify_store
from proctor.config import Settings
from proctor.enforcement import CallVerdict, ToolCall
from proctor.errors import ProctorError
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.identity import Manifest, OwnKeyProof
from proctor.policy import Outcome
from proctor.runtime import Runtime, init_home, open_runtime

__all__ = ["Deployment", "Session", "Verdict"]

TRUST_DOMAIN = "agentdojo.example"
TARGET = "mcp://agentdojo/tools/call"
_APPROVAL_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """proctor's answer for one call, in the harness's terms."""

    outcome: str  # allow, deny, approval_required
    code: str
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def is_allowed(self) -> bool:
        return self.outcome == "allow"


@dataclass(frozen=True, slots=True)
class Session:
    """One task of the agent, with the grant issued for it."""

    task_id: str
    grant: IssuedGrant


class Deployment:
    """A proctor deployment in ``home`` for one suite's policy directory and tools.

    ``tools`` are catalog entries (``server``, ``name``, ``sensitivity``,
    ``destination``, ``input_schema``); they are written as the home's
    ``tools.yaml`` beside the suite's policies, which are then validated and
    activated like any home's.
    """

    def __init__(self, home: Path, policy_dir: Path, tools: Sequence[Mapping[str, Any]], *,
                 agent: str, owner: str, approver: str, groups: Sequence[str]) -> None:
        if home.exists():
            shutil.rmtree(home)
        settings = Settings(home=home, database_url=f"sqlite:///{home / 'proctor.db'}",
                            policy_dir=home / "policies", trust_domain=TRUST_DOMAIN)
        home.mkdir(parents=True)
        source = home / "policy-source"
        shutil.copytree(policy_dir, source)
        (source / "tools.yaml").write_text(yaml.safe_dump({"tools": list(tools)},
                                                          sort_keys=False))
        init_home(settings, policies_from=source)
        self._runtime: Runtime = open_runtime(settings)
        self._owner, self._approver = owner, approver
        try:
            self.agent_id = f"spiffe://{TRUST_DOMAIN}/agent/{agent}"
            self._key = self._register(self.agent_id, groups)
        except BaseException:
            self._runtime.close()
            raise

    def _register(self, agent_id: str, groups: Sequence[str]) -> ec.EllipticCurvePrivateKey:
        jwk = ECKey.generate_key("P-256", private=True)
        self._runtime.registry.register(
            agent_id, owner=self._owner, groups=list(groups),
            proof=OwnKeyProof(dict(jwk.as_dict(private=False))), manifest=_manifest(agent_id))
        self._runtime.enforcer.refresh_principals()
        key = jwk.private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the generated agent key is not P-256")
        return key

    # tasks and grants

    def start(self, purpose: str, scope: Mapping[str, Any]) -> Session:
        """Start a task for the agent and issue its grant (a policy decision per tool)."""
        grants = self._runtime.grants
        task = grants.start_task(self.agent_id, purpose=purpose, on_behalf_of=self._owner)
        return Session(task.id, grants.issue(task.id, GrantScope.from_json(scope)))

    def end(self, session: Session) -> None:
        """End the task: its grant is revoked."""
        self._runtime.grants.end_task(session.task_id)

    # calls

    def call(self, session: Session, tool_id: str, args: Mapping[str, Any]) -> Verdict:
        """Send one call, with a fresh proof, through ``Enforcer.decide_call``."""
        verdict = self._decide(session, tool_id, args)
        return _verdict(verdict)

    def call_approved(self, session: Session, tool_id: str,
                      args: Mapping[str, Any]) -> tuple[Verdict, Verdict]:
        """Send one call; if it waits for a human, the approver approves it and the
        call is decided again. Returns the first answer and the final one."""
        verdict = self._decide(session, tool_id, args)
        first = _verdict(verdict)
        if verdict.outcome is not Outcome.APPROVAL_REQUIRED or verdict.approval is None:
            return first, first
        runtime = self._runtime
        runtime.approvals.decide(verdict.approval.id, approver=self._approver, approve=True,
                                 comment="the user's own task")
        final = anyio.run(_await, runtime, verdict)
        return first, _verdict(final)

    def _decide(self, session: Session, tool_id: str, args: Mapping[str, Any]) -> CallVerdict:
        proof = make_proof(self._key, session.grant.token, method="tools/call", target=TARGET,
                           now=self._runtime.clock.now())
        return self._runtime.enforcer.decide_call(session.grant.token, proof,
                                                  ToolCall(tool_id, dict(args), target=TARGET))

    # the record

    def audit_events(self) -> int | None:
        """How many events the audit log holds if its hash chain verifies, else None."""
        runtime = self._runtime
        try:
            report = verify_store(runtime.store, runtime.keyring.checkpoint_verifiers())
        except ProctorError:
            return None
        return report.events if report.is_valid else None

    def close(self) -> None:
        self._runtime.close()


async def _await(runtime: Runtime, verdict: CallVerdict) -> CallVerdict:
    return await runtime.enforcer.await_approval(verdict, timeout=_APPROVAL_WAIT_SECONDS)


def _verdict(verdict: CallVerdict) -> Verdict:
    return Verdict(verdict.outcome.value, verdict.code, verdict.policy_ids, verdict.reasons)


def _manifest(agent_id: str) -> Manifest:
    def digest(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    return Manifest(model_id="agentdojo-ground-truth", weights_digest=digest("no model"),
                    system_prompt_digest=digest(agent_id), tools=(),
                    dependency_lock_digest=digest("agentdojo==0.1.35"))

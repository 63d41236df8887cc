"""The proof of possession ``proctor gateway``'s door asks of every request it does not
decide.

A grant is bound to its agent's key (``cnf.jkt``; every grant is: :mod:`proctor.grants`).
Over HTTP the bearer grant alone names the agent, so whoever has copied it (a logging
proxy, a leaked header) could act as the agent where only the grant was checked: open
and fill its MCP sessions, end them, cancel its calls in flight, answer an upstream's
sampling or elicitation request in its name. So each request to an MCP path carries a
``DPoP`` proof (:mod:`proctor.gateway.client`): a call the gateway decides
(``tools/call``, ``resources/read``…) has it checked and its nonce claimed by the
decision itself; every other request (``initialize``, listings, notifications, the
agent's answers, ``GET``, ``DELETE``) has it checked here, before anything changes, by
:meth:`GrantAuthority.check <proctor.grants.GrantAuthority.check>`: the grant as a use
checks it (signature, time, the agent's key, nothing revoked, the task open) and the
proof (key, ``htm``, ``htu``, grant hash, freshness), its nonce claimed in the audit
writer's batch, group-committed with the decisions' writes (one statement of the
batch, no transaction of its own).

A request whose proof fails is answered ``401`` with the proof's code and changes
nothing (no session opened, ended or held, no answer or cancellation taken); the
refusal is audited as ``gateway.reject`` by ``system:unauthenticated`` (the caller did
not prove the key, so it is not the agent's act), naming the grant.

A decided request the gateway refuses before its decision (an unknown tool, arguments
its schema refuses, a pin held: :meth:`ResultGuard.reject
<proctor.gateway.results.ResultGuard.reject>`) has the proof it carried checked there,
as here, its nonce claimed in the write of the refusal's ``gateway.reject`` event: the
refusal is the agent's act only then. A proof that fails is the answer instead (its
``proof_*`` code, as its decision would have answered it), audited by
``system:unauthenticated``; claiming the nonce keeps a refused call's proof from being
spent again on one that is allowed. A call that is decided checks its proof once, in
its decision. A decided request that would open its grant's gateway session (none is
live here: the first after an idle close) has its proof checked first
(:meth:`HttpSessions.hold <proctor.gateway.http.HttpSessions.hold>`; its nonce read,
not claimed, so its decision claims it once), or nothing opens for it.
"""

from __future__ import annotations

from functools import partial

import anyio

from proctor.errors import ProctorError
from proctor.gateway.core import Gateway
from proctor.grants import GrantClaims

__all__ = ["audit_refused_proof", "is_proof_refusal", "prove"]


async def prove(gateway: Gateway, token: str, proof: str, *, method: str,
                target: str) -> GrantClaims:
    """The claims of ``token`` once one use of it, proved by ``proof`` for ``method`` at
    ``target``, has passed every check and its nonce is claimed; raises the
    :class:`~proctor.errors.ProctorError` of the first that fails (in a worker thread: it
    waits for the batch's commit)."""
    checked = await anyio.to_thread.run_sync(partial(
        gateway.grants.check, token, proof, method=method, target=target, tool_id=None,
        args=None))
    return checked.claims


def is_proof_refusal(exc: ProctorError) -> bool:
    """Whether the door's check failed on the proof (the grant itself was good)."""
    return exc.code.startswith("proof_")


async def audit_refused_proof(gateway: Gateway, token: str, exc: ProctorError, *,
                              method: str, path: str, source: str | None) -> None:
    """Audit a request refused for its proof: a grant used without its key, or a proof
    spent twice. Best effort: the refusal stands if the log cannot take it."""
    try:
        claims: GrantClaims | None = gateway.grants.identify(token)
    except ProctorError:
        claims = None
    await gateway.results.reject_unproven(claims, path, exc.code, source=source,
                                          method=method)

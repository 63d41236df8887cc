"""How fast are grants issued, checked and revoked, next to what they rest on?

Usage::

    uv run python bench/grants.py            # the full run, a few minutes
    uv run python bench/grants.py --quick    # under 30 s, fewer samples, 20,000 nodes

Needs the PostgreSQL server on 127.0.0.1:5432 (``PROCTOR_TEST_PG_URL`` or
``--postgres`` to override): it creates a ``proctor_bench_*`` database and drops
it at the end. Without PostgreSQL the run fails; it never skips that half.

Every figure has a baseline measured in the same run, interleaved with it
(each round times every variant once, in rotating order, so drift on the
machine hits all alike):

- issuance (``GrantAuthority.issue``, one thread, a SQLite file and PostgreSQL)
  against joserfc ES256 signing of the same claims, one ``grant:issue``
  decision, and a bare durable commit on each backend; then concurrent issuance
  (32 threads of this process for a few seconds, on each backend:
  ``grants_issued_per_s``), and the process's CPU per issuance, one at a time
  (``issue_cpu_ms``; ``grants_issued_vs_cpu`` is the concurrent rate times it);
- a warm check (``GrantAuthority.inspect`` of a token verified before: cached
  signature, claims, the in-process views, no proof) against ``TokenCodec.decode``
  alone;
- proof of possession (``verify_proof``) against one raw ``cryptography``
  ECDSA P-256 verify of a message of the same size; and the full
  ``GrantAuthority.check`` with a proof, which also stores the proof's nonce;
- revoking a task with 100 grants of 1,000 nodes each (20 with ``--quick``),
  bulk-loaded into the ``leases`` table with realistic ids next to an
  unrelated tree (the call: ``revoke_100k_s``; until its descendants are marked
  by the marker thread: ``revoke_marked_s``); then one query that no node of the
  subtree is left unrevoked, and the real tokens among them check as revoked.

The authority is wired as the runtime wires it: the change feed and the views, the
audit log (an issuance is one group-committed write with its decision's event).

Rates (``*_per_s``) of the rotations are one thread's: 1 / mean latency. Latencies are medians
and p99 of per-call ``perf_counter_ns`` samples, after a warm-up.

Prints a table, then one JSON object on its last line. Exits 1 if a step
failed (the JSON says which).
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt

import harness
from grants_revocation import FANOUT, GRANT_NODES, Revocation, revocation
from grants_workload import (
    AGENT,
    ARGS,
    EXAMPLES,
    SCOPE,
    TARGET,
    TOKENS,
    TOOL,
    Backend,
    concurrent_issuance,
    open_backend,
    postgres_commit,
    sequential_cpu_ms,
    sqlite_commit,
)
from harness import NO_INPUT, Goal, Latency, Variant
from proctor.clock import SystemClock
from proctor.grants import jwk_thumbprint, make_proof, verify_proof
from proctor.grants.proofs import public_jwk
from proctor.policy import DecisionRequest, EntityRef, PolicyEngine, load_bundle
from proctor.policy.context import issue_context

GOALS = {
    "grants_issued_per_s": Goal(">=", 1500),
    "grants_issued_per_s_postgres": Goal(">=", 1500),
    "grants_issued_vs_cpu": Goal(">=", 0.9),
    "check_warm_p50_us": Goal("<=", 50),
    "pop_check_vs_raw_verify": Goal("<=", 1.3),
    "revoke_100k_s": Goal("<", 1),
}


@dataclass(frozen=True)
class Plan:
    """How much to measure: rounds of each phase, and the revocations' size and repeats."""

    issue_rounds: int
    check_rounds: int
    crypto_rounds: int
    full_check_rounds: int
    warmup_rounds: int
    revoke_grants: int
    revoke_repeats: int
    callers: int = 32
    issue_seconds: float = 10
    cpu_issues: int = 1000
    tokens: int = TOKENS  # distinct grants the checks rotate over


FULL = Plan(issue_rounds=3000, check_rounds=20_000, crypto_rounds=20_000, full_check_rounds=2000,
            warmup_rounds=200, revoke_grants=100, revoke_repeats=3)
QUICK = Plan(issue_rounds=120, check_rounds=800, crypto_rounds=2000, full_check_rounds=120,
             warmup_rounds=20, revoke_grants=20, revoke_repeats=1, issue_seconds=2,
             cpu_issues=200)
SMOKE = Plan(issue_rounds=10, check_rounds=50, crypto_rounds=50, full_check_rounds=10,
             warmup_rounds=2, revoke_grants=3, revoke_repeats=1,  # 3: the real grants
             callers=4, issue_seconds=0.3, cpu_issues=10, tokens=4)


# --- the phases -----------------------------------------------------------------------------


def issuance(backends: Sequence[Backend], engine: PolicyEngine,
             sqlite_write: Callable[[object], object], pg_write: Callable[[object], object],
             plan: Plan) -> dict[str, Latency]:
    """``issue`` on each backend; a ``grant:issue`` decision and a bare durable commit.

    The parts run interleaved with the store calls, as they do inside ``issue``.
    """
    lite, now = backends[0], SystemClock().now()
    request = DecisionRequest(EntityRef("Agent", AGENT), "grant:issue", EntityRef("Tool", TOOL),
                              issue_context(now=now, task=lite.task_id, purpose="bench",
                                            on_behalf_of="alice@acme.example", ttl_seconds=300,
                                            max_uses=None))
    variants: dict[str, Variant] = {
        f"issue_{b.name}": (partial(b.authority.issue, b.task_id), [SCOPE]) for b in backends}
    variants |= {
        "decide_grant_issue": (engine.decide, [request]),
        "commit_sqlite": (sqlite_write, NO_INPUT),
        "commit_postgres": (pg_write, NO_INPUT),
    }
    return harness.measure(variants, plan.issue_rounds, plan.warmup_rounds)


def fresh_tokens(backends: Sequence[Backend], count: int) -> None:
    """``count`` new grants for each backend (well within their lifetime), verified once."""
    for b in backends:
        b.tokens = [b.authority.issue(b.task_id, SCOPE) for _ in range(count)]
        for grant in b.tokens:
            b.authority.inspect(grant.token)  # verified once: the signature is cached


def checking(backends: Sequence[Backend], plan: Plan) -> dict[str, Latency]:
    """Warm checks without a proof (signature cached), against decoding alone; the grants
    are issued afresh (untimed) every 2,000 rounds, so that a slow run on a busy machine
    never outlives them."""
    lite = backends[0]
    inputs: dict[str, list[str]] = {b.name: [] for b in backends}
    at = [SystemClock().now()]

    def refill() -> None:
        fresh_tokens(backends, plan.tokens)
        for b in backends:
            inputs[b.name][:] = [g.token for g in b.tokens]
        at[0] = SystemClock().now()

    refill()
    variants: dict[str, Variant] = {
        f"inspect_{b.name}": (b.authority.inspect, inputs[b.name]) for b in backends}
    variants["decode_warm"] = (lambda token: lite.codec.decode(token, now=at[0]),
                               inputs[lite.name])
    return harness.measure(variants, plan.check_rounds, plan.warmup_rounds, refill=refill,
                           block=2000)


def crypto(lite: Backend, agent_key: ec.EllipticCurvePrivateKey, plan: Plan
           ) -> dict[str, Latency]:
    """Signing a grant's claims with joserfc, ``verify_proof``, and raw ``cryptography``
    ES256 sign and verify of messages of the same sizes.

    In a rotation of their own: interleaved with store calls they slow down (cold
    caches), joserfc signing two- to threefold and ``verify_proof`` more than the raw
    verify, which would blur both the rates and the ratio.
    """
    block = 256
    token = lite.tokens[0].token
    issuer = lite.keyring.current()
    header = {"alg": "ES256", "kid": issuer.kid, "typ": "proctor-grant+jwt"}
    claims = lite.tokens[0].claims.as_claims()
    signing_input = token.rsplit(".", 1)[0].encode()
    issuer_private = issuer.key.private_key
    assert isinstance(issuer_private, ec.EllipticCurvePrivateKey)
    thumbprint = jwk_thumbprint(public_jwk(agent_key))
    made: list[datetime] = []
    pool: list[str] = []

    def refill() -> None:
        made[:] = [SystemClock().now()]
        pool[:] = [make_proof(agent_key, token, method="tools/call", target=TARGET, now=made[0])
                   for _ in range(block)]

    refill()
    message = pool[0].rsplit(".", 1)[0].encode()  # a proof's signing input
    signature = agent_key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = agent_key.public_key()
    variants: dict[str, Variant] = {
        "sign_joserfc": (lambda _: jwt.encode(header, claims, issuer.key, algorithms=["ES256"]),
                         NO_INPUT),
        "sign_raw": (lambda _: issuer_private.sign(signing_input, ec.ECDSA(hashes.SHA256())),
                     NO_INPUT),
        "verify_proof": (lambda i: verify_proof(pool[i], token=token, key_thumbprint=thumbprint,
                                                method="tools/call", target=TARGET, now=made[0]),
                         range(block)),
        "raw_verify": (lambda _: public.verify(signature, message, ec.ECDSA(hashes.SHA256())),
                       NO_INPUT),
    }
    return harness.measure(variants, plan.crypto_rounds, plan.warmup_rounds, block=block,
                           refill=refill)


def full_checks(backends: Sequence[Backend], agent_key: ec.EllipticCurvePrivateKey,
                plan: Plan) -> dict[str, Latency]:
    """``check`` with a fresh proof each time: its nonce is stored, durably."""
    fresh_tokens(backends, plan.tokens)
    block = 100
    proofs: dict[str, list[str]] = {}

    def refill() -> None:
        now = SystemClock().now()
        for b in backends:
            proofs[b.name] = [make_proof(agent_key, b.tokens[i % plan.tokens].token,
                                         method="tools/call", target=TARGET, now=now)
                              for i in range(block)]

    def check(b: Backend, i: int) -> object:
        return b.authority.check(b.tokens[i % plan.tokens].token, proofs[b.name][i],
                                 method="tools/call", target=TARGET, tool_id=TOOL, args=ARGS)

    variants: dict[str, Variant] = {
        f"check_{b.name}": (partial(check, b), range(block)) for b in backends}
    return harness.measure(variants, plan.full_check_rounds, plan.warmup_rounds, block=block,
                           refill=refill)


# --- the run --------------------------------------------------------------------------------


def run(plan: Plan, admin_url: str) -> dict[str, Any]:
    load_at_start = harness.load_average()
    phases: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        phases[name] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()

    engine = load_bundle(EXAMPLES).engine()
    agent_key = ec.generate_private_key(ec.SECP256R1())
    with (tempfile.TemporaryDirectory() as tmp, harness.postgres_database(admin_url) as pg_url,
          postgres_commit(pg_url) as (pg_write, pg_settings),
          sqlite_commit(Path(tmp) / "bare.db") as sqlite_write):
        lite = open_backend("sqlite", Path(tmp) / "sqlite",
                            f"sqlite:///{Path(tmp) / 'proctor.db'}", agent_key)
        pg = open_backend("postgres", Path(tmp) / "postgres", pg_url, agent_key)
        backends = (lite, pg)
        lap("setup")
        issued = issuance(backends, engine, sqlite_write, pg_write, plan)
        lap("issue")
        together = {b.name: {"cpu_ms": sequential_cpu_ms(b, plan.cpu_issues),
                             **concurrent_issuance(b, plan.callers, plan.issue_seconds)}
                    for b in backends}
        lap("issue_concurrent")
        checked = checking(backends, plan)
        lap("check")
        checked |= crypto(lite, agent_key, plan)
        lap("crypto")
        checked |= full_checks(backends, agent_key, plan)
        lap("full_check")
        revoked = {b.name: revocation(b, plan.revoke_grants, plan.revoke_repeats)
                   for b in backends}
        lap("revoke")
        for b in backends:
            b.close()
    return report(plan, issued, together, checked, revoked, {
        "sqlite": sqlite3.sqlite_version, "postgres": pg_settings, "load_at_start": load_at_start,
        "phases_s": phases})


def report(plan: Plan, issued: dict[str, Latency], together: dict[str, dict[str, float]],
           checked: dict[str, Latency], revoked: dict[str, Revocation], env: dict[str, Any]
           ) -> dict[str, Any]:
    raw = checked["raw_verify"].p50_us
    seconds = {k: statistics.median(r.seconds) if r.seconds else None for k, r in revoked.items()}
    measured = [s for s in seconds.values() if s is not None]
    # the goal holds for both backends, so the slower one decides it
    slowest = max(measured) if len(measured) == len(seconds) else None
    all_revoked = all(r.all_revoked for r in revoked.values())
    figures: dict[str, float | None] = {
        "grants_issued_per_s": together["sqlite"]["per_s"],
        "grants_issued_per_s_postgres": together["postgres"]["per_s"],
        "grants_issued_vs_cpu": together["sqlite"]["per_s"] * together["sqlite"]["cpu_ms"] / 1e3,
        "check_warm_p50_us": checked["inspect_sqlite"].p50_us,
        "pop_check_vs_raw_verify": checked["verify_proof"].p50_us / raw,
        "revoke_100k_s": slowest,
    }
    met: dict[str, bool | None] = {}
    for key, goal in GOALS.items():
        value = figures[key]
        met[key] = None if value is None else goal.is_met(value)
    met["revoke_100k_s"] = (None if plan is not FULL  # fewer nodes do not judge a 100,000 goal
                            else bool(met["revoke_100k_s"]) and all_revoked)
    return {
        **{k: None if v is None else round(v, 3) for k, v in figures.items()},
        "all_descendants_revoked": all_revoked,
        "revoke_nodes": plan.revoke_grants * GRANT_NODES,
        "goals": {k: str(goal) for k, goal in GOALS.items()},
        "goals_met": met,
        "for_the_record": {
            "issue_cpu_ms": {k: round(v["cpu_ms"], 3) for k, v in together.items()},
            "issue_concurrent": {k: {"issued": v["issued"],
                                     "cpu_ms_per_grant": round(v["cpu_ms_per_grant"], 3)}
                                 for k, v in together.items()},
            "issued_one_thread_per_s": {k.removeprefix("issue_"): round(v.per_s, 1)
                                        for k, v in issued.items() if k.startswith("issue_")},
            "signing_per_s": round(checked["sign_joserfc"].per_s),
            "issued_vs_signing": round(issued["issue_sqlite"].per_s
                                       / checked["sign_joserfc"].per_s, 3),
            "raw_signing_per_s": round(checked["sign_raw"].per_s),
            "sqlite_durable_commits_per_s": round(issued["commit_sqlite"].per_s),
            "postgres_durable_commits_per_s": round(issued["commit_postgres"].per_s),
            "codec_decode_warm_p50_us": round(checked["decode_warm"].p50_us, 2),
            "check_warm_p50_us_postgres": round(checked["inspect_postgres"].p50_us, 2),
            "verify_proof_p50_us": round(checked["verify_proof"].p50_us, 2),
            "raw_verify_p50_us": round(raw, 2),
            "check_full_p50_us": round(checked["check_sqlite"].p50_us, 2),
            "check_full_vs_raw_verify": round(checked["check_sqlite"].p50_us / raw, 3),
            "check_full_p50_us_postgres": round(checked["check_postgres"].p50_us, 2),
            "check_full_postgres_vs_raw_verify": round(checked["check_postgres"].p50_us / raw, 3),
            "revoke_s": {k: None if v is None else round(v, 3) for k, v in seconds.items()},
            "revoke_in_force_s": {k: round(statistics.median(r.in_force_seconds), 4)
                                  if r.in_force_seconds else None for k, r in revoked.items()},
            "revoke_marked_s": {k: round(statistics.median(r.marked_seconds), 3)
                                if r.marked_seconds else None for k, r in revoked.items()},
            "revoke_call_cpu_s": {k: round(statistics.median(r.call_cpu_seconds), 3)
                                  if r.call_cpu_seconds else None for k, r in revoked.items()},
            "revoke_cpu_s": {k: round(statistics.median(r.cpu_seconds), 3)
                             if r.cpu_seconds else None for k, r in revoked.items()},
        },
        "latency_us": {k: v.as_json("p50_us", "p99_us", "mean_us", digits=2)
                       for k, v in (issued | checked).items()},
        "revocation": {k: {"runs_s": [round(s, 3) for s in r.seconds],
                           "in_force_s": [round(s, 4) for s in r.in_force_seconds],
                           "marked_s": [round(s, 3) for s in r.marked_seconds],
                           "revoked": r.revoked,
                           "all_descendants_revoked": r.all_revoked,
                           "others_untouched": r.others_untouched, "error": r.error}
                       for k, r in revoked.items()},
        "workload": {
            "scope": SCOPE.as_json(), "issue_rounds": plan.issue_rounds,
            "check_rounds": plan.check_rounds, "crypto_rounds": plan.crypto_rounds,
            "full_check_rounds": plan.full_check_rounds, "issue_callers": plan.callers,
            "issue_seconds": plan.issue_seconds,
            "revoke_shape": f"1 task > {plan.revoke_grants} grants > "
                            + " > ".join(str(f) for f in FANOUT) + " per parent",
            "revoke_repeats": plan.revoke_repeats, "threads": 1,
        },
        "machine": harness.machine(
            env["load_at_start"],
            versions=harness.versions("cryptography", "joserfc", "sqlalchemy", "psycopg",
                                      "cedarpy"),
            sqlite=env["sqlite"], postgres=env["postgres"], phases_s=env["phases_s"]),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{'latency (us)':<26}{'p50':>10}{'p99':>10}{'mean':>10}")
    for name, f in report["latency_us"].items():
        print(f"{name:<26}{f['p50_us']:>10.1f}{f['p99_us']:>10.1f}{f['mean_us']:>10.1f}")
    print()
    print(f"{'figure':<30}{'value':>12}  {'goal':<8}met")
    for key, goal in report["goals"].items():
        value, met = report[key], report["goals_met"][key]
        shown = "n/a" if value is None else f"{value:,.3f}"
        verdict = "not judged" if met is None and value is not None else (
            "yes" if met else "NO")
        print(f"{key:<30}{shown:>12}  {goal:<8}{verdict}")
    print(f"{'all_descendants_revoked':<30}{report['all_descendants_revoked']!s:>12}"
          f"  (revoke_nodes {report['revoke_nodes']:,})")
    print()
    for key, value in report["for_the_record"].items():
        print(f"{key:<34}{value}")
    for name, r in report["revocation"].items():
        print(f"{'revocation ' + name:<34}{r}")
    print(f"{'machine':<34}{report['machine']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = harness.parser("grants: issue, check, revoke, with baselines")
    harness.add_postgres(parser)
    options = parser.parse_args(argv)
    report_ = {"mode": harness.mode(options),
               **run(harness.sized(options, full=FULL, quick=QUICK, smoke=SMOKE), options.postgres)}
    print_table(report_)
    harness.print_json_line(report_)
    revocations = report_["revocation"].items()
    errors = [f"{k}: {r['error']}" for k, r in revocations if r["error"]]
    errors += [f"{k}: descendants left unrevoked" for k, r in revocations
               if not r["all_descendants_revoked"] and not r["error"]]
    errors += [f"{k}: nodes outside the subtree revoked" for k, r in revocations
               if not r["others_untouched"]]
    if errors:
        sys.exit("revocation failed: " + "; ".join(errors))


if __name__ == "__main__":
    main()

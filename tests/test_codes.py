"""The error registry (proctor.codes) against the code that raises and returns codes:
every code given anywhere in src/ is declared, every declared code is given somewhere,
each code is raised by one error class only, and docs/errors.md is what the registry
generates."""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor import codes, errors
from proctor.client import errors as client_errors
from proctor.codes import REGISTRY
from proctor.policy import ReasonCode

# the codes of answers that are not errors: an allowed call, a grant that passes a check
_NOT_ERRORS = {"allow", "valid"}
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "proctor"

# Where a call gives a code: the function's name and the positions of its code
# arguments (None: every positional argument); any `code=` keyword is a code too.
_CODE_ARGS: dict[str, tuple[int, ...] | None] = {
    "rpc_error": (0,), "unauthenticated": (0,), "_refused": (1,), "_refused_after": (1,),
    "problem_response": (1,), "reject": (2,), "_answer": (2,), "_refusal": (1,),
    "CallVerdict": (1,), "Decision": (1,), "CallRefusedError": (1,), "Refusal": (0,),
}
# The families that take their code as the first argument.
_FAMILIES = {name for module in (errors, client_errors) for name, cls in vars(module).items()
             if isinstance(cls, type) and issubclass(cls, errors.ProctorError)
             and "code" in inspect.signature(cls.__init__).parameters
             and next(iter(list(inspect.signature(cls.__init__).parameters)[1:]), "") == "code"}
# Classes whose code is their own (set on the class), by name.
_CLASS_CODES = {name: cls.code for name, cls in vars(errors).items()
                if isinstance(cls, type) and issubclass(cls, errors.ProctorError)
                and "code" in vars(cls)}


def _name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else "")


def _strings(nodes: list[ast.expr]) -> Iterator[ast.Constant]:
    for node in nodes:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node
        elif isinstance(node, ast.IfExp):  # `"a" if x else "b"` gives either
            yield from _strings([node.body, node.orelse])


# The scans parse every module of src/ (~1.4 s of CPU): once per process, by the first
# test that reads them, not when the module is collected (every worker collects it).
@functools.cache
def _sources() -> tuple[tuple[str, ast.Module], ...]:
    """Every module of src/proctor, by its path under it, parsed."""
    return tuple((str(path.relative_to(SRC)), ast.parse(path.read_text(encoding="utf-8")))
                 for path in sorted(SRC.rglob("*.py")))


@functools.cache
def _given() -> dict[str, list[str]]:
    """Every code a raise site, a refusal, a verdict or an audit event gives, with where."""
    found: dict[str, list[str]] = {}

    def add(code: str, where: str) -> None:
        found.setdefault(code, []).append(where)

    for where, tree in _sources():
        if where == "codes.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _name(node)
                given: list[ast.expr] = [k.value for k in node.keywords if k.arg == "code"]
                if name in _FAMILIES and node.args:
                    given.append(node.args[0])
                elif name in _CODE_ARGS:
                    positions = _CODE_ARGS[name]
                    given += [a for i, a in enumerate(node.args)
                              if positions is None or i in positions]
                elif name in _CLASS_CODES:
                    add(_CLASS_CODES[name], f"{where}:{node.lineno}")
                for constant in _strings(given):
                    if " " in str(constant.value):
                        continue  # a message, not a code
                    add(str(constant.value), f"{where}:{constant.lineno}")
            # `code: Code = "..."` on a verdict, an error class or a local
            if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name) \
                    and node.annotation.id in {"Code", "VerdictCode"} and node.value is not None:
                for constant in _strings([node.value]):
                    add(str(constant.value), f"{where}:{constant.lineno}")
    for reason in ReasonCode:
        if reason is not ReasonCode.PERMITTED:
            add(reason.value, "policy/model.py (ReasonCode)")
    return found


@functools.cache
def _raised_by() -> dict[str, dict[str, list[str]]]:
    """Every code an error class is made with (raised, or kept to raise), by class:
    ``Family("code", ...)``, ``partial(Family, "code")`` or a class with its own code."""
    found: dict[str, dict[str, list[str]]] = {}
    for where, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name, args = _name(node), list(node.args)
            if name == "partial" and args and isinstance(args[0], ast.Name):
                name, args = args[0].id, args[1:]
            codes_made: list[str] = []
            if name in _FAMILIES:
                given = [k.value for k in node.keywords if k.arg == "code"] + args[:1]
                codes_made += [str(c.value) for c in _strings(given)]
            elif name in _CLASS_CODES:
                codes_made.append(str(_CLASS_CODES[name]))
            for code in codes_made:
                found.setdefault(code, {}).setdefault(name, []).append(
                    f"{where}:{node.lineno}")
    return found


def test_every_code_given_in_src_is_in_the_registry() -> None:
    undeclared = {code: where for code, where in _given().items()
                  if code not in REGISTRY and code not in _NOT_ERRORS}
    assert undeclared == {}


def test_every_code_in_the_registry_is_given_somewhere() -> None:
    unused = sorted(set(REGISTRY) - set(_given()))
    assert unused == []


def test_the_scan_finds_the_codes_of_each_kind_of_site() -> None:
    # a family's first argument, a class's own code, a JSON-RPC refusal, an API
    # refusal, a verdict's deny and a policy reason: if one of these goes missing the
    # scan above stopped seeing a kind of site
    assert {"grant_revoked", "store_unavailable", "tool_unknown", "credentials_missing",
            "enforcement_error", "no_matching_permit"} <= set(_given())


def test_no_code_is_raised_by_two_error_classes() -> None:
    # a code met in two parts has one class both raise (AgentError), so a handler
    # never has to know which family a code came from
    twice = {code: by for code, by in _raised_by().items() if len(by) > 1}
    assert twice == {}


def test_the_family_scan_sees_calls_partials_and_classes_with_their_own_code() -> None:
    raised_by = _raised_by()
    assert set(raised_by["agent_unknown"]) == {"AgentError"}
    assert set(raised_by["agent_key_invalid"]) == {"IdentityError"}  # also a partial
    assert any(where.startswith("cli/agent.py")
               for where in raised_by["agent_key_invalid"]["IdentityError"])
    assert set(raised_by["grant_wrong_agent"]) == {"GrantError"}
    assert set(raised_by["store_unavailable"]) == {"StoreError"}


def test_an_agent_error_is_answered_by_a_handler_of_either_family() -> None:
    refused = errors.AgentError("agent_not_active", "agent `a` is suspended")
    assert isinstance(refused, errors.IdentityError) and isinstance(refused, errors.GrantError)
    assert (refused.code, refused.message, refused.holder) == \
        ("agent_not_active", "agent `a` is suspended", None)


def test_every_error_class_that_sets_a_code_sets_a_registered_one() -> None:
    assert {n: c for n, c in _CLASS_CODES.items() if c not in REGISTRY} == {}


def test_every_policy_reason_but_an_allows_is_a_registered_code() -> None:
    assert {r.value for r in ReasonCode} - set(REGISTRY) == {ReasonCode.PERMITTED.value}


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_each_code_has_a_one_line_meaning_a_status_and_a_json_rpc_code(code: str) -> None:
    info = REGISTRY[code]  # type: ignore[index]
    assert info.meaning and "\n" not in info.meaning and not info.meaning.endswith(".")
    assert 400 <= info.status <= 599
    assert info.rpc < 0


def test_the_api_and_the_gateways_read_their_answers_from_the_registry() -> None:
    from proctor.gateway.rpc import rpc_error
    from proctor.server.problems import AUTH_CODES, problem_of, status_for

    assert status_for("grant_revoked") == 403 and status_for("agent_unknown") == 404
    assert problem_of(errors.GrantError("task_unknown", "gone")).status == 404
    assert problem_of(errors.StoreError("down")).status == 503
    # the server's own key it cannot use is the server's failure, not the caller's
    assert problem_of(errors.SigningKeyError("no private half")).status == 500
    assert rpc_error("tool_unknown", "no").error.code == codes.INVALID_PARAMS
    assert rpc_error("grant_expired", "no").error.code == codes.CALL_DENIED
    assert rpc_error("store_unavailable", "no", code=codes.SESSION_CLOSED).error.code \
        == codes.SESSION_CLOSED
    assert "proof_expired" in AUTH_CODES and "grant_unknown" not in AUTH_CODES


def test_docs_errors_md_is_generated_from_the_registry() -> None:
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert page == codes.markdown(), "run scripts/errors-doc"


def test_only_a_failure_that_passes_says_when_to_retry() -> None:
    from proctor.gateway.rpc import rpc_error
    from proctor.server.problems import problem_response

    # a policy that cannot be evaluated fails the same way every time: not a 503, which
    # clients retry
    assert codes.http_status("engine_error") == 500
    assert "retry-after" not in problem_response(500, "engine_error", "no").headers
    assert "retry_after_seconds" not in (rpc_error("engine_error", "no").error.data or {})
    for code in ("store_unavailable", "audit_unavailable"):
        assert problem_response(503, code, "no").headers["retry-after"] == "1"
        assert rpc_error(code, "no").error.data == {"reason": code, "retry_after_seconds": 1}
    assert all(info.status == 503 for info in REGISTRY.values()
               if info.retry_after_seconds is not None)

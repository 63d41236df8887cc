"""Tools discovered on upstream connections: catalog entries, argument validators, and
the policy engine's schema extended to cover them.

Labels come, first match wins, from the gateway config's entry for the tool, the
policy bundle's ``tools.yaml``, the config's labels for the upstream, and the
defaults (``internal``; ``localhost`` for a stdio server, the URL's host for an
HTTP one). The argument schema always comes from the live server's
``inputSchema``: it is what the server will actually accept.

A tool whose schema the gateway will not evaluate (:mod:`proctor.gateway.schemas`: a
``$ref`` outside it or one within it that does not resolve, a pattern with no
linear-time match, references that written out make it exponential) is left out, as an
invalid schema is, and logged; the connection's listing remembers why
(:class:`Listing`), and a call of it on that connection is refused with
``tool_schema_refused``. Checking arguments never raises: a check that spends its work
budget, or a schema that fails while it is evaluated, refuses the call with that code
too.

When discovery brings a new tool or a changed schema, the engine is rebuilt for
the extended catalog and the active policies are validated again. If they no
longer validate, the engine keeps its previous schema: the new tools are then
not in it, and every call to them is denied by the decision point.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
from jsonschema import SchemaError
from referencing.exceptions import Unresolvable

from proctor.codes import Code
from proctor.documents import check_nesting
from proctor.errors import ConfigError, DocumentError, PolicyValidationError, ProctorError
from proctor.gateway.config import ToolLabels, UpstreamConfig
from proctor.gateway.schemas import SchemaCheck, SchemaRefusedError, safe_validator
from proctor.policy import PolicyEngine, Sensitivity, ToolSpec
from proctor.policy.known_tools import KnownTools

__all__ = ["COMPLETION", "ELICITATION_ANSWER", "PROMPT_GET", "RESOURCE_READ",
           "RESOURCE_SUBSCRIBE", "RESOURCE_UNSUBSCRIBE", "SAMPLING_ANSWER", "ArgumentProblem",
           "ExposedTool", "Listing", "ToolRegistry"]

log = logging.getLogger(__name__)

# Every request of the agent that reaches an upstream with values it chose is decided
# as a tool of that server, so that scopes and policies can name it:
# `docs/resources.read` with `context.args.uri`, `docs/completion.complete` with
# `context.args.value`. A completion's `context` (the other arguments already filled
# in) has no Cedar type: policies cannot name it, the grant-leak check sees it.
RESOURCE_READ = "resources.read"
PROMPT_GET = "prompts.get"
COMPLETION = "completion.complete"
RESOURCE_SUBSCRIBE = "resources.subscribe"
RESOURCE_UNSUBSCRIBE = "resources.unsubscribe"
# The agent's answer to an upstream's sampling or elicitation request goes to that
# upstream: decided as a tool of it too (gateway/answers.py), with the answer's text.
SAMPLING_ANSWER = "sampling.answer"
ELICITATION_ANSWER = "elicitation.answer"
_URI: dict[str, Any] = {"type": "object", "properties": {"uri": {"type": "string"}},
                        "required": ["uri"], "additionalProperties": False}
_PSEUDO_TOOLS: dict[str, dict[str, Any]] = {
    RESOURCE_READ: {"type": "object", "properties": {"uri": {"type": "string"}},
                    "required": ["uri"]},
    PROMPT_GET: {"type": "object", "properties": {"name": {"type": "string"}},
                 "required": ["name"]},
    # a completion of a prompt's argument names the prompt, of a resource template's
    # the template's URI: exactly one of them
    COMPLETION: {"type": "object", "properties": {
        "prompt": {"type": "string"}, "uri": {"type": "string"},
        "argument": {"type": "string"}, "value": {"type": "string"},
        "context": {"type": "object", "additionalProperties": {"type": "string"}}},
        "required": ["argument", "value"], "additionalProperties": False},
    RESOURCE_SUBSCRIBE: _URI,
    RESOURCE_UNSUBSCRIBE: _URI,
    # the model's answer: its text (none for an image or audio), model, role, stop reason
    SAMPLING_ANSWER: {"type": "object", "properties": {
        "text": {"type": "string"}, "model": {"type": "string"}, "role": {"type": "string"},
        "stop_reason": {"type": "string"}},
        "required": ["text", "model", "role", "stop_reason"], "additionalProperties": False},
    # the user's answer: accept, decline or cancel, and what was filled in as JSON text
    ELICITATION_ANSWER: {"type": "object", "properties": {
        "action": {"type": "string"}, "content": {"type": "string"}},
        "required": ["action", "content"], "additionalProperties": False},
}
_MAX_TOOLS = 1000
_MAX_SCHEMA_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ArgumentProblem:
    """Why a call's arguments are refused before any decision: ``arguments_invalid``
    (they break the schema) or ``tool_schema_refused`` (the schema cannot be evaluated)."""

    code: Code
    message: str


@dataclass(frozen=True, slots=True)
class ExposedTool:
    """A tool the gateway can forward: its catalog entry, as listed, and its validator."""

    spec: ToolSpec
    listed: types.Tool | None
    validator: SchemaCheck

    @property
    def tool_id(self) -> str:
        return self.spec.tool_id

    def argument_errors(self, arguments: Mapping[str, Any]) -> ArgumentProblem | None:
        """The first way ``arguments`` break the tool's ``inputSchema`` (naming the
        argument, never its value), or None. Never raises: a schema that fails while it
        is evaluated refuses the call (``tool_schema_refused``)."""
        try:
            error = next(iter(sorted(self.validator.iter_errors(dict(arguments)),
                                     key=lambda e: [str(p) for p in e.absolute_path])), None)
        except SchemaRefusedError as exc:  # the check spent its work budget
            log.warning("the input schema of %r is over its work budget on a call",
                        self.tool_id)
            return _unevaluated(self.tool_id, exc.message)
        except Unresolvable as exc:
            return _unevaluated(self.tool_id, f"a reference within it does not resolve "
                                f"(`{str(exc.ref)[:200]}`)")
        except Exception as exc:  # fail closed: the decision path never raises
            log.error("the input schema of %s failed on a call: %s", self.tool_id,
                      type(exc).__name__)
            return _unevaluated(self.tool_id, f"it failed ({type(exc).__name__})")
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        return ArgumentProblem("arguments_invalid", f"argument `{where}` does not match the "
                               f"tool's input schema ({error.validator})")


@dataclass(frozen=True, slots=True)
class Listing:
    """One connection's listing as the registry takes it: the tools it can forward, and
    why each tool it left out for its schema was refused, both by upstream tool name."""

    tools: dict[str, ExposedTool]
    refused: dict[str, str]


def _unevaluated(tool_id: str, why: str) -> ArgumentProblem:
    return ArgumentProblem("tool_schema_refused", f"the input schema of `{tool_id}` cannot "
                           f"be evaluated: {why}")


class ToolRegistry:
    """Every tool the gateway has seen, by tool id; shared by all sessions. What one
    connection listed (its tools, and its refusals) is that connection's
    (:class:`Listing`): another session's listing never changes it."""

    def __init__(self, engine: PolicyEngine, known: KnownTools | None = None) -> None:
        self._engine = engine
        self._stored = known
        self._bundle = {t.tool_id: t for t in engine.catalog}
        self._known: dict[str, ExposedTool] = {}
        self._lock = threading.Lock()

    def register(self, upstream: UpstreamConfig, listed: Iterable[types.Tool]) -> Listing:
        """The tools of one connection, by upstream tool name; extends the engine when
        they are new. A tool whose schema differs (as JSON: ``true`` is not ``1``) from
        the one first registered under its id is left out (and logged): two connections
        must not disagree, and a call is checked by the validator of the schema its own
        connection listed."""
        fresh: list[ExposedTool] = []
        usable: dict[str, ExposedTool] = {}
        refused: dict[str, str] = {}
        for tool in list(listed)[:_MAX_TOOLS]:
            if tool.name in _PSEUDO_TOOLS:
                log.warning("upstream `%s` tool %r shadows a gateway name; left out",
                            upstream.name, tool.name)  # the upstream's name: escaped
                continue
            exposed = self._build(upstream, tool.name, tool.input_schema, tool, refused)
            if exposed is None:
                continue
            with self._lock:
                known = self._known.get(exposed.tool_id)
            if known is not None and _as_json(known.spec.input_schema) != _as_json(
                    exposed.spec.input_schema):
                log.error("upstream `%s` lists %r with another schema than before; left out",
                          upstream.name, tool.name)
                continue
            usable[tool.name] = known or exposed
            if known is None:
                fresh.append(exposed)
        for name, schema in _PSEUDO_TOOLS.items():
            pseudo = self._known.get(f"{upstream.name}/{name}") or self._build(
                upstream, name, schema, None, refused)
            assert pseudo is not None
            usable[name] = pseudo
            if f"{upstream.name}/{name}" not in self._known:
                fresh.append(pseudo)
        if fresh:
            self._extend(fresh)
        return Listing(usable, refused)

    def _build(self, upstream: UpstreamConfig, name: str, schema: Mapping[str, Any],
               listed: types.Tool | None, refused: dict[str, str]) -> ExposedTool | None:
        own = upstream.tools.get(name, ToolLabels())
        bundled = self._bundle.get(f"{upstream.name}/{name}")
        default_destination = (urlsplit(upstream.url).hostname or "localhost"
                               if upstream.url else "localhost")
        try:
            # the schema drives recursive validators and the Cedar schema: bounded first
            check_nesting(schema, what="input schema")
            if len(json.dumps(schema)) > _MAX_SCHEMA_BYTES:
                raise ConfigError(f"input schema is over {_MAX_SCHEMA_BYTES} bytes")
            validator = safe_validator(schema)
            # the tool's own entry, then tools.yaml, then the upstream's labels
            layers = [own, _labels_of(bundled), upstream.labels]
            sensitivity = next((x.sensitivity for x in layers if x.sensitivity is not None),
                               Sensitivity.INTERNAL)
            destination = next((x.destination for x in layers if x.destination),
                               default_destination)
            connector = next((x.connector for x in layers if x.connector), None)
            spec = ToolSpec(server=upstream.name, name=name, sensitivity=sensitivity,
                            destination=destination, connector=connector,
                            input_schema=dict(schema))
        except SchemaRefusedError as exc:
            log.error("upstream `%s` tool %r left out: its input schema is refused: %r",
                      upstream.name, name[:128], exc.message)
            refused[name] = exc.message
            return None
        except (ConfigError, DocumentError, SchemaError) as exc:
            message = exc.message if isinstance(exc, ProctorError) else "invalid input schema"
            log.error("upstream `%s` tool %r left out: %r", upstream.name, name[:128], message)
            return None
        return ExposedTool(spec, listed, validator)

    def _extend(self, fresh: list[ExposedTool]) -> None:
        with self._lock:
            new = [t for t in fresh if t.tool_id not in self._known]
            changed = [t.spec for t in new if self._engine.catalog.by_action(t.spec.action_id)
                       != t.spec]
            if changed:
                try:
                    self._engine.extend_catalog(changed)
                except PolicyValidationError as exc:
                    # Fail closed: the engine keeps its schema, so these calls are denied.
                    log.error("policies do not validate with the discovered tools (%r); "
                              "calls to them will be denied", exc.message)
            for tool in new:
                self._known[tool.tool_id] = tool
        if self._stored is not None and new:
            # every process that decides must know what this one discovered
            self._stored.record(t.spec for t in new)


def _as_json(schema: Mapping[str, Any]) -> str:
    """``schema`` as canonical JSON: Python's ``==`` takes ``True`` for ``1``, which a
    schema's ``const`` or ``enum`` does not."""
    return json.dumps(schema, sort_keys=True)


def _labels_of(spec: ToolSpec | None) -> ToolLabels:
    """The labels ``tools.yaml`` gave the tool; those it left to a default are None, so
    the upstream's own labels stand (a default ``internal`` or ``localhost`` there hid a
    restricted or remote upstream from the policies that read them)."""
    if spec is None:
        return ToolLabels()
    given = spec.declared
    return ToolLabels(spec.sensitivity if "sensitivity" in given else None,
                      spec.destination if "destination" in given else None,
                      spec.connector if "connector" in given else None)

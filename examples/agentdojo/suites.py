"""The AgentDojo side of the replay: suites, their tools' JSON Schemas, the
ground-truth calls of user and injection tasks, and where a task's agent first
reads injected content.

Read from the installed ``agentdojo`` package (benchmark version v1.2.2), the way
AgentDojo itself does it: a task's ground truth is computed from its
pre-environment (the suite's environment after ``init_environment``), and the
injection points a user task reaches are found by running its ground truth on an
environment whose injection vectors hold canaries (``get_injection_candidates``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime, TaskEnvironment
from agentdojo.task_suite.load_suites import get_suites
from agentdojo.task_suite.task_suite import TaskSuite

__all__ = ["BENCHMARK_VERSION", "Call", "HarnessError", "InjectionTask", "ToolDefinition",
           "UserTask", "injection_tasks", "load_suite", "suite_names", "tool_definitions",
           "user_tasks"]

BENCHMARK_VERSION = "v1.2.2"


class HarnessError(Exception):
    """Something the harness cannot run with; the message is one line for a person."""


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """An AgentDojo function as a tool: its name, description and argument schema."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """One ground-truth function call."""

    function: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UserTask:
    """A user task: its request, its ground truth on the plain environment, and (on the
    environment with canaries in every injection vector) its ground truth again and the
    index of the first call whose output carries injected content (None: never)."""

    id: str
    prompt: str
    calls: tuple[Call, ...]
    injected_calls: tuple[Call, ...]
    injection_seen_at: int | None


@dataclass(frozen=True, slots=True)
class InjectionTask:
    """An injection task: the attacker's goal and its ground-truth calls."""

    id: str
    goal: str
    calls: tuple[Call, ...]


def suite_names() -> list[str]:
    """The suites of the installed AgentDojo at :data:`BENCHMARK_VERSION`."""
    return sorted(get_suites(BENCHMARK_VERSION))


def load_suite(name: str) -> TaskSuite[Any]:
    """The suite called ``name``; raises :class:`HarnessError` if AgentDojo has none."""
    suites = get_suites(BENCHMARK_VERSION)
    if name not in suites:
        raise HarnessError(f"suite `{name}` is not in AgentDojo {BENCHMARK_VERSION} "
                           f"(it has {', '.join(sorted(suites))})")
    return suites[name]


def tool_definitions(suite: TaskSuite[Any]) -> list[ToolDefinition]:
    """Every tool of ``suite`` with the JSON Schema of its arguments (from the pydantic
    model AgentDojo builds from the function's signature and docstring)."""
    tools = []
    for function in suite.tools:
        try:
            schema = function.parameters.model_json_schema()
        except Exception as exc:  # a model pydantic cannot describe
            raise HarnessError(f"tool `{function.name}` of suite `{suite.name}` has no JSON "
                               f"Schema: {type(exc).__name__}") from exc
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise HarnessError(f"tool `{function.name}` of suite `{suite.name}` has no JSON "
                               "Schema of an object for its arguments")
        tools.append(ToolDefinition(function.name, function.description, schema))
    return tools


def user_tasks(suite: TaskSuite[Any]) -> list[UserTask]:
    """The suite's user tasks in order, with their ground truth and injection point."""
    canaries = _canaries(suite)
    # Each environment is read once (AgentDojo parses a large YAML file each time) and
    # each task starts from its own deep copy of it.
    plain_default = suite.load_and_inject_default_environment({})
    injected_default = suite.load_and_inject_default_environment(canaries)
    tasks = []
    for task in _ordered(suite.user_tasks):
        plain = task.init_environment(plain_default.model_copy(deep=True))
        injected = task.init_environment(injected_default.model_copy(deep=True))
        calls = _calls(task.ground_truth(plain.model_copy(deep=True)), task.ID)
        injected_calls = _calls(task.ground_truth(injected.model_copy(deep=True)), task.ID)
        seen_at = _first_seen(suite, injected, injected_calls, list(canaries.values()))
        tasks.append(UserTask(task.ID, task.PROMPT, calls, injected_calls, seen_at))
    return tasks


def injection_tasks(suite: TaskSuite[Any]) -> list[InjectionTask]:
    """The suite's injection tasks in order, their ground truth computed on the
    environment with canaries (the environment an attacked agent works in)."""
    environment = suite.load_and_inject_default_environment(_canaries(suite))
    return [InjectionTask(task.ID, task.GOAL,
                          _calls(task.ground_truth(environment.model_copy(deep=True)), task.ID))
            for task in _ordered(suite.injection_tasks)]


def _canaries(suite: TaskSuite[Any]) -> dict[str, str]:
    return {vector: f"<CANARY---{vector}--->" for vector in suite.get_injection_vector_defaults()}


def _first_seen(suite: TaskSuite[Any], environment: TaskEnvironment, calls: tuple[Call, ...],
                canaries: list[str]) -> int | None:
    """Run ``calls`` in ``environment``; the index of the first whose output holds a canary."""
    runtime = FunctionsRuntime(suite.tools)
    for index, call in enumerate(calls):
        result, _ = runtime.run_function(environment, call.function, dict(call.args),
                                         raise_on_error=True)
        text = tool_result_to_str(result)
        if any(canary in text for canary in canaries):
            return index
    return None


def _calls(calls: list[FunctionCall], task_id: str) -> tuple[Call, ...]:
    out = []
    for call in calls:
        if any(isinstance(value, FunctionCall) for value in call.args.values()):
            raise HarnessError(f"a ground-truth call of `{task_id}` nests a call: not replayable")
        out.append(Call(call.function, dict(call.args)))
    return tuple(out)


_NUMBER = re.compile(r"(\d+)$")


def _ordered(tasks: Mapping[str, Any]) -> list[Any]:
    """Tasks by their number (``user_task_10`` after ``user_task_9``)."""
    def number(task_id: str) -> int:
        found = _NUMBER.search(task_id)
        return int(found.group(1)) if found else -1
    return [tasks[task_id] for task_id in sorted(tasks, key=number)]

"""A grant in use, and the plain decorator for any Python function.

>>> guard = Guard(client, grant)                                   # doctest: +SKIP
>>> @guarded("crm/issue_refund", guard=guard)
... def issue_refund(customer_id: str, amount_cents: int) -> str: ...
>>> issue_refund("c-1001", 2500)      # decided by proctor first; refused: CallRefusedError

The function's arguments, bound to its signature with defaults applied, are the
call's ``args`` as policy sees them. Without ``guard=``, the guard of the enclosing
``with guard:`` block is used; with none, the call is refused (``guard_missing``):
an unguarded call never runs by accident.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any, ParamSpec, TypeVar, cast

import anyio.to_thread

from proctor.client.aio import AsyncProctorClient
from proctor.client.errors import CallRefusedError
from proctor.client.protocol import ApprovalCallback
from proctor.client.sync import ProctorClient
from proctor.client.values import Grant, Verdict

__all__ = ["Guard", "current_guard", "guarded", "json_arguments"]

P = ParamSpec("P")
R = TypeVar("R")

_current: ContextVar[Guard | None] = ContextVar("proctor_guard", default=None)


class Guard:
    """What every adapter decides with: a client, the grant it uses, how long to wait for
    a human. ``grant`` may be replaced (a new grant for a new task) at any time."""

    def __init__(self, client: ProctorClient | AsyncProctorClient, grant: Grant, *,
                 approval_timeout_seconds: float | None = None,
                 on_approval: ApprovalCallback | None = None) -> None:
        self.client = client
        self.grant = grant
        self.approval_timeout_seconds = approval_timeout_seconds
        self.on_approval = on_approval
        self._tokens: list[Token[Guard | None]] = []

    def check(self, tool: str, args: Mapping[str, Any]) -> Verdict:
        """The allow for this call, or :class:`CallRefusedError` (blocking)."""
        if not isinstance(self.client, ProctorClient):
            raise CallRefusedError(tool, "guard_async_only", (
                "this guard holds an AsyncProctorClient: call the tool from async code"))
        return self.client.authorize(self.grant, tool, json_arguments(tool, args),
                                     approval_timeout_seconds=self.approval_timeout_seconds,
                                     on_approval=self.on_approval)

    async def acheck(self, tool: str, args: Mapping[str, Any]) -> Verdict:
        """The allow for this call, or :class:`CallRefusedError` (awaited)."""
        if isinstance(self.client, ProctorClient):
            return await anyio.to_thread.run_sync(self.check, tool, args)
        return await self.client.authorize(
            self.grant, tool, json_arguments(tool, args),
            approval_timeout_seconds=self.approval_timeout_seconds,
            on_approval=self.on_approval)

    def __enter__(self) -> Guard:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())


def current_guard(tool: str) -> Guard:
    """The guard of the enclosing ``with guard:`` block; none refuses the call."""
    guard = _current.get()
    if guard is None:
        raise CallRefusedError(tool, "guard_missing", (
            "no proctor guard is active: pass guard= or call inside `with guard:`"))
    return guard


def json_arguments(tool: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` as JSON values (what policy sees); anything else refuses the call."""
    try:
        result: dict[str, Any] = json.loads(json.dumps(dict(args), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CallRefusedError(tool, "arguments_invalid",
                          f"the arguments are not JSON values: {exc}") from None
    return result


def guarded(tool: str, *, guard: Guard | None = None) -> Callable[[Callable[P, R]],
                                                                  Callable[P, R]]:
    """Decide every call of the decorated function (sync or async) as ``tool`` first."""
    if "/" not in tool:
        raise ValueError(f"tool `{tool}` is not `server/tool`")

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return {k: v for k, v in bound.arguments.items() if k not in {"self", "cls"}}

        if inspect.iscoroutinefunction(function):
            asynchronous = cast(Callable[P, Awaitable[Any]], function)

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                chosen = guard or current_guard(tool)
                await chosen.acheck(tool, arguments(args, kwargs))
                return await asynchronous(*args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            chosen = guard or current_guard(tool)
            chosen.check(tool, arguments(args, kwargs))
            return function(*args, **kwargs)

        return run

    return decorate

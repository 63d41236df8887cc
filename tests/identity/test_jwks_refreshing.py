"""An issuer's key set is loaded again outside the lock that guards it: a slow identity
provider holds up the one caller that loads (or those that have no keys to use
meanwhile), never every sign-in, and one load runs at a time (single flight)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from proctor.clock import FrozenClock
from proctor.errors import IdentityError
from proctor.identity.jwks import MAX_AGE_SECONDS, REFETCH_SECONDS, Refreshing

BOUND = 30  # seconds: the longest any wait here may take (an event, never a sleep)


class SlowLoad:
    """A load that blocks until ``release`` is set, counting its calls."""

    def __init__(self, values: list[str]) -> None:
        self.values = values
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        assert self.release.wait(BOUND)
        return self.values[min(self.calls - 1, len(self.values) - 1)]


def _in_thread(fn: object) -> tuple[threading.Thread, list[object], threading.Event]:
    out: list[object] = []
    done = threading.Event()

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except Exception as exc:  # the caller's answer, raised or returned
            out.append(exc)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out, done


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 12, 7, 12, tzinfo=UTC))


def test_a_slow_load_does_not_hold_up_callers_that_have_keys(clock: FrozenClock) -> None:
    load = SlowLoad(["old", "new"])
    load.release.set()
    source = Refreshing(load, clock, what="the key set")
    assert source.current(refresh=False) == "old"
    load.release.clear()
    clock.advance(seconds=MAX_AGE_SECONDS + 1)  # old: the next caller loads it again
    loader, loaded, loader_done = _in_thread(lambda: source.current(refresh=False))
    assert load.started.wait(BOUND)
    # the load outlasts the 30 s bound on loads: only the rule of one load at a time
    # (single flight) keeps the callers below from starting loads of their own
    clock.advance(seconds=REFETCH_SECONDS + 1)
    # meanwhile another sign-in uses the keys it has, at once (it waited for the
    # provider before, up to the fetch's timeout, behind the lock)
    _, other, other_done = _in_thread(lambda: source.current(refresh=False))
    assert other_done.wait(BOUND)
    assert other == ["old"] and not loader_done.is_set()
    # a token naming a key not seen yet starts no second load while one runs
    _, unknown, unknown_done = _in_thread(lambda: source.current(refresh=True))
    load.release.set()
    assert loader_done.wait(BOUND) and unknown_done.wait(BOUND)
    assert loaded == ["new"] and unknown == ["new"]  # it waited for the load under way
    assert load.calls == 2
    loader.join(BOUND)


def test_callers_without_keys_wait_for_the_one_first_load(clock: FrozenClock) -> None:
    load = SlowLoad(["first"])
    source = Refreshing(load, clock, what="the key set")
    callers = [_in_thread(lambda: source.current(refresh=True))]
    assert load.started.wait(BOUND)
    # past the 30 s bound on loads: only single flight keeps these from loading too
    clock.advance(seconds=REFETCH_SECONDS + 1)
    callers += [_in_thread(lambda: source.current(refresh=True)) for _ in range(3)]
    load.release.set()
    for _, out, done in callers:
        assert done.wait(BOUND) and out == ["first"]
    assert load.calls == 1


def test_unknown_key_ids_load_once_per_window_and_a_failed_load_keeps_the_keys(
        clock: FrozenClock) -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("the provider is down")
        return f"set-{len(calls)}"

    source = Refreshing(load, clock, what="the key set")
    assert source.current(refresh=True) == "set-1"
    for _ in range(20):
        assert source.current(refresh=True) == "set-1"
    assert len(calls) == 1
    clock.advance(seconds=REFETCH_SECONDS)
    assert source.current(refresh=True) == "set-2"
    clock.advance(seconds=REFETCH_SECONDS)
    assert source.current(refresh=True) == "set-2"  # the failed load kept it
    assert len(calls) == 3


def test_a_first_load_that_fails_is_refused_with_its_code(clock: FrozenClock) -> None:
    def load() -> str:
        raise OSError("the provider is down")

    source: Refreshing[str] = Refreshing(load, clock, what="the key set")
    with pytest.raises(IdentityError) as refused:
        source.current(refresh=False)
    assert refused.value.code == "proof_key_unknown"

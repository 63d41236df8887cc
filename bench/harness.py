"""What every bench shares: how it measures, how it summarises, and what it reports.

- **Rotation.** ``measure`` times every variant of a group once per round, on the
  same input, in an order that starts one variant further along each round
  (``rotation``), so drift on a shared machine hits all variants alike. Rounds
  before zero are a warm-up and are not kept. Around each wall-clock reading it
  reads this thread's CPU time, which so leaves the wall-clock reading clean: the
  difference between the two is time spent waiting for a core.
- **Quantiles.** p50 is the median (``statistics.median``); other quantiles are
  nearest rank (``nearest_rank``): the smallest sample with at least that share of
  the samples at or below it.
- **Goals.** A ``Goal`` is a sign and a limit (``<= 1.3``), shown as written.
- **CPU of other processes.** ``process_cpu_seconds`` reads the kernel's count
  for a server or a gateway the bench started (``child_pid`` finds one it did not
  start itself): CPU per call, unlike wall time, hardly moves with the load.
- **The machine.** ``machine`` names the platform, the cores, Python, what the
  bench adds (versions of what it measures), and the 1-minute load average at the
  start and the end of the run: other work on the machine shows in p99 first.
- **The command line.** ``parser`` with ``--quick`` and ``--smoke`` (``sized`` picks
  the plan of the run); ``add_postgres`` for a bench
  that measures PostgreSQL, on a fresh ``proctor_bench_*`` database
  (``postgres_database``) that is dropped at the end.
- **The last line.** ``print_json_line``: one JSON object, the bench's whole report.
- **An end by signal.** ``interruptible``: SIGTERM, SIGHUP and Ctrl-C raise
  :class:`Interrupted` where the run stands, so that what it started is stopped and what
  it made is removed (its ``finally`` blocks run; Python's default for SIGTERM ends the
  process at once, leaving a server, its workers and a ``proctor_bench_*`` database
  behind), then the run exits with 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import platform
import secrets
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("PROCTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")
QUICK_HELP = "fewer samples, under 30 s"
SMOKE_HELP = ("the fewest samples that run every path, in seconds: for the tests, its figures "
              "mean nothing")

# --- quantiles and latencies ------------------------------------------------------------------


def nearest_rank(samples: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile of ``samples`` by nearest rank (exact integer ranks).

    >>> nearest_rank([4, 1, 3, 2], 50), nearest_rank(range(1, 101), 99)
    (2, 99)
    """
    ordered = sorted(samples)
    return ordered[max(0, -(-len(ordered) * percent // 100) - 1)]


@dataclass(frozen=True)
class Latency:
    """The latency of one variant in microseconds: wall clock, and this thread's CPU time."""

    p50_us: float
    p99_us: float
    mean_us: float
    cpu_p50_us: float
    cpu_p99_us: float

    @classmethod
    def of(cls, wall_ns: Sequence[int], cpu_ns: Sequence[int]) -> Latency:
        """From one variant's samples, in nanoseconds."""
        return cls(statistics.median(wall_ns) / 1000, nearest_rank(wall_ns, 99) / 1000,
                   statistics.fmean(wall_ns) / 1000, statistics.median(cpu_ns) / 1000,
                   nearest_rank(cpu_ns, 99) / 1000)

    @property
    def per_s(self) -> float:
        """One thread's rate: 1 / mean latency."""
        return 1e6 / self.mean_us

    def as_json(self, *keys: str, digits: int) -> dict[str, float]:
        """The named figures, rounded to ``digits`` decimals."""
        return {key: round(getattr(self, key), digits) for key in keys}


# --- goals ----------------------------------------------------------------------------------

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True)
class Goal:
    """What a figure should be: ``Goal("<=", 1.3)`` is met by 1.2, shown as ``<= 1.3``."""

    sign: Literal["<", "<=", ">=", ">"]
    limit: float

    def __str__(self) -> str:
        return f"{self.sign} {self.limit}"

    def is_met(self, figure: float) -> bool:
        """Whether ``figure`` meets the goal."""
        return _COMPARISONS[self.sign](figure, self.limit)


# --- rotation ---------------------------------------------------------------------------------

# a variant: what to call, and the inputs it takes in turn (round r takes inputs[r % len])
Variant = tuple[Callable[[Any], object], Sequence[Any]]
# the inputs of a variant that takes none: its call ignores its argument
NO_INPUT: Sequence[None] = (None,)


def rotation(names: Sequence[str], index: int) -> list[str]:
    """``names`` in the order of round ``index``: each round starts one further along."""
    shift = index % len(names)
    return [*names[shift:], *names[:shift]]


def measure(variants: Mapping[str, Variant], rounds: int, warmup: int, *,
            refill: Callable[[], None] | None = None, block: int = 1000) -> dict[str, Latency]:
    """Time each variant once per round, in rotating order, after ``warmup`` rounds.

    Round ``r`` (negative during the warm-up) calls every variant with
    ``inputs[r % len(inputs)]``. ``refill``, if given, runs untimed before the first
    round and before every round that is a multiple of ``block`` (e.g. to make fresh
    proofs, each used once).
    """
    names = list(variants)
    wall: dict[str, list[int]] = {name: [] for name in names}
    cpu: dict[str, list[int]] = {name: [] for name in names}
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    gc.collect()
    for r in range(-warmup, rounds):
        if refill is not None and (r == -warmup or r % block == 0):
            refill()
        for name in rotation(names, r):
            call, inputs = variants[name]
            arg = inputs[r % len(inputs)]
            cpu_start = cpu_clock()
            start = clock()
            call(arg)
            end = clock()
            cpu_end = cpu_clock()
            if r >= 0:
                wall[name].append(end - start)
                cpu[name].append(cpu_end - cpu_start)
    return {name: Latency.of(wall[name], cpu[name]) for name in names}


# --- the machine ------------------------------------------------------------------------------


def process_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User and system CPU time of process ``pid`` (and of its direct children, with
    ``children``), from /proc: what it spent, whatever else the machine ran."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or (not children and int(entry.name) != pid):
            continue
        try:
            fields = Path(entry.path, "stat").read_text("ascii").rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        if pid in (int(entry.name), int(fields[1])):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def child_pid(marker: str) -> int:
    """The process id of this process's child whose command line contains ``marker``."""
    with os.scandir("/proc") as entries:  # closed on the early return too
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text("ascii")
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    "utf-8", "replace")
            except (OSError, ValueError, IndexError):
                continue
            if parent == os.getpid() and marker in command:
                return int(entry.name)
    raise LookupError(f"no child process runs `{marker}`")


def run_threads(callers: int, seconds: float, step: Callable[[int], bool]
                ) -> tuple[list[int], float, float]:
    """``callers`` threads of this process, released together, each calling
    ``step(index)`` until ``seconds`` have passed or it returns False: the calls each
    thread completed, the wall seconds and the process's CPU seconds over the run."""
    done = [0] * callers
    start = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def caller(index: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0] and step(index):
            done[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    cpu_at, began = time.process_time(), time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return done, time.perf_counter() - began, time.process_time() - cpu_at


def load_average() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def versions(*packages: str) -> dict[str, str]:
    """The installed version of each package."""
    return {package: metadata.version(package) for package in packages}


def machine(load_at_start: float, **extra: object) -> dict[str, Any]:
    """What the figures were measured on; ``extra`` goes before the load average."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **extra,
        # other work on the machine shows in p99 first: say how busy it was
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(load_average(), 2)},
    }


# --- the command line and the last line -------------------------------------------------------


def parser(description: str, quick_help: str = QUICK_HELP) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` and ``--smoke`` (one or neither)."""
    parsed = argparse.ArgumentParser(description=description)
    size = parsed.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=quick_help)
    size.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    return parsed


def add_postgres(parsed: argparse.ArgumentParser) -> None:
    """``--postgres``: the admin URL of the PostgreSQL server this bench needs."""
    parsed.add_argument("--postgres", default=PG_ADMIN_URL,
                        help="an admin URL of the PostgreSQL server (default: %(default)s)")


def mode(options: argparse.Namespace) -> str:
    """``smoke``, ``quick`` or ``full``, as the report names the run."""
    return "smoke" if options.smoke else "quick" if options.quick else "full"


def sized(options: argparse.Namespace, *, full: T, quick: T, smoke: T) -> T:
    """What the run measures: ``full``, or ``quick`` or ``smoke`` when asked for."""
    return {"full": full, "quick": quick, "smoke": smoke}[mode(options)]


def print_json_line(report: Mapping[str, Any], *, sort_keys: bool = False) -> None:
    """The report as one JSON object: the last line a bench prints."""
    print(json.dumps(report, sort_keys=sort_keys))


# --- what a bench runs against ----------------------------------------------------------------


def postgres_problem(admin_url: str) -> str | None:
    """Why the PostgreSQL server of ``admin_url`` cannot be used, or None."""
    try:
        with psycopg.connect(admin_url, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        shown = make_url(admin_url).render_as_string(hide_password=True)
        return f"PostgreSQL at {shown} is not reachable: {exc}"


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new ``proctor_bench_*`` database for this run, dropped afterwards.

    An unreachable server ends the run, loudly: a bench that measures PostgreSQL
    never skips it.
    """
    problem = postgres_problem(admin_url)
    if problem is not None:
        raise SystemExit(f"{problem}\nthis bench measures PostgreSQL; start it, or set "
                         "PROCTOR_TEST_PG_URL or --postgres")
    name = f"proctor_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


class Interrupted(KeyboardInterrupt):
    """A signal ended the run: raised where it stood, so that every ``finally`` runs. A
    ``KeyboardInterrupt``, which asyncio lets through: another ``BaseException`` raised in
    one of its callbacks (a connection's data arriving) is logged and the loop runs on,
    its signals ignored by then, to the end of the phase."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_ENDING = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextmanager
def interruptible(what: str) -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT raise :class:`Interrupted`; a second
    one while the run unwinds is ignored (stopping a server waits for it, dropping a
    database too). The run then ends with one line on stderr and 128 + the signal's
    number. Outside the main thread (a test's), the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, _frame: object) -> None:
        for ending in _ENDING:
            signal.signal(ending, signal.SIG_IGN)
        raise Interrupted(signum)

    before = {ending: signal.getsignal(ending) for ending in _ENDING}
    for ending in _ENDING:
        signal.signal(ending, interrupted)
    try:
        yield
    except Interrupted as exc:
        print(f"interrupted by {exc}: {what}", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    finally:
        for ending, handler in before.items():
            signal.signal(ending, handler)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port

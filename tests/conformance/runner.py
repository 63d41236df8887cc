"""Run the MCP conformance suite's server scenarios against a URL, and start the upstream.

``run_conformance(url)`` answers, for every server scenario of the pinned
``@modelcontextprotocol/conformance`` (active and pending suites), whether the
server at ``url`` passed it. A scenario passes when it produced at least one
successful check and no failed or warning check: the rule the suite itself
applies to ``--expected-failures`` baselines, plus "something was checked".

The suite and Node 22 live in ``.tools/conformance`` (``scripts/conformance-setup``).

From the command line (starts the upstream unless ``--url`` is given)::

    uv run python -m tests.conformance.runner [--url URL]
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "conformance" / "node_modules"
NODE = TOOLS / "node" / "bin" / "node"
SUITE = TOOLS / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SETUP = ROOT / "scripts" / "conformance-setup"
BASELINE = Path(__file__).with_name("baseline.json")

_RUNNING = re.compile(r"^=== Running scenario: (\S+) ===$", re.MULTILINE)
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


class ConformanceError(Exception):
    """The suite could not be installed or run, or the upstream did not start."""


@dataclass(frozen=True)
class ScenarioOutcome:
    """One scenario's verdict and, when it did not pass, the checks that said why."""

    passed: bool
    problems: list[str] = field(default_factory=list)


def install_suite(timeout_seconds: float = 600) -> None:
    """Run ``scripts/conformance-setup`` (a no-op once installed)."""
    try:
        done = subprocess.run(["bash", str(SETUP)], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_seconds, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConformanceError(f"conformance-setup took over {timeout_seconds} s") from exc
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise ConformanceError(f"conformance-setup failed (exit {done.returncode}): {tail}")


def _outcome(checks: list[dict[str, Any]]) -> ScenarioOutcome:
    statuses = [c.get("status") for c in checks]
    problems = [f"{c.get('id')}: {c.get('status')} {c.get('errorMessage') or c.get('description')}"
                for c in checks if c.get("status") in ("FAILURE", "WARNING")]
    return ScenarioOutcome("SUCCESS" in statuses and not problems, problems)


def run_scenarios(url: str, *, timeout_seconds: float = 300) -> dict[str, ScenarioOutcome]:
    """Every server scenario of the suite against ``url``, with the reasons for failures."""
    with tempfile.TemporaryDirectory(prefix="conformance-") as out:
        command = [str(NODE), str(SUITE), "server", "--url", url, "--suite", "all",
                   "--output-dir", out]
        try:
            done = subprocess.run(command, cwd=out, capture_output=True, text=True,
                                  timeout=timeout_seconds, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ConformanceError(f"the suite took over {timeout_seconds} s") from exc
        attempted = _RUNNING.findall(done.stdout)
        if done.returncode not in (0, 1) or not attempted:
            tail = " ".join(done.stderr.strip().splitlines()[-3:])
            raise ConformanceError(f"the suite ran no scenario (exit {done.returncode}): {tail}")
        outcomes = {name: ScenarioOutcome(False, ["no result: the scenario crashed"])
                    for name in attempted}
        for result in Path(out).iterdir():
            match = _RESULT_DIR.match(result.name)
            if match is None or match["scenario"] not in outcomes:
                raise ConformanceError(f"unexpected result directory `{result.name}`")
            checks = json.loads((result / "checks.json").read_text(encoding="utf-8"))
            outcomes[match["scenario"]] = _outcome(checks)
    return outcomes


def run_conformance(url: str) -> dict[str, bool]:
    """Scenario name -> whether the server at ``url`` passed it."""
    return {name: outcome.passed for name, outcome in run_scenarios(url).items()}


def load_baseline() -> dict[str, Any]:
    """The recorded baseline: suite version, passing scenarios, others with reasons."""
    baseline: dict[str, Any] = json.loads(BASELINE.read_text(encoding="utf-8"))
    return baseline


def suite_version() -> str:
    """The conformance suite version pinned in ``tests/conformance/package.json``."""
    manifest = json.loads(Path(__file__).with_name("package.json").read_text(encoding="utf-8"))
    version: str = manifest["dependencies"]["@modelcontextprotocol/conformance"]
    return version


@contextmanager
def running_upstream(startup_seconds: float = 30) -> Iterator[str]:
    """Start ``tests.conformance.upstream`` on a free port; yield its URL; stop it."""
    with tempfile.TemporaryFile() as log, subprocess.Popen(
        [sys.executable, "-m", "tests.conformance.upstream"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=log, text=True,
    ) as process:
        try:
            assert process.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                ready = selector.select(timeout=startup_seconds)
            url = process.stdout.readline().strip() if ready else ""
            if not url.startswith("http://"):
                log.seek(0)
                tail = log.read().decode(errors="replace")[-500:]
                raise ConformanceError(f"the upstream did not start: {tail}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the MCP conformance server scenarios.")
    parser.add_argument("--url", help="server to test (default: start the conformance upstream)")
    url = parser.parse_args(argv).url
    install_suite()
    if url:
        results = run_scenarios(url)
    else:
        with running_upstream() as upstream:
            results = run_scenarios(upstream)
    report = {name: {"passed": o.passed, "problems": o.problems} for name, o in results.items()}
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()

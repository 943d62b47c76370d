"""``go test -json`` (test2json) events: one attempt per ``run`` .. ``pass``/``fail``/``skip``.

Tests are named by their full name (``TestA/sub`` is a test of its own, as go reports it) with
the package as classname. ``go test -count=N`` and reruns repeat ``run`` for the same name,
which gives that test several attempts.

Two things end a run without a test result, and neither may read as a pass:
- a test that started but never finished (the binary panicked in another goroutine, or
  ``-timeout`` killed it) is an ``error`` with ``censored`` set, since its duration is only how
  long it had run when it was stopped; its message is the package's output, where the panic is;
- a package that failed while none of its tests did (a build failure, a failing ``TestMain``,
  a race report) becomes one errored test named after the package, carrying that output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..model import Attempt, AttemptStatus, TestCase, truncate_output
from . import Format

_RESULTS: dict[str, AttemptStatus] = {"pass": "passed", "fail": "failed", "skip": "skipped"}
_OUTPUT_ACTIONS = ("output", "bench")
# Lines written by the testing package itself, which say nothing about why a test failed.
_FRAMEWORK_LINE = re.compile(
    r"^\s*(?:=== (?:RUN|PAUSE|CONT|NAME)\b|--- (?:PASS|FAIL|SKIP|BENCH):"
    r"|(?:PASS|FAIL)$|(?:ok|FAIL)\s+\S+\s+(?:[\d.]+s|\(cached\))\s*$)"
)


def _matches(document: Any) -> bool:
    return (
        isinstance(document, list)
        and bool(document)
        and all(isinstance(event, dict) and "Action" in event for event in document)
        and any("Package" in event or "ImportPath" in event for event in document)
    )


@dataclass(slots=True)
class _Run:
    """A test execution between its ``run`` event and its result."""

    test: TestCase
    started: datetime | None
    output: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Package:
    tests: list[TestCase] = field(default_factory=list)
    running: dict[str, _Run] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    last_seen: datetime | None = None

    def end(self) -> None:
        """Runs still open when the package ends were stopped from outside."""
        for run in self.running.values():
            run.test.attempts.append(_unfinished(run, self))
        self.running.clear()


def _parse(events: list[dict[str, Any]]) -> list[TestCase]:
    packages: dict[str, _Package] = {}
    tests: dict[tuple[str, str], TestCase] = {}
    build_output: dict[str, list[str]] = {}
    ordered: list[TestCase] = []
    for event in events:
        action = event["Action"]
        if action == "build-output":  # go >= 1.24 reports compiler output as events
            build_output.setdefault(event.get("ImportPath", ""), []).append(event.get("Output", ""))
            continue
        name = event.get("Package", "")
        package = packages.setdefault(name, _Package())
        package.last_seen = _time(event) or package.last_seen
        test_name = event.get("Test")
        if test_name is None:
            if action in _OUTPUT_ACTIONS:
                package.output.append(event.get("Output", ""))
            elif action in _RESULTS:
                package.end()
                if action == "fail" and not _explained(package):
                    output = build_output.get(event.get("FailedBuild", ""), []) + package.output
                    ordered.append(_package_failure(name, output))
            continue
        test = tests.get((name, test_name))
        if test is None:
            test = tests[(name, test_name)] = TestCase(name=test_name, classname=name)
            package.tests.append(test)
            ordered.append(test)
        if action == "run" or test_name not in package.running:
            package.running[test_name] = _Run(test, _time(event))
        if action in _OUTPUT_ACTIONS:
            package.running[test_name].output.append(event.get("Output", ""))
        elif action in _RESULTS:
            run = package.running.pop(test_name)
            test.attempts.append(_finished(run, _RESULTS[action], event.get("Elapsed")))
    for package in packages.values():  # a stream cut off before its packages ended
        package.end()
    return ordered


def _finished(run: _Run, status: AttemptStatus, elapsed: float | None) -> Attempt:
    return Attempt(
        status=status,
        duration_ms=(elapsed or 0.0) * 1000,
        message=_message(run.output) if status != "passed" else None,
        stdout=truncate_output("".join(run.output)),
    )


def _unfinished(run: _Run, package: _Package) -> Attempt:
    duration_ms = 0.0
    if run.started and package.last_seen:
        duration_ms = max((package.last_seen - run.started).total_seconds() * 1000, 0.0)
    return Attempt(
        status="error",
        duration_ms=duration_ms,
        message=_message(package.output) or _message(run.output) or "the test never finished",
        stdout=truncate_output("".join(run.output)),
        censored=True,
    )


def _explained(package: _Package) -> bool:
    return any(a.is_failure for test in package.tests for a in test.attempts)


def _package_failure(name: str, output: list[str]) -> TestCase:
    """The errored test standing for a package failure; its time is already in its tests."""
    return TestCase(
        name=name,
        classname=name,
        attempts=[
            Attempt(
                status="error",
                message=_message(output) or "the package failed",
                stdout=truncate_output("".join(output)),
            )
        ],
    )


def _message(output: list[str]) -> str | None:
    lines = "".join(output).splitlines()
    kept = [line.strip() for line in lines if line.strip() and not _FRAMEWORK_LINE.match(line)]
    return "\n".join(kept) or None


def _time(event: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(event["Time"])
    except (KeyError, TypeError, ValueError):
        return None


FORMATS = (Format("gotest", "ndjson", _matches, _parse),)

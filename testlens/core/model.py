"""The normalized test-report model every parser produces and every consumer reads.

A report is a list of distinct tests; each test keeps every attempt it made (retries,
reruns, one per environment), because collapsing retries into one result is exactly what
hides flakiness. Status words are deliberately few so that all formats map onto them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

AttemptStatus = Literal["passed", "failed", "error", "skipped"]
TestStatus = Literal["passed", "failed", "error", "skipped", "flaky"]

ATTEMPT_STATUSES: tuple[str, ...] = ("passed", "failed", "error", "skipped")
# stdout/stderr are kept for diagnosis, not archival: cap what one attempt may hold.
MAX_OUTPUT_CHARS = 64 * 1024
SUITE_SEPARATOR = " > "
"""Joins nested suite titles into one ``suite`` value (formats that nest suites)."""


class ReportError(ValueError):
    """A report that cannot be read; the message says why, in words a user can act on."""


class ReportTooLarge(ReportError):
    """A report with more results (attempts) than it may hold, refused while it is read:
    before its whole document is loaded where a count of its markup tells, else as soon as
    the parser makes one attempt too many, never after building everything."""

    def __init__(self, limit: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit


_BUDGET: ContextVar[list[int] | None] = ContextVar("attempt_budget", default=None)
"""The active :func:`attempt_budget`: its limit and the attempts made so far."""


@contextmanager
def attempt_budget(limit: int | None) -> Iterator[None]:
    """Within this block, creating more than ``limit`` attempts raises :class:`ReportTooLarge`:
    so a parser stops at the cap instead of building a million attempts first."""
    if limit is None:
        yield
        return
    token = _BUDGET.set([limit, 0])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def too_many_results(limit: int) -> ReportTooLarge:
    return ReportTooLarge(
        limit, f"the report holds more than {limit:,} results (test attempts), the limit"
    )


def truncate_output(text: str | None, limit: int = MAX_OUTPUT_CHARS) -> str | None:
    """Keep the tail of long output (where the failure usually is), marked as cut."""
    if not text:
        return None
    if len(text) <= limit:
        return text
    return "[truncated]\n" + text[-limit:]


@dataclass(slots=True)
class Attempt:
    """One execution of a test.

    ``censored`` marks an attempt stopped from outside (timeout, interrupt): its duration is
    a lower bound of how long the test needs, not a sample of it.
    """

    status: AttemptStatus
    duration_ms: float = 0.0
    message: str | None = None
    error_type: str | None = None
    stack: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    environment: str | None = None
    censored: bool = False

    def __post_init__(self) -> None:
        budget = _BUDGET.get()
        if budget is not None:
            budget[1] += 1
            if budget[1] > budget[0]:
                raise too_many_results(budget[0])

    @property
    def is_failure(self) -> bool:
        return self.status in ("failed", "error")


@dataclass(slots=True)
class TestCase:
    """One distinct test and all its attempts, oldest first.

    Identity within a repository is (file, suite, classname, name); parameters stay part of
    the name (``test_add[1-2]``) as every runner prints them.
    """

    __test__ = False  # not a pytest test class

    name: str
    classname: str = ""
    suite: str = ""
    file: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.file, self.suite, self.classname, self.name)

    @property
    def status(self) -> TestStatus:
        """passed/failed/error/skipped, or flaky when one environment both failed and passed."""
        if len(self.attempts) == 1:
            return self.attempts[0].status
        ran = [a for a in self.attempts if a.status != "skipped"]
        if not ran:
            return "skipped"
        by_env: dict[str | None, set[bool]] = {}
        for attempt in ran:
            by_env.setdefault(attempt.environment, set()).add(attempt.is_failure)
        if any(len(outcomes) == 2 for outcomes in by_env.values()):
            return "flaky"
        if not any(a.is_failure for a in ran):
            return "passed"
        return ran[-1].status

    @property
    def duration_ms(self) -> float:
        return sum(a.duration_ms for a in self.attempts)


@dataclass(slots=True)
class Summary:
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0
    attempts: int = 0
    duration_ms: float = 0.0


@dataclass(slots=True)
class Report:
    format: str
    tests: list[TestCase]
    recovered: bool = False
    """Read by the recovering XML parser: the file is not well-formed, so what it holds was
    partly guessed (see ``parsers/xml.py``)."""
    recovered_reason: str | None = None
    """The first syntax error of a recovered report, as the XML parser reported it."""

    def summary(self) -> Summary:
        s = Summary(tests=len(self.tests))
        counter = {
            "passed": "passed",
            "failed": "failed",
            "error": "errors",
            "skipped": "skipped",
            "flaky": "flaky",
        }
        for test in self.tests:
            attr = counter[test.status]
            setattr(s, attr, getattr(s, attr) + 1)
            s.attempts += len(test.attempts)
            s.duration_ms += test.duration_ms
        s.duration_ms = round(s.duration_ms, 3)
        return s

    def to_dict(self) -> dict:
        """The JSON shape printed by ``testlens parse``."""
        s = self.summary()
        return {
            "format": self.format,
            "recovered": self.recovered,
            "recovered_reason": self.recovered_reason,
            "summary": {
                "tests": s.tests,
                "passed": s.passed,
                "failed": s.failed,
                "errors": s.errors,
                "skipped": s.skipped,
                "flaky": s.flaky,
                "attempts": s.attempts,
                "duration_ms": s.duration_ms,
            },
            "tests": [
                {
                    "file": t.file,
                    "suite": t.suite,
                    "classname": t.classname,
                    "name": t.name,
                    "status": t.status,
                    "duration_ms": round(t.duration_ms, 3),
                    "attempts": [
                        {
                            "status": a.status,
                            "duration_ms": round(a.duration_ms, 3),
                            "message": a.message,
                        }
                        for a in t.attempts
                    ],
                }
                for t in self.tests
            ],
        }


def merge_tests(tests: list[TestCase]) -> list[TestCase]:
    """Fold test cases with the same identity into one test whose attempts are concatenated.

    Runners such as pytest-rerunfailures or go test -count write one entry per attempt;
    this is where those entries become retries of one test. Order of first appearance is kept.
    """
    merged: dict[tuple[str, str, str, str], TestCase] = {}
    for test in tests:
        key = test.identity
        existing = merged.get(key)
        if existing is None:
            merged[key] = test
        else:
            existing.attempts.extend(test.attempts)
    return list(merged.values())

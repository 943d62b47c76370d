"""The Flakiness JSON report (flakiness.io): a suite tree whose tests carry every attempt.

The format omits default values, and canonical reports always do, so they are applied here:
an attempt without ``status`` passed, without ``expectedStatus`` was expected to pass, without
``environmentIdx`` ran in environment 0, without ``duration`` took 0 ms.

An attempt is judged as upstream does: ``skipped`` is skipped whatever was expected; a status
equal to ``expectedStatus`` is a pass (an expected failure is fine); anything else is a
failure. A failure by ``timedOut`` or ``interrupted`` was stopped from outside, so its
duration is only a lower bound (``censored``); ``interrupted`` never reached a verdict, so it
is an error rather than a failure.

``unattributedErrors`` belong to no test and are not turned into one: a synthetic test would
change the test count the report itself gives. Unknown fields are ignored, as the upstream
validator does.

:func:`read_tests` also hands back each test's JSON object, for the Durations API, which
answers with the uploaded report itself, each test filled with its predicted attempts.
"""

from __future__ import annotations

import base64
from typing import Any

from ..model import SUITE_SEPARATOR, Attempt, AttemptStatus, ReportError, TestCase, truncate_output
from . import Format, guarded, load_json
from .ctrf import duration, field, objects

_STATUSES = ("passed", "failed", "timedOut", "skipped", "interrupted")
_SUITE_TYPES = ("file", "suite", "anonymous suite")
_STDERR = 2


def _matches(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and "commitId" in document
        and isinstance(document.get("environments"), list)
    )


def _parse(document: dict[str, Any]) -> list[TestCase]:
    return [test for _, test in read_tests(document)]


def read_report(data: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], TestCase]]]:
    """A Flakiness report's document and its tests, each with its JSON object."""
    document = load_json(data)
    if not _matches(document):
        raise ReportError("the report is not in the flakiness format")
    return document, guarded("flakiness", read_tests, document)


def read_tests(document: dict[str, Any]) -> list[tuple[dict[str, Any], TestCase]]:
    """Every test of a Flakiness report (a parsed JSON document) with its JSON object, in
    report order; raises :class:`ReportError` for a malformed report."""
    environments = [
        field(env, "name", str, f"environments[{index}]", required=True)
        for index, env in enumerate(objects(document, "environments", "report", required=True))
    ]
    reader = _Reader(environments)
    for index, suite in enumerate(objects(document, "suites", "report")):
        reader.suite(suite, f"suites[{index}]", file="", path=())
    for index, test in enumerate(objects(document, "tests", "report")):
        reader.test(test, f"tests[{index}]", file="", path=())
    return reader.tests


class _Reader:
    """Walks the suite tree, carrying the enclosing file and suite titles down to tests."""

    def __init__(self, environments: list[str]) -> None:
        self.environments = environments
        self.tests: list[tuple[dict[str, Any], TestCase]] = []

    def suite(self, suite: dict[str, Any], where: str, file: str, path: tuple[str, ...]) -> None:
        kind = field(suite, "type", str, where, required=True)
        if kind not in _SUITE_TYPES:
            raise ReportError(f"{where}: unknown suite type {kind!r}")
        title = field(suite, "title", str, where, required=True)
        if kind == "file":
            file = _location_file(suite, where) or title
        elif title:
            path = (*path, title)
        for index, child in enumerate(objects(suite, "suites", where)):
            self.suite(child, f"{where}.suites[{index}]", file, path)
        for index, test in enumerate(objects(suite, "tests", where)):
            self.test(test, f"{where}.tests[{index}]", file, path)

    def test(self, test: dict[str, Any], where: str, file: str, path: tuple[str, ...]) -> None:
        title = field(test, "title", str, where, required=True)
        attempts = [
            self.attempt(attempt, f"{where}.attempts[{index}]")
            for index, attempt in enumerate(objects(test, "attempts", where, required=True))
        ]
        case = TestCase(
            name=title,
            suite=SUITE_SEPARATOR.join(path),
            file=file or _location_file(test, where),
            attempts=attempts,
        )
        self.tests.append((test, case))

    def attempt(self, attempt: dict[str, Any], where: str) -> Attempt:
        status = _status(attempt, "status", where)
        expected = _status(attempt, "expectedStatus", where)
        index = field(attempt, "environmentIdx", int, where) or 0
        if not 0 <= index < len(self.environments):
            raise ReportError(
                f"{where}: environmentIdx {index} is not one of the "
                f"{len(self.environments)} environments"
            )
        errors = objects(attempt, "errors", where)
        first = errors[0] if errors else {}
        error_where = f"{where}.errors[0]"
        message = field(first, "message", str, error_where) or field(
            first, "value", str, error_where
        )
        stdout, stderr = _stdio(attempt, where)
        judged, censored = _judge(status, expected)
        return Attempt(
            status=judged,
            duration_ms=duration(attempt, "duration", where),
            message=message,
            stack=field(first, "stack", str, error_where),
            stdout=stdout,
            stderr=stderr,
            environment=self.environments[index],
            censored=censored,
        )


def _status(attempt: dict[str, Any], key: str, where: str) -> str:
    status = field(attempt, key, str, where) or "passed"
    if status not in _STATUSES:
        raise ReportError(f"{where}: unknown {key} {status!r}; expected one of {_STATUSES}")
    return status


def _judge(status: str, expected: str) -> tuple[AttemptStatus, bool]:
    """(attempt status, censored) by the upstream rule: skipped, as expected, or a failure."""
    if status == "skipped":
        return "skipped", False
    if status == expected:
        return "passed", False
    if status == "interrupted":
        return "error", True
    return "failed", status == "timedOut"


def _location_file(node: dict[str, Any], where: str) -> str:
    location = field(node, "location", dict, where)
    if location is None:
        return ""
    return field(location, "file", str, f"{where}.location") or ""


def _stdio(attempt: dict[str, Any], where: str) -> tuple[str | None, str | None]:
    """stdout and stderr text from ``stdio`` or, in older reports, ``stdout``/``stderr``."""
    streams: dict[int, list[str]] = {1: [], _STDERR: []}
    for index, entry in enumerate(objects(attempt, "stdio", where)):
        stream = field(entry, "stream", int, f"{where}.stdio[{index}]") or 1
        streams[_STDERR if stream == _STDERR else 1].append(_text(entry, f"{where}.stdio[{index}]"))
    for stream, key in ((1, "stdout"), (_STDERR, "stderr")):
        streams[stream].extend(
            _text(entry, f"{where}.{key}[{index}]")
            for index, entry in enumerate(objects(attempt, key, where))
        )
    return truncate_output("".join(streams[1])), truncate_output("".join(streams[_STDERR]))


def _text(entry: dict[str, Any], where: str) -> str:
    text = field(entry, "text", str, where)
    if text is not None:
        return text
    buffer = field(entry, "buffer", str, where) or ""
    return base64.b64decode(buffer).decode("utf-8", errors="replace")


FORMATS = (Format("flakiness", "json", _matches, _parse),)

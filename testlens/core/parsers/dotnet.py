""".NET test reports: NUnit 2 and 3 XML, xUnit.net XML and Visual Studio TRX.

They are read natively rather than through a JUnit conversion because each says something
JUnit XML cannot: NUnit's label separates a crashed test from a failed assertion, TRX has
timeout and abort outcomes (a stopped test, whose duration is only a lower bound) and can
hold reruns of one test, and xUnit.net records cleanup failures that belong to no test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

from lxml import etree

from ..model import Attempt, AttemptStatus, ReportError, TestCase, truncate_output
from . import Format
from .xml import local_name

# NUnit and xUnit.net print an unexpected exception as "Full.Type.Name : message".
_EXCEPTION_PREFIX = re.compile(r"((?:[A-Za-z_][\w`]*\.)+[A-Za-z_][\w`]*) : ")
# NUnit 3.12 puts this in the label, later versions in the failure message.
_NUNIT_TIMEOUT = re.compile(r"Test exceeded Timeout value", re.IGNORECASE)


def _text(element: etree._Element, path: str) -> str | None:
    """The text at ``path`` below ``element``, or None when it is missing or blank."""
    found = element.find(path)
    text = found.text if found is not None else None
    return text if text and text.strip() else None


def _seconds_ms(value: str | None) -> float:
    return float(value) * 1000 if value else 0.0


def _exception_type(status: AttemptStatus, message: str | None) -> str | None:
    if status not in ("failed", "error") or not message:
        return None
    match = _EXCEPTION_PREFIX.match(message)
    return match[1] if match else None


def _without_class(name: str, classname: str) -> str:
    """Runners print ``Namespace.Class.Method(args)``; the class is already in ``classname``."""
    prefix = classname + "."
    return name[len(prefix) :] if classname and name.startswith(prefix) else name


# --- NUnit -------------------------------------------------------------------------------

_NUNIT3_RESULTS: dict[str, AttemptStatus] = {
    "Passed": "passed",
    "Warning": "passed",  # Assert.Warn: NUnit reports it apart but does not fail the run
    "Failed": "failed",
    "Skipped": "skipped",
    "Inconclusive": "skipped",
}
# A failure with one of these labels never reached an assertion: it crashed, could not be
# built (Invalid: bad signature, missing arguments) or was cancelled.
_NUNIT3_ERROR_LABELS = frozenset({"Error", "Invalid", "Cancelled"})

_NUNIT2_RESULTS: dict[str, AttemptStatus] = {
    "Success": "passed",
    "Failure": "failed",
    "Error": "error",
    "NotRunnable": "error",  # NUnit 2's console counts these in its failing exit code
    "Cancelled": "error",
    "Ignored": "skipped",
    "Skipped": "skipped",
    "Inconclusive": "skipped",
}


def _parse_nunit(root: etree._Element) -> list[TestCase]:
    read = _nunit3_case if local_name(root) == "test-run" else _nunit2_case
    return [read(case) for case in root.iter("{*}test-case")]


def _nunit_attempt(
    case: etree._Element, status: AttemptStatus, seconds: str | None, label: str
) -> Attempt:
    message = _text(case, "{*}failure/{*}message") or _text(case, "{*}reason/{*}message")
    stopped = label == "Cancelled" or any(_NUNIT_TIMEOUT.search(t) for t in (label, message or ""))
    return Attempt(
        status=status,
        duration_ms=_seconds_ms(seconds),
        message=message,
        error_type=_exception_type(status, message),
        stack=_text(case, "{*}failure/{*}stack-trace"),
        stdout=truncate_output(_text(case, "{*}output")),
        censored=status in ("failed", "error") and stopped,
    )


def _nunit3_case(case: etree._Element) -> TestCase:
    """An NUnit 3 ``test-case``; its suite is the fixture instance that ran it.

    The fixture's full name keeps a parameterised fixture's arguments (``Fixture(42)``), so
    the same method run by two fixture instances stays two tests.
    """
    result = case.get("result", "")
    status = _NUNIT3_RESULTS.get(result)
    if status is None:
        raise ReportError(f"unknown NUnit result {result!r} for {case.get('fullname')!r}")
    label = case.get("label", "")
    if status == "failed" and label in _NUNIT3_ERROR_LABELS:
        status = "error"
    fixture = next(
        (s for s in case.iterancestors("{*}test-suite") if s.get("type") == "TestFixture"), None
    )
    suite = fixture.get("fullname", "") if fixture is not None else ""
    return TestCase(
        name=case.get("name", ""),
        # early NUnit 3 files have no classname: the fixture without its arguments is the class
        classname=case.get("classname") or suite.split("(", 1)[0],
        suite=suite,
        # "time" is what NUnit 3 betas wrote before it became "duration"
        attempts=[_nunit_attempt(case, status, case.get("duration", case.get("time")), label)],
    )


def _nunit2_case(case: etree._Element) -> TestCase:
    """An NUnit 2 ``test-case``, whose name is fully qualified: the fixture is its prefix."""
    result = case.get("result")
    if result is None:  # NUnit 2.2 and older only say whether the test ran and succeeded
        ran, succeeded = case.get("executed") != "False", case.get("success") == "True"
        status: AttemptStatus = "passed" if succeeded else "failed" if ran else "skipped"
    elif result in _NUNIT2_RESULTS:
        status = _NUNIT2_RESULTS[result]
    else:
        raise ReportError(f"unknown NUnit result {result!r} for {case.get('name')!r}")
    fixture, name = _split_member(case.get("name", ""))
    return TestCase(
        name=name,
        classname=fixture.split("(", 1)[0],
        suite=fixture,
        attempts=[_nunit_attempt(case, status, case.get("time"), result or "")],
    )


def _split_member(qualified: str) -> tuple[str, str]:
    """Split ``NS.Fixture(1.5).Method("a.b")`` at the last dot outside brackets."""
    depth = 0
    for index in range(len(qualified) - 1, -1, -1):
        char = qualified[index]
        if char in ")]>":
            depth += 1
        elif char in "([<":
            depth -= 1
        elif char == "." and depth == 0:
            return qualified[:index], qualified[index + 1 :]
    return "", qualified


# --- xUnit.net ---------------------------------------------------------------------------

_XUNIT_RESULTS: dict[str, AttemptStatus] = {
    "Pass": "passed",
    "Fail": "failed",
    "Skip": "skipped",
    "NotRun": "skipped",  # v3 explicit tests that were not asked for
}
# xUnit.net escapes names, messages and skip reasons C-style ("\n" for a newline). Undo the
# escapes real text needs; control characters stay spelled out, safer to store and show.
_XUNIT_ESCAPE = re.compile(r'\\([\\rnt"])')
_XUNIT_UNESCAPED = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", '"': '"'}


def _xunit_unescape(text: str | None) -> str | None:
    return _XUNIT_ESCAPE.sub(lambda m: _XUNIT_UNESCAPED[m[1]], text) if text else text


def _parse_xunit(root: etree._Element) -> list[TestCase]:
    tests: list[TestCase] = []
    for assembly in root.iterfind("{*}assembly"):
        tests.extend(_xunit_test(test) for test in assembly.iter("{*}test"))
        tests.extend(_xunit_error(error) for error in assembly.iterfind("{*}errors/{*}error"))
    return tests


def _xunit_attempt(element: etree._Element, status: AttemptStatus) -> Attempt:
    failure = element.find("{*}failure")
    return Attempt(
        status=status,
        duration_ms=_seconds_ms(element.get("time")),
        message=_xunit_unescape(
            _text(element, "{*}failure/{*}message") or _text(element, "{*}reason")
        ),
        error_type=failure.get("exception-type") if failure is not None else None,
        stack=_text(element, "{*}failure/{*}stack-trace"),
        stdout=truncate_output(_text(element, "{*}output")),
    )


def _xunit_test(test: etree._Element) -> TestCase:
    """A ``test``; its suite is the enclosing collection (v1 files: class) display name."""
    result = test.get("result", "")
    status = _XUNIT_RESULTS.get(result)
    if status is None:
        raise ReportError(f"unknown xUnit.net result {result!r} for {test.get('name')!r}")
    classname = test.get("type", "")
    container = test.getparent()
    return TestCase(
        name=_without_class(_xunit_unescape(test.get("name", "")) or "", classname),
        classname=classname,
        suite=_xunit_unescape(container.get("name", "")) or "",
        attempts=[_xunit_attempt(test, status)],
    )


def _xunit_error(error: etree._Element) -> TestCase:
    """A cleanup or fatal error outside any test, kept as an erroring pseudo-test.

    Dropping it would show a run that failed only in a fixture's cleanup as green; xUnit.net
    v3's own TRX output turns these into failed tests too.
    """
    name = f"[{error.get('type', 'error')}] {error.get('name', '')}".rstrip()
    return TestCase(name=name, attempts=[_xunit_attempt(error, "error")])


# --- Visual Studio TRX -------------------------------------------------------------------

# outcome -> (status, censored). VSTest itself only writes Passed, Failed and NotExecuted; the
# rest come from MSTest v1, Microsoft.Testing.Platform and other TRX writers.
_TRX_OUTCOMES: dict[str, tuple[AttemptStatus, bool]] = {
    "Passed": ("passed", False),
    "PassedButRunAborted": ("passed", False),  # the test finished; the run stopped later
    "Warning": ("passed", False),
    "Completed": ("passed", False),
    "Failed": ("failed", False),
    "Error": ("error", False),
    "NotRunnable": ("error", False),
    "Timeout": ("failed", True),
    "Aborted": ("error", True),
    "Disconnected": ("error", True),
    "InProgress": ("error", True),  # still running when the run was cut off
    "NotExecuted": ("skipped", False),
    "Inconclusive": ("skipped", False),
    "Pending": ("skipped", False),
}
# A .NET TimeSpan: [d.]hh:mm:ss[.fffffff]
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _parse_trx(root: etree._Element) -> list[TestCase]:
    """TRX results joined with their definitions for the class name.

    A test is (class, test name), not the definition id: xUnit.net theories that cannot be
    enumerated up front share one definition across all their rows. Several results with the
    same class and name are attempts (reruns), ordered by start time because TRX does not
    list results in the order they started.
    """
    classnames = {
        definition.get("id"): _trx_classname(definition)
        for definition in root.iterfind("{*}TestDefinitions/*")
    }
    timed: dict[tuple[str, str], list[tuple[datetime | None, Attempt]]] = {}
    for result in root.iterfind("{*}Results/*"):
        for row in _trx_rows(result):
            classname = classnames.get(row.get("testId"), "")
            name = _without_class(row.get("testName", ""), classname)
            timed.setdefault((classname, name), []).append((_start_time(row), _trx_attempt(row)))
    tests = []
    for (classname, name), attempts in timed.items():
        dated = [(start, attempt) for start, attempt in attempts if start is not None]
        if len(dated) == len(attempts):  # in the order they ran, when every one says
            dated.sort(key=lambda pair: pair[0])
            ordered = [attempt for _, attempt in dated]
        else:
            ordered = [attempt for _, attempt in attempts]
        tests.append(TestCase(name=name, classname=classname, attempts=ordered))
    return tests


def _trx_classname(definition: etree._Element) -> str:
    method = definition.find("{*}TestMethod")
    class_name = method.get("className", "") if method is not None else ""
    # MSTest v1 wrote assembly-qualified names: "NS.Class, Assembly, Version=1.0.0.0, ..."
    return class_name.split(", ", 1)[0]


def _trx_rows(result: etree._Element) -> Iterator[etree._Element]:
    """The results that are tests of their own.

    A data-driven or ordered test nests its rows in ``InnerResults``. Rows with distinct
    names are distinct tests (``Add (1,2)``, ``Add (2,3)``) and replace the parent, whose
    outcome only summarises them; rows without names of their own cannot be told apart, so
    the parent stands for them.
    """
    rows = result.findall("{*}InnerResults/*")
    names = [row.get("testName") for row in rows]
    if rows and len(set(names)) == len(names) and result.get("testName") not in names:
        for row in rows:
            yield from _trx_rows(row)
    else:
        yield result


def _trx_attempt(result: etree._Element) -> Attempt:
    outcome = result.get("outcome", "")
    if outcome not in _TRX_OUTCOMES:
        raise ReportError(f"unknown TRX outcome {outcome!r} for {result.get('testName')!r}")
    status, censored = _TRX_OUTCOMES[outcome]
    message = _text(result, "{*}Output/{*}ErrorInfo/{*}Message")
    return Attempt(
        status=status,
        duration_ms=_trx_duration_ms(result.get("duration")),
        message=message,
        error_type=_exception_type(status, message),
        stack=_text(result, "{*}Output/{*}ErrorInfo/{*}StackTrace"),
        stdout=truncate_output(_text(result, "{*}Output/{*}StdOut")),
        stderr=truncate_output(_text(result, "{*}Output/{*}StdErr")),
        censored=censored,
    )


def _trx_duration_ms(value: str | None) -> float:
    """Milliseconds of a TRX TimeSpan; tests that never ran have none."""
    if not value:
        return 0.0
    match = _TIMESPAN.fullmatch(value.strip())
    if match is None:
        raise ReportError(f"invalid TRX duration {value!r}: expected [d.]hh:mm:ss.fffffff")
    days, hours, minutes, seconds = match.groups()
    whole_minutes = (int(days or 0) * 24 + int(hours)) * 60 + int(minutes)
    return whole_minutes * 60_000 + float(seconds) * 1000


def _start_time(result: etree._Element) -> datetime | None:
    try:
        start = datetime.fromisoformat(result.get("startTime", ""))
    except ValueError:
        return None
    return start if start.tzinfo else start.replace(tzinfo=UTC)


FORMATS: tuple[Format, ...] = (
    Format(
        name="nunit",
        kind="xml",
        parse=_parse_nunit,
        matches=lambda root: local_name(root) in ("test-run", "test-results"),
    ),
    Format(
        name="xunit",
        kind="xml",
        parse=_parse_xunit,
        matches=lambda root: local_name(root) == "assemblies",
    ),
    Format(
        name="trx", kind="xml", parse=_parse_trx, matches=lambda root: local_name(root) == "TestRun"
    ),
)

""".NET test reports: NUnit 2 and 3 XML, xUnit.net XML (v1 and v2+) and Visual Studio TRX.

They are read natively rather than through a JUnit conversion because each says something
JUnit XML cannot: NUnit's label separates a crashed test from a failed assertion, TRX has
timeout and abort outcomes (a stopped test, whose duration is only a lower bound) and can
hold reruns of one test, and xUnit.net records cleanup failures that belong to no test.

Each dialect's results are mapped the way its own tool counts them in its summary; the
tables below say where each mapping comes from and where testlens still differs. A result
value a table does not know is refused with a :class:`ReportError`, never guessed. A value
that only says the file cannot tell the test's verdict (a TRX test still running when the run
was cut off) becomes a skipped attempt, so the test keeps its other attempts and they decide
its status.

Durations are read as the writer's culture printed them: .NET writers format seconds with
the current culture (NUnit 3's NUnit 2 result writer does), so ``0,014`` and ``1.234,5`` are
as much a duration as ``0.014``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from lxml import etree

from ..model import Attempt, AttemptStatus, ReportError, TestCase, truncate_output
from . import Format
from .xml import local_name

# NUnit and xUnit.net print an unexpected exception as "Full.Type.Name : message".
_EXCEPTION_PREFIX = re.compile(r"((?:[A-Za-z_][\w`]*\.)+[A-Za-z_][\w`]*) : ")
# NUnit 3.12 puts this in the label, later versions in the failure message.
_NUNIT_TIMEOUT = re.compile(r"Test exceeded Timeout value", re.IGNORECASE)

# Thousands separators .NET cultures print that are never a decimal separator: space, no-break
# space, narrow no-break space (fr-FR) and the apostrophes of de-CH.
_GROUP_MARKS = str.maketrans("", "", " \u00a0\u202f'\u2019")
# Seconds with "." or "," as the decimal separator, the other one (if any) grouping thousands.
# A separator that occurs once is the decimal one: .NET writers print seconds with fixed
# decimals and no grouping ("0.000" is NUnit 2's format), so in a decimal-comma culture 1.234 s
# is "1,234"; only a separator that repeats ("1.234.567") or precedes the other one
# ("1.234,5") can be grouping.
_LOCALISED_SECONDS = re.compile(
    r"(?:\d*|\d{1,3}(?P<group>[.,])\d{3}(?:(?P=group)\d{3})*)"
    r"(?:(?!(?P=group))(?P<decimal>[.,])\d*)?"
)


def _text(element: etree._Element, path: str) -> str | None:
    """The text at ``path`` below ``element``, or None when it is missing or blank."""
    found = element.find(path)
    text = found.text if found is not None else None
    return text if text and text.strip() else None


def _seconds_ms(value: str | None) -> float:
    """Milliseconds of a duration in seconds, printed in whatever culture the writer ran in.

    The JUnit reader's ``seconds_to_ms`` is not used: it reads "1,234" as Surefire's 1234 s
    where a .NET writer means 1.234 s, and it zeroes what it cannot read, where a duration
    that is not a number is refused here, like a TRX duration that is not a TimeSpan.
    """
    if value is None or not value.strip():
        return 0.0  # tests that never ran have no time
    try:
        return float(value) * 1000
    except ValueError:
        pass
    text = value.strip().translate(_GROUP_MARKS)
    match = _LOCALISED_SECONDS.fullmatch(text)
    if match is None or not any(char.isdigit() for char in text):
        raise ReportError(f"invalid duration {value!r}: expected a number of seconds")
    if match["group"]:
        text = text.replace(match["group"], "")
    if match["decimal"]:
        text = text.replace(match["decimal"], ".")
    return float(text) * 1000


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

# NUnit 2's ResultState, mapped as NUnit 2.6's console counts it (ResultSummarizer, printed by
# nunit-console as "Tests run: R, Errors: E, Failures: F, Inconclusive: I" and
# "Not run: N, Invalid: V, Ignored: G, Skipped: S").
_NUNIT2_RESULTS: dict[str, AttemptStatus] = {
    "Success": "passed",  # run, passed
    "Failure": "failed",  # run, one of the Failures
    "Error": "error",  # run, one of the Errors
    "Cancelled": "error",  # run, counted with the Errors; a stopped test (censored)
    # Listed under "Not run" as Invalid, but the console's exit code adds these to errors and
    # failures (a bad signature fails the run), as NUnit 3 files them under Failed: Invalid.
    "NotRunnable": "error",
    # Run, yet neither passed nor failed, and not held against the run: testlens has no such
    # status, and skipped is the one that claims no verdict.
    "Inconclusive": "skipped",
    "Ignored": "skipped",  # not run: Ignored
    "Skipped": "skipped",  # not run: Skipped
}
# xs:boolean, which writers other than NUnit spell in lower case or as digits.
_FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _parse_nunit(root: etree._Element) -> list[TestCase]:
    read = _nunit3_case if _is_nunit3(root) else _nunit2_case
    return [read(case) for case in root.iter("{*}test-case")]


def _is_nunit(root: etree._Element) -> bool:
    """NUnit 3's ``test-run``, NUnit 2's ``test-results``, or a bare ``test-suite``.

    NUnit 3's framework renders one assembly's result as a bare suite, and tools that write
    the NUnit 2 schema emit one too. Only the hyphen tells it from JUnit's ``testsuite``, so
    the suite must also be NUnit-shaped: every NUnit version since 2.4 gives a suite a
    ``type``, and older ones hold its children in ``results``.
    """
    name = local_name(root)
    if name in ("test-run", "test-results"):
        return True
    return name == "test-suite" and (
        root.get("type") is not None or root.find("{*}results") is not None
    )


def _is_nunit3(root: etree._Element) -> bool:
    """NUnit 3 wraps its results in ``test-run``; a bare suite is NUnit 3's when it has the
    ``fullname`` NUnit 3 gives every suite and NUnit 2 never writes."""
    name = local_name(root)
    return name == "test-run" or (name == "test-suite" and root.get("fullname") is not None)


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
    if result is None:
        status = _nunit2_status_without_result(case)
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


def _nunit2_status_without_result(case: etree._Element) -> AttemptStatus:
    """The status of a test case written before NUnit 2.4 added ``result``, or by a tool that
    writes only the older attributes.

    ``executed`` says whether it ran; ``success``, written only for tests that ran, whether it
    passed. Where a writer leaves ``success`` out, a ``failure`` child is what marks a failed
    test. These versions wrote every failed test as a ``failure``, errors included.
    """
    if _flag(case, "executed") is False:
        return "skipped"
    succeeded = _flag(case, "success")
    if succeeded is None:
        succeeded = case.find("{*}failure") is None
    return "passed" if succeeded else "failed"


def _flag(case: etree._Element, attribute: str) -> bool | None:
    value = case.get(attribute)
    if value is None:
        return None
    flag = _FLAGS.get(value.strip().lower())
    if flag is None:
        raise ReportError(
            f"invalid NUnit {attribute}={value!r} for {case.get('name')!r}: expected True or False"
        )
    return flag


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

# As the xUnit.net console summarises an assembly ("Total: T, Errors: E, Failed: F,
# Skipped: S, Not Run: N"). Its Errors are failures outside any test (cleanup, and a v1
# class's fixture), which it keeps out of Total; here they are erroring pseudo-tests.
_XUNIT_RESULTS: dict[str, AttemptStatus] = {
    "Pass": "passed",
    "Fail": "failed",
    "Skip": "skipped",
    "NotRun": "skipped",  # v3 explicit tests that were not asked for: its "Not Run"
}
# xUnit.net v2 and later escape names, messages and skip reasons C-style ("\n" for a newline);
# v1 wrote them as they were. Undo the escapes real text needs; control characters stay
# spelled out, safer to store and show.
_XUNIT_ESCAPE = re.compile(r'\\([\\rnt"])')
_XUNIT_UNESCAPED = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", '"': '"'}


def _xunit_text(text: str | None, escaped: bool) -> str | None:
    if not text or not escaped:
        return text
    return _XUNIT_ESCAPE.sub(lambda m: _XUNIT_UNESCAPED[m[1]], text)


def _is_xunit(root: etree._Element) -> bool:
    """``assemblies``, or the single ``assembly`` root xUnit.net v1 runners wrote.

    .NET assembly manifests have an ``assembly`` root too, but never the ``total`` count every
    xUnit.net assembly carries.
    """
    name = local_name(root)
    return name == "assemblies" or (name == "assembly" and root.get("total") is not None)


def _parse_xunit(root: etree._Element) -> list[TestCase]:
    """Every test of every assembly, then the assembly's failures outside any test.

    v2 and later group tests in ``collection`` elements and list those failures in
    ``errors``; v1 groups them in ``class`` elements, a class's ``failure`` being its
    fixture's. Runners other than xUnit.net's own may put tests straight in the assembly.
    """
    assemblies: Iterable[etree._Element] = (
        [root] if local_name(root) == "assembly" else root.iterfind("{*}assembly")
    )
    tests: list[TestCase] = []
    for assembly in assemblies:
        tests.extend(_xunit_test(test) for test in assembly.iter("{*}test"))
        for error in assembly.iterfind("{*}errors/{*}error"):
            tests.append(_xunit_error(error, error.get("type", "error"), error.get("name", "")))
        for failed_class in assembly.iterfind("{*}class[{*}failure]"):
            # xUnit.net v2+ runners report a v1 class failure as a "fatal" error
            tests.append(_xunit_error(failed_class, "fatal", failed_class.get("name", "")))
    return tests


def _xunit_attempt(
    element: etree._Element, status: AttemptStatus, duration_ms: float, escaped: bool
) -> Attempt:
    failure = element.find("{*}failure")
    message = _xunit_text(
        _text(element, "{*}failure/{*}message")
        or _text(element, "{*}reason/{*}message")  # v1 wraps the skip reason in a message
        or _text(element, "{*}reason"),
        escaped,
    )
    declared = failure.get("exception-type") if failure is not None else None
    return Attempt(
        status=status,
        duration_ms=duration_ms,
        message=message,
        # exception-type is optional in v2; the message then starts with the type, if any
        error_type=declared or _exception_type(status, message),
        stack=_text(element, "{*}failure/{*}stack-trace"),
        stdout=truncate_output(_text(element, "{*}output")),
    )


def _xunit_test(test: etree._Element) -> TestCase:
    """A ``test``; its suite is the enclosing collection (v1: class) display name.

    ``type`` and ``method`` are optional in v2. Without ``type`` the class is the display
    name's prefix before ``.method``; a display name that cannot be split that way (a custom
    one, or no ``method``) stays whole, with no class.
    """
    result = test.get("result")
    status = _XUNIT_RESULTS.get(result or "")
    if status is None:
        raise ReportError(f"unknown xUnit.net result {result!r} for {test.get('name')!r}")
    container = test.getparent()
    kind = local_name(container) if container is not None else ""
    escaped = kind != "class"
    suite = ""  # for a test straight in the assembly, whose name is a path on the machine
    if container is not None and kind in ("collection", "class"):
        suite = _xunit_text(container.get("name", ""), escaped) or ""
    name = _xunit_text(test.get("name", ""), escaped) or ""
    classname = test.get("type") or (suite if kind == "class" else _xunit_class(name, test))
    return TestCase(
        name=_without_class(name, classname),
        classname=classname,
        suite=suite,
        attempts=[_xunit_attempt(test, status, _seconds_ms(test.get("time")), escaped)],
    )


def _xunit_class(name: str, test: etree._Element) -> str:
    """The class a display name ``NS.Class.Method(args)`` gives, given the test's method."""
    method = test.get("method")
    bare = name.split("(", 1)[0]
    if method and bare.endswith("." + method):
        return bare[: -len(method) - 1]
    return ""


def _xunit_error(element: etree._Element, kind: str, name: str) -> TestCase:
    """A cleanup or fixture failure outside any test, kept as an erroring pseudo-test.

    Dropping it would show a run that failed only in a fixture as green; xUnit.net v3's own
    TRX output turns these into failed tests too. It takes no time of its own: a v1 class's
    ``time`` is its tests'.
    """
    escaped = local_name(element) != "class"
    attempt = _xunit_attempt(element, "error", 0.0, escaped)
    return TestCase(name=f"[{kind}] {name}".rstrip(), attempts=[attempt])


# --- Visual Studio TRX -------------------------------------------------------------------

# outcome -> (status, censored), as `dotnet test` counts each outcome. VSTest's TRX logger
# writes only Passed, Failed and NotExecuted (its Skipped, None and NotFound), and
# Microsoft.Testing.Platform writes a timeout as Failed; the rest come from MSTest v1 and
# other writers, and MSTest's adapter says how vstest counts them (UnitTestOutcomeHelper:
# Error, Timeout and Aborted are Failed, NotRunnable Failed by default, Inconclusive Skipped by
# default, InProgress none of them, which the console prints as skipped).
_TRX_OUTCOMES: dict[str, tuple[AttemptStatus, bool]] = {
    "Passed": ("passed", False),
    "PassedButRunAborted": ("passed", False),  # the test finished; the run stopped later
    "Warning": ("passed", False),  # "this is not a failure", says the TRX schema
    "Completed": ("passed", False),  # finished, with no measure of success to fail on
    "Failed": ("failed", False),
    "Timeout": ("failed", True),
    "Error": ("error", False),  # it could not be run: counted as failed, like a crash
    "NotRunnable": ("error", False),
    "Aborted": ("error", True),
    "NotExecuted": ("skipped", False),
    "Inconclusive": ("skipped", False),
    # The file cannot tell how these ended: the run stopped or lost the test's host before it
    # finished (censored, having run for at least its duration), or before it started.
    # Skipped keeps them as attempts that claim no verdict, and leaves the test's other
    # attempts to decide its status.
    "InProgress": ("skipped", True),
    "Disconnected": ("skipped", True),
    "Pending": ("skipped", False),
}
# VSTest writes no outcome attribute for Error: its TRX writer leaves out a field equal to
# the field's default, and Error is the first value of its TestOutcome.
_TRX_DEFAULT_OUTCOME = "Error"
_TRX_NAMESPACE = "{http://microsoft.com/schemas/VisualStudio/TeamTest/"  # 2006 and 2010
# A .NET TimeSpan: [d.]hh:mm:ss[.fffffff], or in its localised general format
# [d:]h:mm:ss[,fffffff] (the fraction separator is the culture's).
_TIMESPAN = re.compile(r"(?:(\d+)[.:])?(\d+):(\d\d):(\d\d(?:[.,]\d+)?)")


def _is_trx(root: etree._Element) -> bool:
    """A ``TestRun`` in the TRX namespace, or holding TRX's sections if a writer left the
    namespace out: CppUnit's XML output has a ``TestRun`` root too."""
    if local_name(root) != "TestRun":
        return False
    if str(root.tag).startswith(_TRX_NAMESPACE):
        return True
    return any(
        root.find(f"{{*}}{section}") is not None for section in ("Results", "TestDefinitions")
    )


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
    outcome = result.get("outcome", _TRX_DEFAULT_OUTCOME)
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
    return whole_minutes * 60_000 + float(seconds.replace(",", ".")) * 1000


def _start_time(result: etree._Element) -> datetime | None:
    try:
        start = datetime.fromisoformat(result.get("startTime", ""))
    except ValueError:
        return None
    return start if start.tzinfo else start.replace(tzinfo=UTC)


FORMATS: tuple[Format, ...] = (
    Format(name="nunit", kind="xml", parse=_parse_nunit, matches=_is_nunit),
    Format(name="xunit", kind="xml", parse=_parse_xunit, matches=_is_xunit),
    Format(name="trx", kind="xml", parse=_parse_trx, matches=_is_trx),
)

"""The .NET parsers (NUnit, xUnit.net, TRX) on real reports and on small hand-written ones.

Corpus reports are checked against dorny/test-reporter's snapshots: counts and every test's
status. Its "failed" covers our failed and error, and its "success" is our passed.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from corpus import REPORTS
from lxml import etree

from testlens.core.model import Attempt, Report, ReportError, TestCase
from testlens.core.parsers import dotnet, parse_report
from testlens.core.parsers.xml import load_xml

TEST_REPORTER = REPORTS / "test-reporter"
TESTS_DIR = TEST_REPORTER / "__tests__"
DERIVED = TEST_REPORTER / "_derived"
XUNIT_V2 = Path(__file__).parents[1] / "data" / "dotnet" / "xunit-v2.xml"

# Fixtures with a snapshot, named as the snapshots name them, and the format they must be
# detected as.
SNAPSHOT_FIXTURES = {
    "fixtures/dotnet-trx.trx": "trx",
    "fixtures/dotnet-xunitv3.trx": "trx",
    "fixtures/dotnet-nunit.xml": "nunit",
    "fixtures/external/FluentValidation.Tests.trx": "trx",
    "fixtures/external/SilentNotes.trx": "trx",
}
EMPTY_FIXTURES = (
    "fixtures/empty/dotnet-trx.trx",
    "fixtures/empty/dotnet-trx-empty-test-definitions.trx",
)
NUNIT_SAMPLE = "fixtures/external/nunit-sample.xml"
DORNY_RESULT = {"passed": "success", "failed": "failed", "error": "failed", "skipped": "skipped"}


def _snapshots() -> list[dict[str, str]]:
    with (DERIVED / "snapshot-summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [row for row in rows if row["fixture"].removeprefix("__tests__/") in SNAPSHOT_FIXTURES]
    # dotnet-trx.trx has two snapshots (the default and the "only failed" listing)
    assert len(chosen) == len(SNAPSHOT_FIXTURES) + 1
    return chosen


def _snapshot_cases() -> dict[str, list[dict]]:
    cases: dict[str, list[dict]] = {}
    with (DERIVED / "snapshot-cases.jsonl").open() as handle:
        for line in handle:
            case = json.loads(line)
            cases.setdefault(case["key"], []).append(case)
    return cases


SNAPSHOTS = _snapshots()
CASES = _snapshot_cases()


def _fixture(snapshot: dict[str, str]) -> str:
    return snapshot["fixture"].removeprefix("__tests__/")


def _parse(fixture: str) -> Report:
    return parse_report((TESTS_DIR / fixture).read_bytes())


def _our_key(report: Report, test: TestCase) -> tuple[str, str]:
    """Where test-reporter files a test: TRX by class ("Unclassified" without one), NUnit by
    the fixture's short name."""
    if report.format == "trx":
        return (test.classname or "Unclassified", test.name)
    return (test.suite.rsplit(".", 1)[-1], test.name)


def _their_key(case: dict) -> tuple[str, str]:
    return (case["suite"] if case["group"] is None else case["group"], case["test"])


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda s: s["snapshot_key"])
def test_counts_match_test_reporter(snapshot: dict[str, str]) -> None:
    report = _parse(_fixture(snapshot))
    summary = report.summary()
    assert report.format == SNAPSHOT_FIXTURES[_fixture(snapshot)]
    assert summary.flaky == 0
    assert (summary.tests, summary.passed, summary.failed + summary.errors, summary.skipped) == (
        int(snapshot["tests"]),
        int(snapshot["passed"]),
        int(snapshot["failed"]),
        int(snapshot["skipped"]),
    )


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda s: s["snapshot_key"])
def test_every_test_status_matches_test_reporter(snapshot: dict[str, str]) -> None:
    report = _parse(_fixture(snapshot))
    cases = CASES[snapshot["snapshot_key"]]
    ours = Counter((_our_key(report, t), DORNY_RESULT[t.status]) for t in report.tests)
    theirs = Counter((_their_key(case), case["result"]) for case in cases)
    assert ours == theirs


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda s: s["snapshot_key"])
def test_every_duration_matches_test_reporter(snapshot: dict[str, str]) -> None:
    report = _parse(_fixture(snapshot))
    ours = {_our_key(report, t): t.duration_ms for t in report.tests}
    theirs = {_their_key(case): case["time_ms"] for case in CASES[snapshot["snapshot_key"]]}
    assert len(ours) == len(report.tests)
    assert ours == pytest.approx(theirs)


def test_theory_rows_sharing_one_trx_definition_are_distinct_tests() -> None:
    # xUnit.net theories with non-serialisable data get one TestDefinition for all rows:
    # 755 definitions but 804 results, every one a test of its own in test-reporter too.
    fixture = "fixtures/external/FluentValidation.Tests.trx"
    root = etree.fromstring((TESTS_DIR / fixture).read_bytes())
    definitions = root.findall("{*}TestDefinitions/{*}UnitTest")
    report = _parse(fixture)
    assert (len(definitions), len(report.tests)) == (755, 804)
    assert all(len(test.attempts) == 1 for test in report.tests)


@pytest.mark.parametrize("fixture", EMPTY_FIXTURES)
def test_empty_trx_reports_have_no_tests(fixture: str) -> None:
    expectation = next(
        e
        for e in json.loads((DERIVED / "inline-expectations.json").read_text())
        if e["fixture"] == f"__tests__/{fixture}"
    )
    report = _parse(fixture)
    assert report.format == "trx"
    assert len(report.tests) == expectation["expect"]["tests"] == 0


def test_nunit_sample_matches_its_own_counters() -> None:
    # No upstream test reads this early NUnit 3 file, so the expectation is its root counters.
    # Its two fixtures marked Skipped list no test-case, and the counters leave them out too.
    data = (TESTS_DIR / NUNIT_SAMPLE).read_bytes()
    root = etree.fromstring(data)
    summary = parse_report(data).summary()
    assert summary.tests == int(root.get("total")) == 18
    assert summary.passed == int(root.get("passed"))
    assert summary.failed + summary.errors == int(root.get("failed"))
    assert summary.skipped == int(root.get("skipped")) + int(root.get("inconclusive"))


def test_nunit_sample_keeps_parameterised_fixture_instances_apart() -> None:
    report = _parse(NUNIT_SAMPLE)
    instances = [
        (t.suite, t.name) for t in report.tests if t.classname == "NUnit.Tests.ParameterizedFixture"
    ]
    assert instances == [
        ("NUnit.Tests.ParameterizedFixture(42)", "Test1"),
        ("NUnit.Tests.ParameterizedFixture(42)", "Test2"),
        ("NUnit.Tests.ParameterizedFixture(5)", "Test1"),
        ("NUnit.Tests.ParameterizedFixture(5)", "Test2"),
    ]
    # this early NUnit 3 writes "time", not "duration"
    by_name = {t.name: t for t in report.tests}
    assert by_name["MethodWithParameters(2,2)"].duration_ms == pytest.approx(6.0)
    crashed = by_name["TestWithException"].attempts[0]
    assert (crashed.status, crashed.error_type) == ("error", "System.ApplicationException")
    # Invalid tests that this runner version called Skipped stay skipped
    assert by_name["NotRunnableTest"].status == "skipped"


def test_nunit_fixture_details() -> None:
    report = _parse("fixtures/dotnet-nunit.xml")
    by_name = {t.name: t for t in report.tests}
    failing = by_name["Failing_Test"]
    assert (failing.suite, failing.classname) == (
        "DotnetTests.XUnitTests.CalculatorTests",
        "DotnetTests.XUnitTests.CalculatorTests",
    )
    assert failing.attempts[0].message == "  Expected: 3\n  But was:  2\n"
    assert failing.attempts[0].stack.lstrip().startswith("at DotnetTests.XUnitTests")
    # the label "Test exceeded Timeout value 1ms." marks a test stopped by NUnit
    timeout = by_name["Timeout_Test"].attempts[0]
    assert (timeout.status, timeout.censored) == ("failed", True)
    assert by_name["Exception_In_Test"].attempts[0].error_type == "System.Exception"
    assert by_name["Skipped_Test"].attempts[0].message == "Skipped"


def test_every_dotnet_report_in_the_corpus_is_checked() -> None:
    listed = (*SNAPSHOT_FIXTURES, *EMPTY_FIXTURES, NUNIT_SAMPLE)
    checked = {f"test-reporter/__tests__/{fixture}" for fixture in listed}
    found = set()
    for path in REPORTS.rglob("*"):
        if path.suffix not in (".xml", ".trx") or not path.is_file():
            continue
        try:
            root = load_xml(path.read_bytes())
        except ReportError:
            continue  # deliberately corrupt fixtures of other formats
        if any(f.matches(root) for f in dotnet.FORMATS):
            found.add(path.relative_to(REPORTS).as_posix())
    assert found == checked


# --- TRX --------------------------------------------------------------------------------

TRX_NS = "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"


def trx(results: str, definitions: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><TestRun id="1" xmlns="{TRX_NS}">'
        f"<Results>{results}</Results><TestDefinitions>{definitions}</TestDefinitions>"
        "</TestRun>"
    ).encode()


def definition(test_id: str, class_name: str, method: str) -> str:
    return (
        f'<UnitTest name="{method}" id="{test_id}">'
        f'<TestMethod className="{class_name}" name="{method}" /></UnitTest>'
    )


def result(
    test_id: str,
    name: str,
    outcome: str,
    *,
    duration: str | None = "00:00:00.0100000",
    start: str = "2024-03-14T09:00:00.0000000+00:00",
    inner: str = "",
) -> str:
    timing = f'duration="{duration}" ' if duration is not None else ""
    return (
        f'<UnitTestResult testId="{test_id}" testName="{name}" outcome="{outcome}" '
        f'{timing}startTime="{start}">{inner}</UnitTestResult>'
    )


def only_attempt(report: Report) -> Attempt:
    [test] = report.tests
    [attempt] = test.attempts
    return attempt


@pytest.mark.parametrize(
    ("duration", "ms"),
    [
        ("00:00:00.1084258", 108.4258),
        ("00:00:00", 0.0),
        ("00:01:02.5", 62_500.0),
        ("12:00:00.0000001", 43_200_000.0001),
        ("1.02:00:00", 93_600_000.0),  # TimeSpan prints days before the hours
        (None, 0.0),  # tests that never ran have no duration
    ],
)
def test_trx_duration_is_a_dotnet_timespan(duration: str | None, ms: float) -> None:
    report = parse_report(trx(result("t1", "A", "Passed", duration=duration)))
    assert only_attempt(report).duration_ms == pytest.approx(ms)


@pytest.mark.parametrize("duration", ["0.25", "1:2:3", "00:00:60x"])
def test_trx_duration_that_is_not_a_timespan_is_rejected(duration: str) -> None:
    with pytest.raises(ReportError, match="TRX duration"):
        parse_report(trx(result("t1", "A", "Passed", duration=duration)))


def test_trx_reruns_are_attempts_in_start_order() -> None:
    # TRX lists results as they finish; the rerun that passed happens to come first here.
    results = result(
        "t1",
        "Shop.CartTests.Adds",
        "Passed",
        duration="00:00:00.2000000",
        start="2024-03-14T09:05:00.0000000+01:00",
    ) + result(
        "t1",
        "Shop.CartTests.Adds",
        "Failed",
        duration="00:00:00.3000000",
        start="2024-03-14T09:01:00.0000000+01:00",
        inner="<Output><ErrorInfo><Message>boom</Message></ErrorInfo></Output>",
    )
    report = parse_report(trx(results, definition("t1", "Shop.CartTests", "Adds")))
    [test] = report.tests
    assert (test.classname, test.name, test.status) == ("Shop.CartTests", "Adds", "flaky")
    assert [(a.status, a.duration_ms, a.message) for a in test.attempts] == [
        ("failed", pytest.approx(300.0), "boom"),
        ("passed", pytest.approx(200.0), None),
    ]


def test_trx_rows_of_one_definition_with_different_names_are_different_tests() -> None:
    results = result("t1", "Shop.CartTests.Adds(n: 1)", "Passed") + result(
        "t1", "Shop.CartTests.Adds(n: 2)", "Failed"
    )
    report = parse_report(trx(results, definition("t1", "Shop.CartTests", "Adds")))
    assert [(t.name, t.status) for t in report.tests] == [
        ("Adds(n: 1)", "passed"),
        ("Adds(n: 2)", "failed"),
    ]


@pytest.mark.parametrize(
    ("outcome", "status", "censored"),
    [
        ("Passed", "passed", False),
        ("Failed", "failed", False),
        ("Error", "error", False),
        ("Timeout", "failed", True),
        ("Aborted", "error", True),
        ("NotRunnable", "error", False),
        ("NotExecuted", "skipped", False),
        ("Inconclusive", "skipped", False),
    ],
)
def test_trx_outcomes(outcome: str, status: str, censored: bool) -> None:
    attempt = only_attempt(parse_report(trx(result("t1", "A", outcome))))
    assert (attempt.status, attempt.censored) == (status, censored)


def test_trx_unknown_outcome_is_rejected() -> None:
    with pytest.raises(ReportError, match="unknown TRX outcome 'Exploded'"):
        parse_report(trx(result("t1", "A", "Exploded")))


def test_trx_data_driven_rows_replace_their_parent() -> None:
    rows = result("t1", "Adds (1,2,3)", "Passed", inner="") + result("t1", "Adds (2,2,5)", "Failed")
    parent = result("t1", "Adds", "Failed", inner=f"<InnerResults>{rows}</InnerResults>")
    report = parse_report(trx(parent, definition("t1", "Shop.CartTests", "Adds")))
    assert [(t.classname, t.name, t.status) for t in report.tests] == [
        ("Shop.CartTests", "Adds (1,2,3)", "passed"),
        ("Shop.CartTests", "Adds (2,2,5)", "failed"),
    ]


def test_trx_data_rows_without_names_of_their_own_keep_the_parent() -> None:
    # Rows named like their parent are different data, not reruns: the parent stands for them.
    rows = result("t1", "Adds", "Passed") + result("t1", "Adds", "Failed")
    parent = result(
        "t1",
        "Adds",
        "Failed",
        duration="00:00:00.5000000",
        inner=f"<InnerResults>{rows}</InnerResults>",
    )
    report = parse_report(trx(parent, definition("t1", "Shop.CartTests", "Adds")))
    attempt = only_attempt(report)
    assert (attempt.status, attempt.duration_ms) == ("failed", pytest.approx(500.0))


def test_trx_assembly_qualified_class_name_is_cut_to_the_class() -> None:
    qualified = "Shop.CartTests, Shop.Tests, Version=1.0.0.0, Culture=neutral, PublicKeyToken=null"
    report = parse_report(trx(result("t1", "Adds", "Passed"), definition("t1", qualified, "Adds")))
    assert [(t.classname, t.name) for t in report.tests] == [("Shop.CartTests", "Adds")]


def test_trx_output_and_error_details() -> None:
    output = (
        "<Output><StdOut>starting</StdOut><StdErr>warning: slow</StdErr><ErrorInfo>"
        "<Message>System.InvalidOperationException : Sequence contains no elements</Message>"
        "<StackTrace>   at Shop.Cart.First()</StackTrace></ErrorInfo></Output>"
    )
    attempt = only_attempt(parse_report(trx(result("t1", "A", "Failed", inner=output))))
    assert attempt.error_type == "System.InvalidOperationException"
    assert attempt.stack == "   at Shop.Cart.First()"
    assert (attempt.stdout, attempt.stderr) == ("starting", "warning: slow")


# --- NUnit ------------------------------------------------------------------------------


def nunit3(case: str) -> bytes:
    return (
        '<test-run id="0" result="Failed">'
        '<test-suite type="Assembly" name="Shop.Tests.dll" fullname="/src/Shop.Tests.dll">'
        '<test-suite type="TestSuite" name="Shop" fullname="Shop">'
        '<test-suite type="TestFixture" name="CartTests" fullname="Shop.CartTests" '
        f'classname="Shop.CartTests">{case}</test-suite></test-suite></test-suite></test-run>'
    ).encode()


def nunit2(case: str) -> bytes:
    return (
        '<test-results name="Shop.Tests.dll" total="1">'
        '<test-suite type="Assembly" name="/src/Shop.Tests.dll"><results>'
        '<test-suite type="Namespace" name="Shop"><results>'
        f'<test-suite type="TestFixture" name="CartTests"><results>{case}</results>'
        "</test-suite></results></test-suite></results></test-suite></test-results>"
    ).encode()


@pytest.mark.parametrize(
    ("v2_result", "v3_result", "v3_label", "status", "censored"),
    [
        ("Success", "Passed", "", "passed", False),
        ("Failure", "Failed", "", "failed", False),
        ("Error", "Failed", "Error", "error", False),
        ("NotRunnable", "Failed", "Invalid", "error", False),
        ("Cancelled", "Failed", "Cancelled", "error", True),
        ("Ignored", "Skipped", "Ignored", "skipped", False),
        ("Skipped", "Skipped", "Explicit", "skipped", False),
        ("Inconclusive", "Inconclusive", "", "skipped", False),
    ],
)
def test_nunit2_and_nunit3_read_the_same_test_the_same_way(
    v2_result: str, v3_result: str, v3_label: str, status: str, censored: bool
) -> None:
    detail = "<failure><message>System.Exception : boom</message></failure>"
    v2 = parse_report(
        nunit2(
            f'<test-case name="Shop.CartTests.Adds(1,2.5)" executed="True" result="{v2_result}" '
            f'time="0.250">{detail}</test-case>'
        )
    )
    v3 = parse_report(
        nunit3(
            f'<test-case name="Adds(1,2.5)" fullname="Shop.CartTests.Adds(1,2.5)" '
            f'classname="Shop.CartTests" result="{v3_result}" label="{v3_label}" '
            f'duration="0.250">{detail}</test-case>'
        )
    )
    assert v2.format == v3.format == "nunit"
    for report in (v2, v3):
        [test] = report.tests
        attempt = only_attempt(report)
        assert test.identity == ("", "Shop.CartTests", "Shop.CartTests", "Adds(1,2.5)")
        assert (attempt.status, attempt.censored) == (status, censored)
        assert attempt.duration_ms == pytest.approx(250.0)
        assert attempt.message == "System.Exception : boom"


def test_nunit3_warning_is_a_pass() -> None:
    report = parse_report(
        nunit3(
            '<test-case name="Adds" classname="Shop.CartTests" result="Warning" duration="0.1">'
            "<reason><message>Rounding is lossy</message></reason></test-case>"
        )
    )
    attempt = only_attempt(report)
    assert (attempt.status, attempt.message) == ("passed", "Rounding is lossy")


def test_nunit3_timeout_message_marks_a_stopped_test() -> None:
    # NUnit 4 reports a timeout as a plain failure whose message says so.
    report = parse_report(
        nunit3(
            '<test-case name="Adds" classname="Shop.CartTests" result="Failed" duration="1.002">'
            "<failure><message>Test exceeded Timeout value of 1000ms</message></failure>"
            "<output>started\n</output></test-case>"
        )
    )
    attempt = only_attempt(report)
    assert (attempt.status, attempt.censored, attempt.stdout) == ("failed", True, "started\n")


def test_nunit3_unknown_result_is_rejected() -> None:
    with pytest.raises(ReportError, match="unknown NUnit result 'Exploded'"):
        parse_report(nunit3('<test-case name="Adds" result="Exploded" />'))


@pytest.mark.parametrize(
    ("executed", "success", "status"),
    [
        ("True", "True", "passed"),
        ("True", "False", "failed"),
        ("False", "False", "skipped"),
    ],
)
def test_nunit2_without_result_falls_back_to_executed_and_success(
    executed: str, success: str, status: str
) -> None:
    # NUnit 2.2 and older write no result attribute.
    report = parse_report(
        nunit2(
            f'<test-case name="Shop.CartTests.Adds" executed="{executed}" success="{success}" />'
        )
    )
    assert only_attempt(report).status == status


# --- xUnit.net --------------------------------------------------------------------------


def test_xunit_v2_counts_match_its_assembly_counters() -> None:
    data = XUNIT_V2.read_bytes()
    root = etree.fromstring(data)
    report = parse_report(data)
    summary = report.summary()

    def total(counter: str) -> int:
        return sum(int(assembly.get(counter)) for assembly in root.iter("assembly"))

    assert report.format == "xunit"
    # the cleanup error is an extra, erroring pseudo-test
    assert (summary.tests, summary.passed, summary.failed, summary.skipped, summary.errors) == (
        total("total") + total("errors"),
        total("passed"),
        total("failed"),
        total("skipped"),
        total("errors"),
    )


def test_xunit_v2_names_suites_and_details() -> None:
    report = parse_report(XUNIT_V2.read_bytes())
    tests = {t.name: t for t in report.tests}
    assert list(tests) == [
        "Applies_discount(percent: 10, expected: 90)",
        "Applies_discount(percent: 0, expected: 100)",
        "Rounds_half_to_even",
        'Formats_currency(culture: "de-DE")',
        "Uses_exchange_rates",
        "Saves_order",
        "Loads an order by id",  # a custom display name keeps its own wording
        "Deletes_order",
        "[test-class-cleanup] Shop.Tests.Data.OrderRepositoryTests",
        "Returns_ok",
    ]
    rounding = tests["Rounds_half_to_even"]
    assert (rounding.suite, rounding.classname, rounding.status) == (
        "Test collection for Shop.Tests.PriceCalculatorTests",
        "Shop.Tests.PriceCalculatorTests",
        "failed",
    )
    attempt = rounding.attempts[0]
    assert attempt.message == (
        "Assert.Equal() Failure: Values differ\nExpected: 10.12\nActual:   10.13"
    )
    assert attempt.error_type == "Xunit.Sdk.EqualException"
    assert attempt.duration_ms == pytest.approx(12.0441)
    assert attempt.stack.count("\n") == 1

    loads = tests["Loads an order by id"]
    assert (loads.suite, loads.classname) == (
        "Database collection",
        "Shop.Tests.Data.OrderRepositoryTests",
    )
    assert loads.attempts[0].error_type == "System.NullReferenceException"
    assert tests["Deletes_order"].attempts[0].message == (
        'Flaky on CI: "deadlock detected" (issue #398)'
    )
    assert tests['Formats_currency(culture: "de-DE")'].attempts[0].stdout == (
        "Formatting 12.5 as de-DE currency\n"
    )

    cleanup = tests["[test-class-cleanup] Shop.Tests.Data.OrderRepositoryTests"]
    assert (cleanup.status, cleanup.attempts[0].error_type) == (
        "error",
        "System.InvalidOperationException",
    )


def test_xunit_unescape_keeps_escaped_backslashes() -> None:
    doc = (
        b'<assemblies><assembly name="a.dll"><collection name="c">'
        rb'<test name="T.Reads(path: \&quot;C:\\new\&quot;)" type="T" method="Reads" time="0" '
        rb'result="Skip">'
        rb"<reason>line 1\r\nC:\\temp\x07</reason></test></collection></assembly></assemblies>"
    )
    [test] = parse_report(doc).tests
    assert test.name == r'Reads(path: "C:\new")'
    assert test.attempts[0].message == "line 1\r\nC:\\temp\\x07"


# --- detection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forced", "fixture"),
    [
        ("nunit", TESTS_DIR / "fixtures/dotnet-trx.trx"),
        ("trx", TESTS_DIR / "fixtures/dotnet-nunit.xml"),
        ("xunit", TESTS_DIR / "fixtures/dotnet-nunit.xml"),
        ("nunit", XUNIT_V2),
    ],
)
def test_a_forced_format_that_does_not_fit_is_rejected(forced: str, fixture: Path) -> None:
    with pytest.raises(ReportError, match=f"not in the {forced} format"):
        parse_report(fixture.read_bytes(), format=forced)

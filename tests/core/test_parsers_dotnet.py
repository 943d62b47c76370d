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
DATA = Path(__file__).parents[1] / "data" / "dotnet"
XUNIT_V2 = DATA / "xunit-v2.xml"

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
        # TimeSpan's localised formats, as a writer in a decimal-comma culture prints them:
        ("00:00:00,0140000", 14.0),
        ("0:00:00,014", 14.0),  # general short ("g"): hours without a leading zero
        ("1:02:00:00,5", 93_600_500.0),  # general long ("G"): days before a colon
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
        # What VSTest's own TRX logger writes (its Passed, Failed and Skipped/None/NotFound)
        ("Passed", "passed", False),
        ("Failed", "failed", False),
        ("NotExecuted", "skipped", False),
        # The rest, as `dotnet test` counts the same outcome when MSTest reports it
        # (UnitTestOutcomeHelper): Error, Timeout and Aborted are failures, NotRunnable is one
        # by default, Inconclusive is skipped by default.
        ("Timeout", "failed", True),  # Microsoft.Testing.Platform writes a timeout as Failed
        ("Error", "error", False),
        ("Aborted", "error", True),
        ("NotRunnable", "error", False),
        ("Inconclusive", "skipped", False),
        # Finished without a failure: the run, not the test, was aborted; "not a failure";
        # done with no measure of success.
        ("PassedButRunAborted", "passed", False),
        ("Warning", "passed", False),
        ("Completed", "passed", False),
        # Never finished, so no verdict; dotnet test prints such a test as skipped.
        ("InProgress", "skipped", True),
        ("Disconnected", "skipped", True),
        ("Pending", "skipped", False),
    ],
)
def test_trx_outcomes(outcome: str, status: str, censored: bool) -> None:
    attempt = only_attempt(parse_report(trx(result("t1", "A", outcome))))
    assert (attempt.status, attempt.censored) == (status, censored)
    assert attempt.duration_ms == pytest.approx(10.0)


def test_trx_result_without_an_outcome_is_an_error() -> None:
    # VSTest's TRX writer leaves out a field equal to its default, and the default outcome
    # (the first of its TestOutcome) is Error.
    report = parse_report(trx('<UnitTestResult testId="t1" testName="A" duration="00:00:01" />'))
    attempt = only_attempt(report)
    assert (attempt.status, attempt.censored, attempt.duration_ms) == ("error", False, 1000.0)


@pytest.mark.parametrize("outcome", ["Exploded", "", "passed"])
def test_trx_unknown_outcome_is_rejected(outcome: str) -> None:
    with pytest.raises(ReportError, match=f"unknown TRX outcome '{outcome}'"):
        parse_report(trx(result("t1", "A", outcome)))


@pytest.mark.parametrize(
    ("earlier", "later", "status"),
    [("Failed", "InProgress", "failed"), ("Passed", "Disconnected", "passed")],
)
def test_trx_attempt_without_a_verdict_leaves_the_others_to_decide(
    earlier: str, later: str, status: str
) -> None:
    # The rerun was still running when the run was cut off: it is kept, claiming nothing.
    results = result(
        "t1", "Shop.CartTests.Adds", earlier, start="2024-03-14T09:00:00.0000000+00:00"
    ) + result(
        "t1",
        "Shop.CartTests.Adds",
        later,
        duration=None,
        start="2024-03-14T09:05:00.0000000+00:00",
    )
    report = parse_report(trx(results, definition("t1", "Shop.CartTests", "Adds")))
    [test] = report.tests
    assert test.status == status
    assert [(a.status, a.censored) for a in test.attempts] == [
        (status, False),
        ("skipped", True),
    ]


def test_trx_without_its_namespace_is_still_trx() -> None:
    doc = b'<TestRun><Results><UnitTestResult testName="A" outcome="Passed" /></Results></TestRun>'
    report = parse_report(doc)
    assert (report.format, [t.status for t in report.tests]) == ("trx", ["passed"])


def test_a_cppunit_test_run_is_not_trx() -> None:
    # CppUnit's XmlOutputter also writes a TestRun root; read as TRX it would be an empty run.
    doc = (
        b'<TestRun><FailedTests/><SuccessfulTests><Test id="1"><Name>MathTest::add</Name>'
        b"</Test></SuccessfulTests><Statistics><Tests>1</Tests></Statistics></TestRun>"
    )
    with pytest.raises(ReportError, match="unrecognised XML report: root element <TestRun>"):
        parse_report(doc)


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


def test_nunit2_results_are_counted_as_the_nunit_console_counts_them() -> None:
    # The root holds NUnit 2.6's own summary: total is "Tests run" (passed, failures, errors,
    # inconclusive), not-run is invalid + ignored + skipped.
    data = (DATA / "nunit2-results.xml").read_bytes()
    root = etree.fromstring(data)
    report = parse_report(data)
    counts = {name: int(root.get(name)) for name in ("total", "errors", "failures", "not-run")}
    summary = report.summary()
    assert report.format == "nunit"
    assert {t.name: t.status for t in report.tests} == {
        "Adds_item(2,1.5m)": "passed",  # Success
        "Totals_match": "failed",  # Failure
        "Loads_prices": "error",  # Error
        "Checkout_under_load": "error",  # Cancelled: NUnit counts it with the errors
        "Ships_abroad": "skipped",  # Inconclusive
        "Applies_coupon": "skipped",  # Ignored
        "Computes_tax(System.String)": "error",  # NotRunnable
        "Refunds_to_card": "skipped",  # Skipped
    }
    assert summary.tests == counts["total"] + counts["not-run"] == 8
    assert summary.failed == counts["failures"]
    # Where testlens differs from the console's two lines: NotRunnable is listed there as
    # "Invalid" under "Not run", yet nunit-console's exit code adds it to errors and failures,
    # so it is an error here (as NUnit 3's Failed:Invalid is); Inconclusive counts there as
    # run, neither passed nor failed, which only skipped expresses here.
    assert summary.errors == counts["errors"] + int(root.get("invalid")) == 3
    assert summary.skipped == int(root.get("inconclusive")) + int(root.get("ignored")) + int(
        root.get("skipped")
    )
    assert summary.passed == counts["total"] - counts["errors"] - counts["failures"] - int(
        root.get("inconclusive")
    )
    tests = {t.name: t for t in report.tests}
    assert {t.suite for t in report.tests} == {"Shop.Tests.CartTests"}
    assert [(t.name, t.duration_ms) for t in report.tests if t.duration_ms] == [
        ("Adds_item(2,1.5m)", pytest.approx(12.0)),
        ("Totals_match", pytest.approx(31.0)),
        ("Loads_prices", pytest.approx(104.0)),
        ("Checkout_under_load", pytest.approx(2000.0)),
        ("Ships_abroad", pytest.approx(354.0)),
    ]
    cancelled = tests["Checkout_under_load"].attempts[0]
    assert (cancelled.censored, cancelled.message) == (True, "Test cancelled by user")
    crashed = tests["Loads_prices"].attempts[0]
    assert (crashed.error_type, crashed.censored) == ("System.InvalidOperationException", False)
    assert tests["Totals_match"].attempts[0].message == "  Expected: 3\n  But was:  2\n"
    assert tests["Ships_abroad"].attempts[0].message == "No carrier sandbox reachable"
    assert tests["Computes_tax(System.String)"].attempts[0].message == "No arguments were provided"
    assert tests["Refunds_to_card"].attempts[0].message is None


@pytest.mark.parametrize(
    ("attributes", "child", "status"),
    [
        ('executed="True" success="True"', "", "passed"),
        ('executed="True" success="False"', "<failure><message>boom</message></failure>", "failed"),
        ('executed="False"', "<reason><message>later</message></reason>", "skipped"),
        # other writers of the schema: xs:boolean in lower case or as digits
        ('executed="true" success="true"', "", "passed"),
        ('executed="1" success="0"', "", "failed"),
        ('executed="false"', "", "skipped"),
        # success is optional: a failure child is what marks a failed test
        ('executed="True"', "", "passed"),
        ('executed="true"', "<failure><message>boom</message></failure>", "failed"),
        ("", "", "passed"),
    ],
)
def test_nunit2_without_result_reads_executed_and_success(
    attributes: str, child: str, status: str
) -> None:
    # NUnit 2.2 and older write no result attribute, nor do some other writers of the schema.
    report = parse_report(
        nunit2(f'<test-case name="Shop.CartTests.Adds" {attributes} time="0.5">{child}</test-case>')
    )
    attempt = only_attempt(report)
    assert (attempt.status, attempt.duration_ms) == (status, pytest.approx(500.0))


def test_nunit2_flag_that_is_not_a_boolean_is_rejected() -> None:
    with pytest.raises(ReportError, match="invalid NUnit executed='yes'"):
        parse_report(nunit2('<test-case name="Shop.CartTests.Adds" executed="yes" />'))


def test_nunit2_unknown_result_is_rejected() -> None:
    with pytest.raises(ReportError, match="unknown NUnit result 'Passed'"):
        parse_report(nunit2('<test-case name="Shop.CartTests.Adds" result="Passed" />'))


def test_bare_nunit2_suite_is_read() -> None:
    # A tool writing the NUnit 2 schema in a decimal-comma culture, without <test-results>.
    report = parse_report((DATA / "nunit2-bare-suite.xml").read_bytes())
    assert report.format == "nunit"
    assert [(t.suite, t.name, t.status, t.duration_ms) for t in report.tests] == [
        ("Shop.Tests.PriceTests", "Rounds_half_to_even", "passed", pytest.approx(14.0)),
        ("Shop.Tests.PriceTests", 'Formats_currency("de-DE")', "passed", pytest.approx(163.0)),
        # one comma and three decimals: 1.234 s, as NUnit's "0.000" prints it in de-DE
        ("Shop.Tests.PriceTests", "Converts_rates", "failed", pytest.approx(1234.0)),
        ("Shop.Tests.PriceTests", "Uses_live_rates", "skipped", 0.0),
    ]
    tests = {t.name: t for t in report.tests}
    assert tests["Converts_rates"].attempts[0].stack.startswith("bei Shop.Tests.PriceTests")
    assert tests["Uses_live_rates"].attempts[0].message == "Needs the rates service"


def test_bare_nunit3_suite_is_read_as_nunit3() -> None:
    # NUnit 3's framework writes a bare suite for one assembly; only NUnit 3 writes fullname.
    doc = (
        b'<test-suite type="Assembly" id="0-1002" name="Shop.Tests.dll" '
        b'fullname="/src/Shop.Tests.dll" runstate="Runnable" result="Failed">'
        b'<test-suite type="TestFixture" id="0-1000" name="CartTests" fullname="Shop.CartTests" '
        b'classname="Shop.CartTests" result="Failed">'
        b'<test-case id="0-1001" name="Adds" fullname="Shop.CartTests.Adds" '
        b'classname="Shop.CartTests" result="Passed" duration="0,25" />'
        b'<test-case id="0-1003" name="Removes" fullname="Shop.CartTests.Removes" '
        b'classname="Shop.CartTests" result="Failed" label="Error" duration="1.5" />'
        b"</test-suite></test-suite>"
    )
    report = parse_report(doc)
    assert report.format == "nunit"
    assert [(t.identity, t.status, t.duration_ms) for t in report.tests] == [
        (("", "Shop.CartTests", "Shop.CartTests", "Adds"), "passed", pytest.approx(250.0)),
        (("", "Shop.CartTests", "Shop.CartTests", "Removes"), "error", pytest.approx(1500.0)),
    ]


@pytest.mark.parametrize(
    "doc",
    [
        b'<test-suite name="checks"><check name="a" /></test-suite>',
        b"<test-suite/>",
    ],
)
def test_a_test_suite_root_not_shaped_like_nunit_is_not_claimed(doc: bytes) -> None:
    with pytest.raises(ReportError, match="unrecognised XML report: root element <test-suite>"):
        parse_report(doc)


def test_a_junit_testsuite_root_stays_junit() -> None:
    report = parse_report(b'<testsuite name="s"><testcase classname="c" name="t" /></testsuite>')
    assert (report.format, [t.status for t in report.tests]) == ("junit", ["passed"])


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


def test_xunit_v1_single_assembly_root() -> None:
    report = parse_report((DATA / "xunit-v1.xml").read_bytes())
    assert report.format == "xunit"
    assert [(t.suite, t.classname, t.name, t.status, t.duration_ms) for t in report.tests] == [
        ("Shop.Tests.CartTests", "Shop.Tests.CartTests", "Adds_item", "passed", 21.0),
        ("Shop.Tests.CartTests", "Shop.Tests.CartTests", "Totals_match", "failed", 110.0),
        ("Shop.Tests.CartTests", "Shop.Tests.CartTests", "Applies_coupon", "skipped", 0.0),
        # v1 wrote names as they were: the backslashes are the path's own
        (
            "Shop.Tests.OrderFileTests",
            "Shop.Tests.OrderFileTests",
            r'Reads_path(path: "C:\new\orders.csv")',
            "passed",
            786.0,
        ),
        (
            "Shop.Tests.OrderFileTests",
            "Shop.Tests.OrderFileTests",
            "Writes_archive",
            "skipped",
            0.0,
        ),
        # the class's fixture failed to dispose: xUnit.net counts it as an error, not a test
        ("", "", "[fatal] Shop.Tests.OrderFileTests", "error", 0.0),
    ]
    tests = {t.name: t.attempts[0] for t in report.tests}
    assert tests["Adds_item"].stdout == "adding 2 items\n"
    failed = tests["Totals_match"]
    assert (failed.error_type, failed.message) == (
        "Xunit.Sdk.EqualException",
        "Assert.Equal() Failure\nExpected: 3\nActual:   2",
    )
    assert failed.stack.strip().startswith("at Shop.Tests.CartTests.Totals_match()")
    # v1 wraps a skip reason in <message>
    assert tests["Applies_coupon"].message == "Coupons are being redesigned"
    assert tests["Writes_archive"].message == 'Archive format still "draft"'
    fixture = tests["[fatal] Shop.Tests.OrderFileTests"]
    assert fixture.error_type == "System.IO.IOException"
    assert fixture.stack.strip().startswith("at Shop.Tests.OrderFileFixture.Dispose()")


def test_xunit_v1_assemblies_root_reads_the_same() -> None:
    single = (DATA / "xunit-v1.xml").read_bytes().split(b"?>", 1)[1]
    wrapped = parse_report(b"<assemblies>" + single + b"</assemblies>")
    alone = parse_report((DATA / "xunit-v1.xml").read_bytes())
    assert wrapped.format == "xunit"
    assert [(t.identity, t.status) for t in wrapped.tests] == [
        (t.identity, t.status) for t in alone.tests
    ]


def test_xunit_v2_written_by_another_runner() -> None:
    # No collection around the first assembly's tests, type, method or time left out, NotRun.
    report = parse_report((DATA / "xunit-v2-other-runner.xml").read_bytes())
    assert report.format == "xunit"
    rows = [(t.suite, t.classname, t.name, t.status, t.duration_ms) for t in report.tests]
    assert rows == [
        ("", "Shop.Api.Tests.HealthTests", "Returns_ok", "passed", pytest.approx(250.0)),
        # no type: the class is the display name's part before ".method"
        ("", "Shop.Api.Tests.HealthTests", "Reports_version", "passed", 0.0),
        ("", "Shop.Api.Tests.OrdersTests", "Creates_order(quantity: 1.5)", "failed", 592.0),
        # no type and no method: a custom display name stays whole
        ("", "", "Lists orders for a customer", "skipped", 0.0),
        # xUnit.net's console counts this apart as "Not Run"; testlens has only skipped
        ("", "Shop.Api.Tests.OrdersTests", "Purges_all_orders", "skipped", 0.0),
        (
            "Test collection for Shop.Web.Tests.HomePageTests",
            "Shop.Web.Tests.HomePageTests",
            "Renders",
            "passed",
            pytest.approx(31.0),
        ),
    ]
    tests = {t.name: t.attempts[0] for t in report.tests}
    assert tests["Reports_version"].stdout == "version 3.2.1\n"
    # no exception-type: the message's own prefix names the exception
    timeout = tests["Creates_order(quantity: 1.5)"]
    assert (timeout.error_type, timeout.message) == (
        "System.TimeoutException",
        "System.TimeoutException : The operation has timed out.",
    )
    assert tests["Lists orders for a customer"].message == "Waiting for the orders index"


@pytest.mark.parametrize("result", [None, "Passed", "pass"])
def test_xunit_result_it_does_not_know_is_rejected(result: str | None) -> None:
    attribute = f' result="{result}"' if result is not None else ""
    doc = f'<assemblies><assembly total="1"><test name="T.A" type="T"{attribute} /></assembly>'
    with pytest.raises(ReportError, match=f"unknown xUnit.net result {result!r}"):
        parse_report((doc + "</assemblies>").encode())


def test_a_dotnet_assembly_manifest_is_not_xunit() -> None:
    manifest = (
        b'<assembly xmlns="urn:schemas-microsoft-com:asm.v1" manifestVersion="1.0">'
        b'<assemblyIdentity version="1.0.0.0" name="Shop.app" /></assembly>'
    )
    with pytest.raises(ReportError, match="unrecognised XML report: root element <assembly>"):
        parse_report(manifest)


# --- localised numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [
        ("0.014", 14.0),
        ("1E-05", 0.01),  # .NET's round-trip format for a tiny double
        ("0,014", 14.0),
        # a separator that occurs once is the decimal one: writers print fixed decimals
        ("1,234", 1234.0),
        ("1.234", 1234.0),
        ("1.234,5", 1_234_500.0),  # de-DE
        ("1,234.5", 1_234_500.0),  # en-US
        ("1.234.567", 1_234_567_000.0),
        ("1\u00a0234,5", 1_234_500.0),  # fr-FR before .NET 5: no-break space
        ("1\u202f234,5", 1_234_500.0),  # fr-FR with ICU: narrow no-break space
        ("1'234.5", 1_234_500.0),  # de-CH
        ("1\u2019234.5", 1_234_500.0),  # de-CH with ICU
        ("", 0.0),
    ],
)
def test_dotnet_seconds_in_any_culture(seconds: str, ms: float) -> None:
    xunit = parse_report(
        f'<assemblies><assembly total="1"><test name="T.A" type="T" method="A" result="Pass" '
        f'time="{seconds}" /></assembly></assemblies>'.encode()
    )
    case = f'<test-case name="A" classname="C" result="Passed" duration="{seconds}" />'
    nunit = parse_report(nunit3(case))
    assert only_attempt(xunit).duration_ms == only_attempt(nunit).duration_ms == pytest.approx(ms)


@pytest.mark.parametrize("seconds", ["1,2,3", "1.234.5", "1,5.3", ".", "abc", "-0,5"])
def test_dotnet_seconds_that_are_not_a_number_are_rejected(seconds: str) -> None:
    with pytest.raises(ReportError, match=f"invalid duration '{seconds}'"):
        parse_report(
            nunit2(f'<test-case name="Shop.CartTests.Adds" result="Success" time="{seconds}" />')
        )


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

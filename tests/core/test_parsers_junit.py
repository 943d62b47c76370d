"""The JUnit parser on every JUnit-family report of the corpus, and on small hand-written ones.

Corpus reports are compared with what the upstream tools read from them:

* mikepenz/action-junit-report (``_derived/expected.json``): its "failure" covers our failed
  and error, its "success" our passed and flaky, and its skipped count includes
  ``status="disabled"``;
* flakiness/junit-xml (``_derived/expected.json``): suite tree, titles, attempts and statuses;
* dorny/test-reporter (``_derived/snapshot-*`` and ``inline-expectations.json``): counts per
  fixture and every testcase's result; its "failed" covers our failed and error.

Where testlens reads a file differently, the difference is pinned in a test of its own that
says why. Fixtures are found by globbing, so a new corpus file shows up as a new test.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from corpus import REPORTS
from lxml import etree

from testlens.core.model import MAX_OUTPUT_CHARS, Report, ReportError, TestCase
from testlens.core.parsers import parse_report
from testlens.core.parsers.junit import SUITE_SEPARATOR, seconds_to_ms

MIKEPENZ = REPORTS / "action-junit-report"
FLAKINESS = REPORTS / "flakiness-junit-xml"
DORNY = REPORTS / "test-reporter"
DORNY_FIXTURES = DORNY / "__tests__" / "fixtures"

FAILING = ("failed", "error")


def parse(path: Path) -> Report:
    report = parse_report(path.read_bytes())
    assert report.format == "junit"
    return report


def parse_text(xml: str) -> list[TestCase]:
    return parse_report(xml.encode(), format="junit").tests


def only(tests: list[TestCase]) -> TestCase:
    assert len(tests) == 1
    return tests[0]


def statuses(test: TestCase) -> list[str]:
    return [attempt.status for attempt in test.attempts]


# --- mikepenz/action-junit-report ------------------------------------------------------------

MIKEPENZ_CASES = json.loads((MIKEPENZ / "_derived" / "expected.json").read_text())
# Test cases of expected.json whose upstream result is not a property of the file; each is
# checked by the pinned test named here instead.
_PLACEHOLDER = "test_mikepenz_web_test_runner_placeholder"
MIKEPENZ_PINNED = {
    "should skip after reaching annotations_limit": "test_mikepenz_annotations_limit",
    "should parse junit web test results": _PLACEHOLDER,
    "there should be two errors if retries are not handled": _PLACEHOLDER,
    "should handle retries": _PLACEHOLDER,
    "merge flaky tests, and include retry count": _PLACEHOLDER,
    "parse corrupt test output": "test_mikepenz_corrupt_report",
}
# Counts the declared testsuite attributes promise but the files do not hold.
MIKEPENZ_DECLARED_PINNED = {
    "test_results/python/report_flaky.xml": "test_mikepenz_declared_counts_out_of_date",
    "test_results/multiple/test_10.xml": "test_mikepenz_declared_counts_out_of_date",
    "test_results/multiple/test_11.xml": "test_mikepenz_declared_counts_out_of_date",
    "test_results/multiple/test_12.xml": "test_mikepenz_declared_counts_out_of_date",
}
WEB_TEST_RUNNER = "test_results/junit-web-test"


def mikepenz_counts(report: Report) -> dict[str, int]:
    """Our report counted the way action-junit-report counts with check_retries.

    Without that option the action counts testcase elements instead of tests; the fixtures
    checked that way repeat no testcase, so both counts agree there.
    """
    by_status = Counter(test.status for test in report.tests)
    return {
        "total": len(report.tests),
        "skipped": by_status["skipped"],
        "failed": by_status["failed"] + by_status["error"],
        "passed": by_status["passed"] + by_status["flaky"],
        "retried": sum(len(test.attempts) - 1 for test in report.tests),
    }


def mikepenz_category(test: TestCase) -> str:
    return {"failed": "failure", "error": "failure", "skipped": "skipped"}.get(
        test.status, "success"
    )


def title_matches(title: str, test: TestCase) -> bool:
    """Titles follow the action's template, which always ends with the test's name."""
    return title == test.name or title.endswith(("." + test.name, "/" + test.name))


def check_mikepenz_titles(report: Report, entries: list, category: str) -> None:
    """Each listed title is one of our tests of that category, with the listed details.

    ``file`` and ``line`` are not compared: the action resolves them from stack traces, we
    keep the testcase's own file (see test_mikepenz_file_is_not_taken_from_stack_traces).
    """
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {"title": entry}
        wanted = {"success": "success", "skipped": "skipped"}.get(entry.get("status"), category)
        candidates = [
            test
            for test in report.tests
            if mikepenz_category(test) == wanted and title_matches(entry["title"], test)
        ]

        def agrees(test: TestCase, entry: dict = entry) -> bool:
            last = test.attempts[-1]
            if "time" in entry and last.duration_ms != pytest.approx(entry["time"] * 1000):
                return False
            if "retries" in entry and len(test.attempts) - 1 != entry["retries"]:
                return False
            # The action falls back to the test's name for a failure without a message; we
            # do not invent one (test_mikepenz_failure_without_message).
            message = entry.get("message")
            return message in (None, test.name) or last.message == message

        assert any(agrees(test) for test in candidates), entry


@pytest.mark.parametrize(
    "case",
    [c for c in MIKEPENZ_CASES["cases"] if c["upstream_test"] not in MIKEPENZ_PINNED],
    ids=lambda c: c["upstream_test"],
)
def test_mikepenz_expectations(case: dict) -> None:
    report = parse(MIKEPENZ / case["fixture"])
    ours = mikepenz_counts(report)
    expect = case["expect"]
    names = {
        "totalCount": "total",
        "ran": "total",
        "skippedCount": "skipped",
        "skipped": "skipped",
        "failedCount": "failed",
        "failed": "failed",
        "passedCount": "passed",
        "passed": "passed",
        "retriedCount": "retried",
        "retried": "retried",
    }
    for key, value in expect.items():
        if key in names:
            assert ours[names[key]] == value, key
    if "time" in expect:
        assert f"{report.summary().duration_ms:g}ms" == expect["time"]
    if "failure_annotations" in expect:
        # One annotation per <failure>/<error> element: we fold them into one attempt per
        # testcase but keep each problem's message as one line of it.
        failing = [t for t in report.tests if t.status in FAILING]
        lines = sum(len(t.attempts[-1].message.splitlines()) for t in failing)
        assert lines == expect["failure_annotations"]

    lists = {
        "failures": "failure",
        "skipped": "skipped",
        "skipped_titles": "skipped",
        "passed": "success",
    }
    for key, category in lists.items():
        if key in case:
            # Each list is complete: every test of the category appears once.
            assert len(case[key]) == sum(mikepenz_category(t) == category for t in report.tests)
            check_mikepenz_titles(report, case[key], category)
    for key in ("retried", "annotations"):
        if key in case:
            check_mikepenz_titles(report, case[key], "success")


MIKEPENZ_FIXTURES = sorted(
    path.relative_to(MIKEPENZ).as_posix() for path in (MIKEPENZ / "test_results").rglob("*.xml")
)


@pytest.mark.parametrize("fixture", MIKEPENZ_FIXTURES)
def test_mikepenz_fixture_has_an_expectation(fixture: str) -> None:
    """Every fixture is checked: by an upstream expectation, or by its own declared counts."""
    with_expectation = {c["fixture"] for c in MIKEPENZ_CASES["cases"]}
    without = set(MIKEPENZ_CASES["fixtures_without_upstream_expectations"])
    assert fixture in with_expectation | without
    if fixture in without and fixture not in MIKEPENZ_DECLARED_PINNED:
        data = (MIKEPENZ / fixture).read_bytes()
        assert counts_by_status(parse_report(data)) == declared_counts(data)


def counts_by_status(report: Report) -> dict[str, int]:
    by_status = Counter(test.status for test in report.tests)
    return {
        "tests": len(report.tests),
        "failures": by_status["failed"],
        "errors": by_status["error"],
        "skipped": by_status["skipped"],
    }


def declared_counts(data: bytes) -> dict[str, int]:
    """The totals the report declares on its outermost suites."""
    root = etree.fromstring(data)
    suites = [root] if root.tag == "testsuite" or root.get("tests") else root.findall("testsuite")
    return {
        key: sum(int(suite.get(key) or 0) for suite in suites)
        for key in ("tests", "failures", "errors", "skipped")
    }


def test_mikepenz_pins_name_real_cases() -> None:
    upstream = {c["upstream_test"] for c in MIKEPENZ_CASES["cases"]}
    assert set(MIKEPENZ_PINNED) <= upstream
    assert set(MIKEPENZ_DECLARED_PINNED) <= set(MIKEPENZ_FIXTURES)
    pinned_tests = set(MIKEPENZ_PINNED.values()) | set(MIKEPENZ_DECLARED_PINNED.values())
    assert pinned_tests <= set(globals())


def test_mikepenz_annotations_limit() -> None:
    """Upstream's totalCount 1 is the annotations_limit=1 option truncating its output."""
    case = next(
        c
        for c in MIKEPENZ_CASES["cases"]
        if c["upstream_test"] == "should skip after reaching annotations_limit"
    )
    assert case["expect"]["totalCount"] == 1
    report = parse(MIKEPENZ / case["fixture"])
    assert [t.name for t in report.tests] == ["test error handling", "test scale"]


def test_mikepenz_web_test_runner_placeholder() -> None:
    """The two web-test-runner fixtures are not well-formed XML.

    They hold ``time="<<computed>>"``, an unescaped ``<`` in an attribute value, which the
    action's lenient parser accepts and a strict XML parser rejects. They are read through
    the recovering parser, flagged as recovered, and read the same as with the placeholder
    written as a number (a duration that is not a number reads as 0): as upstream expects.
    """
    placeholder = b'time="<<computed>>"'
    fixed: dict[str, Report] = {}
    for name in ("expected.xml", "expectedRetries.xml"):
        data = (MIKEPENZ / WEB_TEST_RUNNER / name).read_bytes()
        assert placeholder in data
        recovered = parse_report(data)
        assert recovered.recovered
        assert recovered.recovered_reason == (
            "Unescaped '<' not allowed in attributes values, line 9, column 59"
        )
        fixed[name] = parse_report(data.replace(placeholder, b'time="0"'))
        assert not fixed[name].recovered
        assert recovered.tests == fixed[name].tests

    # should parse junit web test results: 6 tests, 1 skipped, 1 failure.
    assert mikepenz_counts(fixed["expected.xml"]) == {
        "total": 6,
        "skipped": 1,
        "failed": 1,
        "passed": 4,
        "retried": 0,
    }
    # should handle retries / merge flaky tests: 7 tests, "retried flaky test" passed on its
    # second run. Without check_retries upstream counts the 8 testcase elements; we always
    # merge them, so it is 7 tests with 8 attempts here.
    retried = fixed["expectedRetries.xml"]
    assert mikepenz_counts(retried) == {
        "total": 7,
        "skipped": 1,
        "failed": 1,
        "passed": 5,
        "retried": 1,
    }
    assert sum(len(t.attempts) for t in retried.tests) == 8
    flaky = next(t for t in retried.tests if t.name == "retried flaky test")
    assert statuses(flaky) == ["failed", "passed"]
    assert flaky.status == "flaky"


def test_mikepenz_corrupt_report() -> None:
    """Upstream yields an empty result when told not to fail; a broken upload is an error."""
    corrupt = MIKEPENZ / "test_results/corrupt-junit/e2e-tests/corrupt/target/sf-reports"
    with pytest.raises(ReportError, match="invalid XML"):
        parse_report((corrupt / "TEST-test.CorruptTest.xml").read_bytes())


def test_mikepenz_failure_without_message() -> None:
    """A ``<failure>`` with no message and empty text has no message for us either.

    The action shows the test's name ("test_01") in its place.
    """
    test = only(
        parse(MIKEPENZ / "test_results/marathon_tests/com.mikepenz.DummyTest3#test_01.xml").tests
    )
    assert test.status == "failed"
    assert test.attempts[0].message is None


def test_mikepenz_file_is_not_taken_from_stack_traces() -> None:
    """The action resolves test_results/python/test_sample.py from the failure text.

    A test's file is part of its identity, so it must not change with the outcome: it comes
    from the testcase and suite attributes only, which this report does not have.
    """
    report = parse(MIKEPENZ / "test_results/python/report.xml")
    assert {t.file for t in report.tests} == {""}
    fail = parse(MIKEPENZ / "test_results/xunit/report_fl_on_f.xml")
    assert [t.file for t in fail.tests] == ["main.c", "main.c", "", "main.c"]


def test_mikepenz_declared_counts_out_of_date() -> None:
    """These files were edited by hand (or copied) without updating their declared totals."""
    results = MIKEPENZ / "test_results"
    flaky = (results / "python/report_flaky.xml").read_bytes()
    # test_with_flaky_success was added after the declared tests="3" was written.
    assert declared_counts(flaky)["tests"] == 3
    assert counts_by_status(parse_report(flaky)) == {
        "tests": 4,
        "failures": 2,
        "errors": 0,
        "skipped": 0,
    }
    # container-structure-test output declares tests="8" for its 3 testcases (the upstream
    # note on container-structure/test.xml); test_11 and test_12 then add a failure and a skip
    # to that copy without touching the totals.
    for name, failures, skipped in (("test_10", 0, 0), ("test_11", 1, 0), ("test_12", 0, 1)):
        data = (results / f"multiple/{name}.xml").read_bytes()
        assert declared_counts(data) == {"tests": 8, "failures": 0, "errors": 0, "skipped": 0}
        assert counts_by_status(parse_report(data)) == {
            "tests": 3,
            "failures": failures,
            "errors": 0,
            "skipped": skipped,
        }


# --- flakiness/junit-xml ---------------------------------------------------------------------

FLAKINESS_CASES = {
    case["fixture"]: case
    for case in json.loads((FLAKINESS / "_derived" / "expected.json").read_text())["cases"]
}
FLAKINESS_STATUS = {
    "passed": "passed",
    "failed": "failed",
    "error": "failed",
    "skipped": "skipped",
    "flaky": "passed",
}


def flatten_suites(suites: list[dict], outer: str = "") -> list[tuple[str, dict]]:
    """(suite path, suite) for every suite of the converter's tree, outermost first."""
    flat = []
    for suite in suites:
        path = outer + SUITE_SEPARATOR + suite["title"] if outer else suite["title"]
        flat.append((path, suite))
        flat.extend(flatten_suites(suite.get("suites", []), path))
    return flat


@pytest.mark.parametrize(
    "fixture",
    sorted(p.relative_to(FLAKINESS).as_posix() for p in FLAKINESS.glob("tests/assets/*.xml")),
)
def test_flakiness_expectations(fixture: str) -> None:
    case = FLAKINESS_CASES[fixture]
    report = parse(FLAKINESS / fixture)
    flat = flatten_suites(case["expect"]["suites"])
    assert {t.suite for t in report.tests} <= {path for path, _ in flat}
    for path, suite in flat:
        ours = {t.name: t for t in report.tests if t.suite == path}
        if "tests_count" in suite:
            assert len(ours) == suite["tests_count"]
        if "every_test_location_file" in suite:
            assert {t.file for t in ours.values()} == {suite["every_test_location_file"]}
        if "tests" in suite:
            assert list(ours) == [expected["title"] for expected in suite["tests"]]
        for expected in suite.get("tests", []):
            test = ours[expected["title"]]
            if "attempts" in expected:
                assert len(test.attempts) == expected["attempts"]
            if "derived_statuses" in expected:
                # The Flakiness format has no separate "error" status.
                assert [FLAKINESS_STATUS[s] for s in statuses(test)] == expected["derived_statuses"]
            if "status" in expected:
                assert FLAKINESS_STATUS[test.status] == expected["status"]
            last = test.attempts[-1]
            if "error_message_contains" in expected:
                # bun writes only <failure type="AssertionError"/>; the converter shows the
                # type as the message, we keep it as the error type.
                assert expected["error_message_contains"] in (last.error_type or "")
            if "errors_json_contains" in expected:
                assert expected["errors_json_contains"] in (last.stack or "")


def test_flakiness_rerun_attempts_carry_their_own_details() -> None:
    report = parse(FLAKINESS / "tests/assets/junit-basic.xml")
    tests = {t.name: t for t in report.tests}
    flaky, rerun = tests["test 4"], tests["test 7"]
    before, final = flaky.attempts
    assert (before.status, before.message, before.error_type) == (
        "failed",
        "expect(retry).toBe(1) failed",
        "AssertionError",
    )
    assert before.stack == "at expect.toBe (example.spec.ts:8:10)"
    assert (before.stdout, before.stderr) == (" flaky test 4 out ", " flaky test 4 err ")
    assert before.duration_ms == 5000
    assert (final.status, final.stdout, final.duration_ms) == ("passed", " last test 4 out ", 1000)
    first, again = rerun.attempts
    assert (first.stdout, again.stdout) == (" first test 7 out ", " rerun test 7 out ")
    assert (first.duration_ms, again.duration_ms) == (4000, 100)
    assert statuses(tests["test 8"]) == ["error", "error"]


# --- dorny/test-reporter ---------------------------------------------------------------------

DORNY_RESULT = {"passed": "success", "failed": "failed", "error": "failed", "skipped": "skipped"}
# NUnit documents: read by the .NET parser, never claimed by this one.
NOT_JUNIT = {"dotnet-nunit.xml", "external/nunit-sample.xml"}
DORNY_JUNIT = sorted(
    p.relative_to(DORNY_FIXTURES).as_posix()
    for p in DORNY_FIXTURES.rglob("*.xml")
    if p.relative_to(DORNY_FIXTURES).as_posix() not in NOT_JUNIT
)
PULSAR_SINGLE = "TEST-org.apache.pulsar.AddMissingPatchVersionTest.xml"
# Fixtures whose repeated testcases (same suite, class and name) become one test with several
# attempts: fixture -> (our distinct tests, dorny's tests). See test_dorny_repeated_testcases.
DORNY_MERGED = {
    "external/java/pulsar-test-report.xml": (670, 808),
    f"external/java/{PULSAR_SINGLE}": (1, 2),
    "external/jest/jest-test-results.xml": (4142, 4239),
}
INLINE = {
    e["fixture"].removeprefix("__tests__/fixtures/"): e
    for e in json.loads((DORNY / "_derived" / "inline-expectations.json").read_text())
}


def dorny_snapshots() -> dict[str, list[dict]]:
    with (DORNY / "_derived" / "snapshot-summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_fixture: dict[str, list[dict]] = {}
    for row in rows:
        by_fixture.setdefault(row["fixture"].removeprefix("__tests__/fixtures/"), []).append(row)
    return by_fixture


def dorny_cases() -> dict[str, list[dict]]:
    cases: dict[str, list[dict]] = {}
    with (DORNY / "_derived" / "snapshot-cases.jsonl").open() as handle:
        for line in handle:
            case = json.loads(line)
            cases.setdefault(case["key"], []).append(case)
    return cases


SNAPSHOTS = dorny_snapshots()
CASES = dorny_cases()


def dorny_name(fixture: str, name: str) -> str:
    """A testcase name as dorny prints it, for matching tests one by one.

    Whitespace runs are collapsed: XML attribute-value normalization turns the newlines of
    multi-line jest titles into spaces (as lxml does), while dorny's parser keeps them and
    trims the ends. nette tester writes ``[title | ]dir/file.phpt[ [method=m]]``, which
    dorny shows as ``file.phpt::m``, ``title (file.phpt)`` or ``file.phpt``.
    """
    if fixture.startswith("nette-tester/"):
        title, _, path = name.rpartition(" | ")
        base, _, method = path.rpartition("/")[2].partition(" [method=")
        if method:
            name = f"{base}::{method.removesuffix(']')}"
        else:
            name = f"{title} ({base})" if title else base
    return " ".join(name.split())


def dorny_time(value: float | None) -> float:
    return 0.0 if value is None else round(value, 6)  # dorny reads a missing time as NaN


def test_dorny_fixture_list_is_complete() -> None:
    assert len(DORNY_JUNIT) >= 20
    for fixture in DORNY_JUNIT:
        assert fixture in SNAPSHOTS or fixture in INLINE, f"no expectation for {fixture}"
    assert set(DORNY_MERGED) <= set(DORNY_JUNIT)


@pytest.mark.parametrize("fixture", DORNY_JUNIT)
def test_dorny_expectations(fixture: str) -> None:
    report = parse(DORNY_FIXTURES / fixture)
    attempts = [(t, a) for t in report.tests for a in t.attempts]
    for row in SNAPSHOTS.get(fixture, []):
        # dorny counts testcase elements; each is one attempt of ours (no rerun elements here).
        results = Counter(DORNY_RESULT[a.status] for _, a in attempts)
        assert len(attempts) == int(row["tests"])
        assert results["success"] == int(row["passed"])
        assert results["failed"] == int(row["failed"])
        assert results["skipped"] == int(row["skipped"])
        distinct = DORNY_MERGED[fixture][0] if fixture in DORNY_MERGED else int(row["tests"])
        assert len(report.tests) == distinct

        ours = Counter(
            (dorny_name(fixture, t.name), DORNY_RESULT[a.status], round(a.duration_ms, 6))
            for t, a in attempts
        )
        theirs = Counter(
            (dorny_name(fixture, c["test"]), c["result"], dorny_time(c["time_ms"]))
            for c in CASES[row["snapshot_key"]]
        )
        assert ours == theirs
    if fixture in INLINE:
        check_inline(fixture, report)


def check_inline(fixture: str, report: Report) -> None:
    expect = INLINE[fixture]["expect"]
    if "tests" in expect:
        assert len(report.tests) == expect["tests"]
    if expect.get("result") == "success":
        assert not [t for t in report.tests if t.status in FAILING]
    if "failed" in expect:
        # Upstream never really asserted this (expect() without a matcher); it is what the
        # file holds: three testcases, one <failure/> with only a message attribute.
        assert [t.status for t in report.tests] == ["passed", "failed", "passed"]
        assert report.tests[1].attempts[0].message.startswith("Traceback")
    if "suite" in expect:
        test = next(t for t in report.tests if t.name == "testFailure")
        assert test.suite == expect["suite"]
        # dorny maps the failure's absolute path onto the repository's tracked files; we keep
        # the file attribute as written.
        assert test.file.endswith(expect["testFailure.error.path"])


def test_dorny_repeated_testcases() -> None:
    """TestNG data providers and jest's same-titled tests repeat a testcase element.

    dorny lists every element; to us a repeat of (file, suite, classname, name) is another
    attempt of the same test, so these fixtures have fewer distinct tests than dorny's count.
    No outcome is lost: the attempts are exactly dorny's results (test_dorny_expectations).
    """
    for fixture, (ours, theirs) in DORNY_MERGED.items():
        report = parse(DORNY_FIXTURES / fixture)
        assert len(report.tests) == ours
        assert sum(len(t.attempts) for t in report.tests) == theirs
    pulsar = parse(DORNY_FIXTURES / "external/java" / PULSAR_SINGLE)
    # skipped in one invocation, failed in another: the test failed.
    assert statuses(only(pulsar.tests)) == ["skipped", "failed"]
    assert only(pulsar.tests).status == "failed"


def test_dorny_names_are_normalized_xml_attributes() -> None:
    report = parse(DORNY_FIXTURES / "external/jest/jest-test-results.xml")
    names = {t.name for t in report.tests}
    assert "missing resolveSnapshotPath throws " in names  # dorny trims the trailing space
    assert not [name for name in names if "\n" in name]


@pytest.mark.parametrize("fixture", sorted(NOT_JUNIT))
def test_nunit_documents_are_not_junit(fixture: str) -> None:
    with pytest.raises(ReportError, match="not in the junit format"):
        parse_report((DORNY_FIXTURES / fixture).read_bytes(), format="junit")


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1.5", 1500.0),
        ("0.000087", 0.087),
        ("4.50611114501953e-05", 0.0450611114501953),
        (" 2 ", 2000.0),
        ("1,234.5", 1234500.0),  # Surefire groups thousands
        ("12,345,678.25", 12345678250.0),
        ("1,234", 1234000.0),  # read the Surefire way, not as a decimal comma
        ("0,5", 500.0),  # a decimal comma
        ("12,34", 12340.0),
        ("", 0.0),
        (None, 0.0),
        ("NaN", 0.0),
        ("inf", 0.0),
        ("-1", 0.0),
        ("<<computed>>", 0.0),
        ("1.2.3", 0.0),
    ],
)
def test_seconds_to_ms(text: str | None, ms: float) -> None:
    assert seconds_to_ms(text) == pytest.approx(ms)


def test_durations_come_from_the_time_attribute() -> None:
    tests = parse_text("""<testsuite name="s" time="99">
        <testcase name="a" time="0.25"/><testcase name="b"/><testcase name="c" time="1,234.5">
        <failure/></testcase><testcase name="d" time="nan"><skipped/></testcase></testsuite>""")
    assert [t.attempts[0].duration_ms for t in tests] == [250.0, 0.0, 1234500.0, 0.0]


# --- suites and files ------------------------------------------------------------------------


def test_nested_suite_paths_skip_unnamed_suites() -> None:
    tests = parse_text("""<testsuites name="run"><testcase name="loose"/>
        <testsuite name="outer"><testsuite><testsuite name="inner"><testcase name="deep"/>
        </testsuite></testsuite><testcase name="shallow"/></testsuite></testsuites>""")
    assert [(t.suite, t.name) for t in tests] == [
        ("", "loose"),
        ("outer > inner", "deep"),
        ("outer", "shallow"),
    ]


def test_suites_nest_to_any_depth() -> None:
    depth = 60
    xml = "".join(f'<testsuite name="s{i}">' for i in range(depth))
    xml += '<testcase name="t"/>' + "</testsuite>" * depth
    assert only(parse_text(xml)).suite == SUITE_SEPARATOR.join(f"s{i}" for i in range(depth))


def test_nested_suites_from_the_corpus() -> None:
    report = parse(MIKEPENZ / "test_results/nested/junit.xml")
    assert [(t.suite, t.name, t.status) for t in report.tests] == [
        ("All tests > tests > packet > TestA", "A", "failed"),
        ("All tests > tests > packet > TestA", "B", "passed"),
        ("All tests > tests > packet > TestB", "A", "passed"),
        ("All tests > tests > packet > TestB", "B", "failed"),
        ("All tests > tests > packet", "A", "failed"),
    ]
    phpunit = parse(DORNY_FIXTURES / "external/phpunit/phpcheckstyle-phpunit.xml")
    first = phpunit.tests[0]
    assert first.suite == "/workspace/phpcheckstyle/phpunit.xml > PHPUnitTestSuite > CommentsTest"
    assert first.file == "/workspace/phpcheckstyle/test/CommentsTest.php"


def test_file_comes_from_the_testcase_then_the_nearest_suite() -> None:
    tests = parse_text("""<testsuites>
        <testsuite name="a" file="suite_a.py">
          <testcase name="own" file="case.py"/>
          <testcase name="inherited"/>
          <testsuite name="b" filepath="suite_b.py"><testcase name="filepath"/></testsuite>
          <testsuite name="c"><testcase name="grandparent"/></testsuite>
        </testsuite>
        <testsuite name="d"><testcase name="none"/></testsuite>
        <testsuite name="e" file="C:\\src\\e.php"><testcase name="windows"/></testsuite>
      </testsuites>""")
    assert {t.name: t.file for t in tests} == {
        "own": "case.py",
        "inherited": "suite_a.py",
        "filepath": "suite_b.py",
        "grandparent": "suite_a.py",
        "none": "",
        "windows": "C:/src/e.php",
    }


def test_bun_on_windows_has_the_same_identity_as_on_linux() -> None:
    """bun names each suite after its file; backslashes become slashes in both."""
    windows = parse(FLAKINESS / "tests/assets/junit-bun-windows.xml")
    assert {(t.suite, t.file) for t in windows.tests} == {
        ("tests/unit/cli.test.ts", "tests/unit/cli.test.ts")
    }
    assert [t.status for t in windows.tests] == ["passed", "failed", "skipped"]


def test_pytest_classname_and_file() -> None:
    unittest = parse(DORNY_FIXTURES / "python-xunit-unittest.xml")
    # the suite declares file=".py"; each testcase's own file wins
    assert {t.file for t in unittest.tests} == {"tests/test_lib.py"}
    pytest_report = parse(DORNY_FIXTURES / "python-xunit-pytest.xml")
    test = next(t for t in pytest_report.tests if t.name == "test_parameterized[param1]")
    assert (test.suite, test.classname, test.file) == ("pytest", "tests.test_lib", "")


# --- outcomes --------------------------------------------------------------------------------


def test_surefire_flaky_attempts_come_before_the_passing_run() -> None:
    test = only(
        parse_text("""<testsuite name="s"><testcase name="t" classname="C" time="2">
        <flakyFailure message="first" type="AssertionError" time="0.5">
          <stackTrace>AssertionError: first
            at C.t(C.java:1)</stackTrace>
          <system-out>out 1</system-out><system-err>err 1</system-err>
        </flakyFailure>
        <flakyError message="second" type="IOException"><stackTrace>IOException</stackTrace>
        </flakyError>
        <system-out>final out</system-out>
      </testcase></testsuite>""")
    )
    assert statuses(test) == ["failed", "error", "passed"]
    first, second, final = test.attempts
    assert (first.message, first.error_type, first.duration_ms) == ("first", "AssertionError", 500)
    assert first.stack.startswith("AssertionError: first") and first.stack.endswith("(C.java:1)")
    assert (first.stdout, first.stderr) == ("out 1", "err 1")
    assert (second.message, second.error_type, second.stdout) == ("second", "IOException", None)
    assert (final.duration_ms, final.stdout, final.message) == (2000, "final out", None)
    assert test.status == "flaky"


def test_surefire_reruns_come_after_the_failed_run() -> None:
    test = only(
        parse_text("""<testsuite name="s"><testcase name="t" time="1">
        <failure message="main" type="E">trace 0</failure>
        <rerunFailure type="E"><stackTrace>rerun one
          more lines</stackTrace></rerunFailure>
        <rerunError message="crash" type="Crash">trace 2</rerunError>
      </testcase></testsuite>""")
    )
    assert statuses(test) == ["failed", "failed", "error"]
    assert [a.message for a in test.attempts] == ["main", "rerun one", "crash"]
    assert [a.stack for a in test.attempts] == [
        "trace 0",
        "rerun one\n          more lines",
        "trace 2",
    ]
    assert test.status == "error"


def test_surefire_flaky_report_from_the_corpus() -> None:
    test = only(parse(MIKEPENZ / "test_results/maven_surefire_flaky/surefire-report.xml").tests)
    assert statuses(test) == ["failed", "passed"]
    flaky = test.attempts[0]
    assert flaky.message == "Expected: <false>\n     but: was <true>"
    assert flaky.error_type == "java.lang.AssertionError"
    assert flaky.stack.startswith("java.lang.AssertionError:")
    assert flaky.stderr == "Some error output here"
    assert test.attempts[1].duration_ms == pytest.approx(683)


def test_multiple_failures_are_one_failed_attempt() -> None:
    report = parse(MIKEPENZ / "test_results/multiple_failures/test_multiple_failures.xml")
    test = report.tests[0]
    assert test.name == "testWithMultipleFailures"
    attempt = only_attempt(test)
    assert attempt.status == "failed"
    assert attempt.message == (
        "First assertion failed\nSecond assertion failed\nThird assertion failed"
    )
    assert attempt.error_type == "AssertionError"  # the first problem's type
    assert attempt.stack.count("stack trace details") == 3


def test_the_first_problem_decides_failure_or_error() -> None:
    report = parse(MIKEPENZ / "test_results/multiple_failures/test_multiple_errors.xml")
    tests = {t.name: t for t in report.tests}
    assert only_attempt(tests["testWithMultipleErrors"]).status == "error"
    mixed = only_attempt(tests["testWithFailureAndError"])
    assert (mixed.status, mixed.message) == ("failed", "Assertion failed\nUnhandled error")
    flipped = only(
        parse_text("""<testsuite name="s"><testcase name="t">
        <error message="boom"/><failure message="then this"/></testcase></testsuite>""")
    )
    assert only_attempt(flipped).status == "error"


def only_attempt(test: TestCase):
    assert len(test.attempts) == 1
    return test.attempts[0]


def test_skips_and_never_run_markers() -> None:
    tests = parse_text("""<testsuite name="s">
        <testcase name="skipped"><skipped message=" not on CI "/></testcase>
        <testcase name="reason in text"><skipped>requires GPU
          more</skipped></testcase>
        <testcase name="ctest disabled" status="disabled"/>
        <testcase name="gtest notrun" status="notrun"/>
        <testcase name="gtest ran" status="run"/>
        <testcase name="disabled with failure" status="disabled"><failure>old</failure></testcase>
        <testcase name="failure beats skipped"><skipped/><failure message="x"/></testcase>
      </testsuite>""")
    got = {t.name: (t.status, t.attempts[0].message) for t in tests}
    assert got == {
        "skipped": ("skipped", "not on CI"),
        "reason in text": ("skipped", "requires GPU"),
        "ctest disabled": ("skipped", None),
        "gtest notrun": ("skipped", None),
        "gtest ran": ("passed", None),
        "disabled with failure": ("skipped", "old"),
        "failure beats skipped": ("failed", "x"),
    }


def test_disabled_tests_from_the_corpus() -> None:
    """status="disabled" counts as skipped even with a <failure> child, as upstream has it."""
    test = only(parse(MIKEPENZ / "test_results/issues/testFailedDisabled.xml").tests)
    assert test.status == "skipped"
    assert test.attempts[0].message == "Assert: Boolean true check failed."


def test_message_type_stack_and_output() -> None:
    long_output = "x" * (MAX_OUTPUT_CHARS + 10)
    tests = parse_text(f"""<testsuite name="s">
        <testcase name="attr" classname="pkg.Class">
          <failure message="expected 1" type="AssertionError">Traceback
  line 2</failure>
          <system-out>{long_output}</system-out><system-err>   </system-err>
        </testcase>
        <testcase name="text only"><error>

  Error: boom
    at x</error></testcase>
        <system-out>suite output belongs to no test</system-out>
      </testsuite>""")
    attr, text_only = (only_attempt(t) for t in tests)
    assert (attr.message, attr.error_type, attr.stack) == (
        "expected 1",
        "AssertionError",
        "Traceback\n  line 2",
    )
    assert attr.stdout.startswith("[truncated]\n") and attr.stdout.endswith("x" * 100)
    assert attr.stderr is None
    assert tests[0].classname == "pkg.Class"
    assert (text_only.status, text_only.message, text_only.error_type) == (
        "error",
        "Error: boom",
        None,
    )
    assert text_only.stdout is None
    assert tests[1].classname == ""


def test_one_testcase_per_attempt_becomes_retries() -> None:
    """pytest-rerunfailures and go-junit-report write each run as its own testcase."""
    report = parse(MIKEPENZ / "test_results/flaky_retries/flaky_with_classname_file.xml")
    tests = {(t.classname, t.name): t for t in report.tests}
    assert len(tests) == 3
    foo = tests[("test_foo.TestFoo", "test_foo")]
    assert statuses(foo) == ["failed", "error", "passed"]
    assert foo.file == "/home/runner/work/foo/bar/test_foo.py"
    assert tests[("test_bar.TestBar", "test_foo")].status == "passed"


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "xml",
    ["<testsuites/>", '<testsuite name="x"/>', "<testsuites><testsuite/></testsuites>"],
)
def test_junit_roots_are_detected(xml: str) -> None:
    report = parse_report(xml.encode())
    assert (report.format, report.tests) == ("junit", [])


@pytest.mark.parametrize("xml", ["<test-run/>", "<assemblies/>", "<TestRun/>", "<testcase/>"])
def test_other_roots_are_not_junit(xml: str) -> None:
    with pytest.raises(ReportError, match="not in the junit format"):
        parse_report(xml.encode(), format="junit")

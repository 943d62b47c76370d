"""Parsers for structured (JSON / JSON-lines) reports: pytest-json, CTRF, Flakiness, RSpec,
go test -json and dart test --reporter json.

Real reports come from the shared corpus (with another tool's reading of each) and from
``tests/data/pytest_json`` (generated, see its README). Small hand-written documents cover
shapes the corpus lacks; each says what real output it imitates. Where testlens reads a file
differently from the upstream tool, the difference is pinned in its own test with the reason.
"""

from __future__ import annotations

import base64
import csv
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from corpus import CORPUS, REPORTS

from testlens.core.model import Report, ReportError, TestCase
from testlens.core.parsers import formats, parse_report

DATA = Path(__file__).parents[1] / "data"
PYTEST_JSON = DATA / "pytest_json" / "report.json"
TEST_REPORTER = REPORTS / "test-reporter"
FIXTURES = TEST_REPORTER / "__tests__" / "fixtures"
CTRF = REPORTS / "ctrf"
FLAKINESS_EXAMPLE = CORPUS / "flakiness-report-example.json"
OURS = ("pytest-json", "ctrf", "flakiness", "rspec", "gotest", "dart")


def parse_file(path: Path, format: str | None = None) -> Report:
    return parse_report(path.read_bytes(), format)


def parse_json(document: Any, format: str | None = None) -> Report:
    return parse_report(json.dumps(document).encode(), format)


def parse_events(events: list[dict[str, Any]], format: str | None = None) -> Report:
    return parse_report("\n".join(json.dumps(event) for event in events).encode(), format)


def by_name(report: Report) -> dict[str, TestCase]:
    tests = {test.name: test for test in report.tests}
    assert len(tests) == len(report.tests), "test names are not unique in this report"
    return tests


def statuses(test: TestCase) -> list[str]:
    return [attempt.status for attempt in test.attempts]


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (PYTEST_JSON, "pytest-json"),
        (CTRF / "examples" / "minimal.json", "ctrf"),
        (FLAKINESS_EXAMPLE, "flakiness"),
        (FIXTURES / "rspec-json.json", "rspec"),
        (FIXTURES / "empty" / "rspec-json.json", "rspec"),
        (FIXTURES / "golang-json.json", "gotest"),
        (FIXTURES / "dart-json.json", "dart"),
        (FIXTURES / "empty" / "dart-json.json", "dart"),
        (FIXTURES / "external" / "flutter" / "provider-test-results.json", "dart"),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_report_is_detected(path: Path, expected: str) -> None:
    assert parse_file(path).format == expected


def _our_formats() -> list[Any]:
    return [fmt for fmt in formats() if fmt.name in OURS]


def test_each_report_matches_only_its_own_format() -> None:
    documents = {
        "pytest-json": json.loads(PYTEST_JSON.read_text()),
        "ctrf": json.loads((CTRF / "examples" / "comprehensive.json").read_text()),
        "flakiness": json.loads(FLAKINESS_EXAMPLE.read_text()),
        "rspec": json.loads((FIXTURES / "rspec-json.json").read_text()),
        "gotest": [json.loads(line) for line in (FIXTURES / "golang-json.json").open()],
        "dart": [json.loads(line) for line in (FIXTURES / "dart-json.json").open()],
    }
    for fmt in _our_formats():
        claimed = {
            name
            for name, doc in documents.items()
            if fmt.kind == ("json" if isinstance(doc, dict) else "ndjson") and fmt.matches(doc)
        }
        assert claimed == {fmt.name}


@pytest.mark.parametrize(
    "document",
    [
        json.loads((FIXTURES / "mocha-json.json").read_text()),  # real mocha reporter output
        {"numTotalTests": 1, "testResults": [], "success": True},  # Jest --json keys
        {"config": {}, "suites": [], "errors": [], "stats": {}},  # Playwright JSON reporter keys
    ],
    ids=["mocha", "jest", "playwright"],
)
def test_other_json_reports_are_not_claimed(document: dict[str, Any]) -> None:
    claimed = [fmt.name for fmt in _our_formats() if fmt.kind == "json" and fmt.matches(document)]
    assert claimed == []


# --- dorny/test-reporter fixtures ---------------------------------------------------------

DORNY_FIXTURES = {
    "golang-json.json": "gotest",
    "dart-json.json": "dart",
    "external/flutter/provider-test-results.json": "dart",
    "rspec-json.json": "rspec",
}
DORNY_RESULT = {"passed": "success", "failed": "failed", "error": "failed", "skipped": "skipped"}
# The provider report was written in a CI checkout at this path; test-reporter makes suite
# paths relative with the repository's file list (files.txt), which a report alone lacks.
PROVIDER_CHECKOUT = "/__w/provider/provider/"
# Tests that test-reporter lists twice and testlens folds into one test (see the pinned test).
FOLDED_DUPLICATES = {"external/flutter/provider-test-results.json": 2}


def _dorny_cases(fixture: str) -> list[dict[str, Any]]:
    lines = (TEST_REPORTER / "_derived" / "snapshot-cases.jsonl").read_text().splitlines()
    cases = [json.loads(line) for line in lines]
    return [case for case in cases if case["fixture"] == f"fixtures/{fixture}"]


def _dorny_summary(fixture: str) -> dict[str, str]:
    with (TEST_REPORTER / "_derived" / "snapshot-summary.csv").open() as handle:
        rows = [
            row
            for row in csv.DictReader(handle)
            if row["fixture"] == f"__tests__/fixtures/{fixture}"
        ]
    assert len(rows) == 1
    return rows[0]


def _dorny_row(format: str, case: dict[str, Any]) -> tuple[Any, ...]:
    """test-reporter's reading of one test execution, as (place, name, result, time)."""
    group = case["group"] or ""
    if format == "gotest":  # subtests are listed under their parent test as group
        return (
            "",
            f"{group}/{case['test']}" if group else case["test"],
            case["result"],
            round(case["time_ms"], 3),
        )
    if format == "dart":
        return (case["suite"], f"{group} {case['test']}".strip(), case["result"], case["time_ms"])
    # rspec: test-reporter's time is not comparable (pinned below), its name is the full one.
    return (case["suite"].removeprefix("./"), case["test"], case["result"], None)


def _our_rows(format: str, report: Report) -> list[tuple[Any, ...]]:
    rows = []
    for test in report.tests:
        for attempt in test.attempts:
            result = DORNY_RESULT[attempt.status]
            if format == "gotest":
                rows.append(("", test.name, result, round(attempt.duration_ms, 3)))
            elif format == "dart":
                full = f"{test.suite.replace(' > ', ' ')} {test.name}".strip()
                rows.append(
                    (test.file.removeprefix(PROVIDER_CHECKOUT), full, result, attempt.duration_ms)
                )
            else:
                rows.append((test.file, f"{test.suite} {test.name}".strip(), result, None))
    return rows


@pytest.mark.parametrize(("fixture", "format"), DORNY_FIXTURES.items())
def test_every_execution_matches_test_reporter(fixture: str, format: str) -> None:
    report = parse_file(FIXTURES / fixture)
    assert report.format == format
    expected = Counter(_dorny_row(format, case) for case in _dorny_cases(fixture))
    assert Counter(_our_rows(format, report)) == expected


@pytest.mark.parametrize(("fixture", "format"), DORNY_FIXTURES.items())
def test_counts_match_test_reporter(fixture: str, format: str) -> None:
    summary = parse_file(FIXTURES / fixture).summary()
    dorny = _dorny_summary(fixture)
    folded = FOLDED_DUPLICATES.get(fixture, 0)
    assert summary.flaky == 0
    assert summary.tests == int(dorny["tests"]) - folded
    assert summary.passed == int(dorny["passed"]) - folded  # every folded pair passed twice
    assert summary.failed + summary.errors == int(dorny["failed"])
    assert summary.skipped == int(dorny["skipped"])


def test_same_named_dart_tests_in_one_group_are_folded() -> None:
    """Pinned difference: 269 tests for test-reporter, 267 for testlens.

    provider defines two pairs of ``testWidgets`` through a helper, so each pair has the same
    file, group path and name (only ``root_line`` differs). A test's identity is (file, suite,
    classname, name), as for Flakiness, which also merges same-named tests, so each pair is
    one test with two attempts. Both attempts passed, so no status changes. Two other pairs
    that test-reporter also lists twice by name are told apart here: one of each pair is in a
    ``group`` of its own.
    """
    report = parse_file(FIXTURES / "external" / "flutter" / "provider-test-results.json")
    folded = {
        (t.file.removeprefix(PROVIDER_CHECKOUT), t.name): statuses(t)
        for t in report.tests
        if len(t.attempts) > 1
    }
    assert folded == {
        ("test/reassemble_test.dart", "unevaluated create"): ["passed", "passed"],
        (
            "test/inherited_provider_test.dart",
            "properly update debug flags if a create triggers another deferred create",
        ): ["passed", "passed"],
    }
    apart = sorted(
        (t.suite, t.name) for t in report.tests if t.name.endswith("crashes if builder is null")
    )
    assert apart == [
        ("", "FutureProvider() crashes if builder is null"),
        ("", "StreamProvider() crashes if builder is null"),
        ("FutureProvider()", "crashes if builder is null"),
        ("StreamProvider()", "crashes if builder is null"),
    ]


def test_dart_keeps_the_suite_path_the_runner_wrote() -> None:
    """Pinned difference: test-reporter shows ``test/x_test.dart`` where the report says
    ``/__w/provider/provider/test/x_test.dart``; it strips the checkout directory using the
    repository's file list, which is not part of a report."""
    report = parse_file(FIXTURES / "external" / "flutter" / "provider-test-results.json")
    assert {t.file.partition("test/")[0] for t in report.tests} == {PROVIDER_CHECKOUT}


def test_rspec_run_time_is_seconds() -> None:
    """Pinned difference: test-reporter shows ``run_time`` (seconds) as milliseconds, e.g.
    0.079159625 ms for an example RSpec timed at 0.079 s; testlens converts to 79.16 ms."""
    report = parse_file(FIXTURES / "rspec-json.json")
    dorny = {case["test"]: case["time_ms"] for case in _dorny_cases("rspec-json.json")}
    for test in report.tests:
        full = f"{test.suite} {test.name}"
        assert test.duration_ms == pytest.approx(dorny[full] * 1000)


def test_empty_reports_have_no_tests() -> None:
    expectations = json.loads((TEST_REPORTER / "_derived" / "inline-expectations.json").read_text())
    empty = [e for e in expectations if e["parser"] in ("rspec-json", "dart-json")]
    assert len(empty) == 2
    for expectation in empty:
        report = parse_file(TEST_REPORTER / expectation["fixture"])
        assert expectation["expect"] == {"tests": 0, "result": "success"}
        assert report.tests == []


# --- go test -json -------------------------------------------------------------------------


def test_go_messages_match_test_reporter() -> None:
    report = by_name(parse_file(FIXTURES / "golang-json.json"))
    for case in _dorny_cases("golang-json.json"):
        name = f"{case['group']}/{case['test']}" if case["group"] else case["test"]
        # test-reporter keeps the trailing newline and gives "" where nothing was printed.
        assert report[name].attempts[0].message == ((case["error_message"] or "").strip() or None)


def test_go_output_and_naming() -> None:
    report = by_name(parse_file(FIXTURES / "golang-json.json"))
    failing = report["TestFailing"]
    assert (failing.classname, failing.suite, failing.file) == (
        "_/home/james_t/git/test-reporter/reports/go",
        "",
        "",
    )
    assert failing.attempts[0].stdout == (
        "=== RUN   TestFailing\n"
        "    calculator_test.go:19: expected 1+1 = 3, got 2\n"
        "--- FAIL: TestFailing (0.89s)\n"
    )
    assert report["TestCases/2_+_3_=_4"].attempts[0].duration_ms == pytest.approx(90)
    assert not any(a.censored for t in report.values() for a in t.attempts)


GO_PKG = "example.com/shop/cart"
GO_START = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)


def _go(action: str, test: str | None = None, seconds: float = 0.0, **extra: Any) -> dict:
    """One test2json event, shaped like ``go test -json`` output."""
    time = GO_START + timedelta(seconds=seconds)
    event: dict[str, Any] = {"Time": time.isoformat(), "Action": action, "Package": GO_PKG}
    if test is not None:
        event["Test"] = test
    event.update(extra)
    return event


def test_go_repeated_runs_are_attempts_of_one_test() -> None:
    """``go test -count=2`` runs TestCheckout twice; it failed once and passed once."""
    events = [
        _go("start"),
        _go("run", "TestCheckout"),
        _go("output", "TestCheckout", Output="=== RUN   TestCheckout\n"),
        _go("output", "TestCheckout", Output="    cart_test.go:12: stock service timed out\n"),
        _go("output", "TestCheckout", Output="--- FAIL: TestCheckout (0.30s)\n"),
        _go("fail", "TestCheckout", 0.3, Elapsed=0.3),
        _go("run", "TestCheckout", 0.3),
        _go("output", "TestCheckout", 0.3, Output="=== RUN   TestCheckout\n"),
        _go("output", "TestCheckout", 0.5, Output="--- PASS: TestCheckout (0.20s)\n"),
        _go("pass", "TestCheckout", 0.5, Elapsed=0.2),
        _go("output", None, 0.5, Output="FAIL\n"),
        _go("output", None, 0.5, Output=f"FAIL\t{GO_PKG}\t0.512s\n"),
        _go("fail", None, 0.5, Elapsed=0.512),
    ]
    report = parse_events(events)
    assert report.format == "gotest"
    [test] = report.tests
    assert (test.name, test.classname, test.status) == ("TestCheckout", GO_PKG, "flaky")
    assert statuses(test) == ["failed", "passed"]
    assert [a.duration_ms for a in test.attempts] == pytest.approx([300, 200])
    assert test.attempts[0].message == "cart_test.go:12: stock service timed out"
    assert test.attempts[1].message is None


def test_go_test_that_never_finished_is_a_censored_error() -> None:
    """A ``-timeout`` panic: TestSlow started, the binary died, the package failed."""
    events = [
        _go("start"),
        _go("run", "TestFast"),
        _go("pass", "TestFast", 0.1, Elapsed=0.1),
        _go("run", "TestSlow", 0.1),
        _go("output", "TestSlow", 0.1, Output="=== RUN   TestSlow\n"),
        _go("output", None, 60.0, Output="panic: test timed out after 1m0s\n"),
        _go("output", None, 60.0, Output="\trunning tests:\n\t\tTestSlow (59s)\n"),
        _go("output", None, 60.0, Output=f"FAIL\t{GO_PKG}\t60.020s\n"),
        _go("fail", None, 60.0, Elapsed=60.02),
    ]
    report = by_name(parse_events(events))
    assert set(report) == {"TestFast", "TestSlow"}  # the failure is explained: no package test
    [attempt] = report["TestSlow"].attempts
    assert (attempt.status, attempt.censored) == ("error", True)
    assert attempt.message == "panic: test timed out after 1m0s\nrunning tests:\nTestSlow (59s)"
    assert attempt.duration_ms == pytest.approx(59_900)
    assert statuses(report["TestFast"]) == ["passed"]


def test_go_stream_cut_off_mid_test_ends_it_as_error() -> None:
    events = [_go("start"), _go("run", "TestA"), _go("output", "TestA", 2.0, Output="working\n")]
    [test] = parse_events(events).tests
    [attempt] = test.attempts
    assert (attempt.status, attempt.censored, attempt.duration_ms) == ("error", True, 2000)
    assert attempt.message == "working"


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (  # go < 1.24: compiler errors go to stderr, only the FAIL line is an event
            [
                _go("start"),
                _go("output", Output=f"FAIL\t{GO_PKG} [build failed]\n"),
                _go("fail", Elapsed=0),
            ],
            f"FAIL\t{GO_PKG} [build failed]",
        ),
        (  # go >= 1.24: build-output events carry the compiler errors
            [
                {
                    "ImportPath": f"{GO_PKG} [{GO_PKG}.test]",
                    "Action": "build-output",
                    "Output": f"# {GO_PKG} [{GO_PKG}.test]\n",
                },
                {
                    "ImportPath": f"{GO_PKG} [{GO_PKG}.test]",
                    "Action": "build-output",
                    "Output": "./cart_test.go:9:2: undefined: NewCart\n",
                },
                {"ImportPath": f"{GO_PKG} [{GO_PKG}.test]", "Action": "build-fail"},
                _go("start"),
                _go("output", Output=f"FAIL\t{GO_PKG} [build failed]\n"),
                _go("fail", Elapsed=0, FailedBuild=f"{GO_PKG} [{GO_PKG}.test]"),
            ],
            f"# {GO_PKG} [{GO_PKG}.test]\n./cart_test.go:9:2: undefined: NewCart\n"
            f"FAIL\t{GO_PKG} [build failed]",
        ),
        (  # every test passed but TestMain exited non-zero
            [
                _go("start"),
                _go("run", "TestA"),
                _go("pass", "TestA", Elapsed=0.01),
                _go("output", Output="PASS\n"),
                _go("output", Output="leaked goroutines: 3\n"),
                _go("output", Output=f"FAIL\t{GO_PKG}\t0.030s\n"),
                _go("fail", Elapsed=0.03),
            ],
            "leaked goroutines: 3",
        ),
    ],
    ids=["build-failed", "build-failed-go1.24", "testmain-failed"],
)
def test_go_package_failure_without_failing_test_is_an_errored_test(
    events: list[dict[str, Any]], message: str
) -> None:
    report = parse_events(events, "gotest")
    package = next(t for t in report.tests if t.name == GO_PKG)
    assert (package.classname, statuses(package)) == (GO_PKG, ["error"])
    assert package.attempts[0].message == message
    assert report.summary().errors == 1


def test_go_passing_package_adds_no_test() -> None:
    events = [
        _go("start"),
        _go("run", "TestA"),
        _go("pass", "TestA", Elapsed=0.01),
        _go("output", Output=f"ok  \t{GO_PKG}\t0.012s\n"),
        _go("pass", Elapsed=0.012),
    ]
    assert [t.name for t in parse_events(events).tests] == ["TestA"]


# --- dart test --reporter json ------------------------------------------------------------


def test_dart_fixture_details() -> None:
    report = by_name(parse_file(FIXTURES / "dart-json.json"))
    failing = report["Failing test"]
    assert (failing.file, failing.suite) == ("test/main_test.dart", "Test 1 > Test 1.1")
    attempt = failing.attempts[0]
    assert (attempt.status, attempt.environment) == ("failed", "vm")
    assert attempt.message == "Expected: <2>\n  Actual: <1>\n"
    assert attempt.stack == (
        "package:test_api          expect\ntest\\main_test.dart 13:9  main.<fn>.<fn>.<fn>\n"
    )
    assert statuses(report["Exception in test"]) == ["error"]
    timeout = report["Timeout test"].attempts[0]
    assert (timeout.status, timeout.censored, timeout.duration_ms) == ("error", True, 37)
    skipped = report["Skipped test"].attempts[0]
    assert (skipped.status, skipped.message) == ("skipped", "skipped test")
    assert not report["Exception in target unit"].attempts[0].censored


def test_dart_messages_match_test_reporter() -> None:
    report = by_name(parse_file(FIXTURES / "dart-json.json"))
    for case in _dorny_cases("dart-json.json"):
        if case["result"] == "failed":
            assert report[case["test"]].attempts[0].message == case["error_message"]


def test_dart_flutter_failure_keeps_the_printed_exception() -> None:
    """test-reporter's message is cut out of the printed Flutter exception banner; testlens
    keeps the runner's own error text as message and the banner in stdout."""
    report = parse_file(FIXTURES / "external" / "flutter" / "provider-test-results.json")
    [failed] = [t for t in report.tests if t.status != "passed"]
    attempt = failed.attempts[0]
    assert (failed.suite, failed.name, attempt.status) == (
        "valueListenableProvider",
        "pass updateShouldNotify",
        "error",
    )
    assert attempt.message == (
        "Test failed. See exception logs above.\nThe test description was: pass updateShouldNotify"
    )
    assert "Unexpected number of calls" in attempt.stdout
    assert attempt.stack is None
    assert not any(t.name.startswith("loading ") for t in report.tests)


def _dart_start(test_id: int, name: str, time: int, group_ids: list[int] | None = None) -> dict:
    return {
        "test": {
            "id": test_id,
            "name": name,
            "suiteID": 0,
            "groupIDs": group_ids or [],
            "metadata": {"skip": False, "skipReason": None},
        },
        "type": "testStart",
        "time": time,
    }


DART_HEAD = [
    {"protocolVersion": "0.1.1", "runnerVersion": "1.25.3", "pid": 1, "type": "start", "time": 0},
    {
        "suite": {"id": 0, "platform": "chrome", "path": "test/cart_test.dart"},
        "type": "suite",
        "time": 0,
    },
    {
        "group": {"id": 1, "suiteID": 0, "parentID": None, "name": "", "testCount": 3},
        "type": "group",
        "time": 1,
    },
]


def test_dart_error_after_completion_fails_the_test() -> None:
    """dart reports an error raised after a test completed as a late ``error`` event."""
    events = [
        *DART_HEAD,
        _dart_start(2, "adds items", 10, [1]),
        {
            "testID": 2,
            "result": "success",
            "skipped": False,
            "hidden": False,
            "type": "testDone",
            "time": 25,
        },
        {
            "testID": 2,
            "error": "This test failed after it had already completed.",
            "stackTrace": "",
            "isFailure": False,
            "type": "error",
            "time": 30,
        },
    ]
    [test] = parse_events(events).tests
    [attempt] = test.attempts
    assert (attempt.status, attempt.environment, attempt.duration_ms) == ("error", "chrome", 15)
    assert attempt.message == "This test failed after it had already completed."


def test_dart_failed_loading_test_is_kept_and_unfinished_test_is_censored() -> None:
    """A file that does not compile fails its hidden ``loading`` test; a test still running
    when the stream ends (the job was killed) never gets ``testDone``."""
    events = [
        *DART_HEAD,
        _dart_start(2, "loading test/cart_test.dart", 0),
        {
            "testID": 2,
            "error": 'Failed to load "test/cart_test.dart": Compilation failed',
            "stackTrace": "",
            "isFailure": False,
            "type": "error",
            "time": 40,
        },
        {
            "testID": 2,
            "result": "error",
            "skipped": False,
            "hidden": True,
            "type": "testDone",
            "time": 41,
        },
        _dart_start(3, "checks out", 50, [1]),
        {"testID": 3, "messageType": "print", "message": "paying", "type": "print", "time": 60},
        {"count": 1, "time": 90, "type": "allSuites"},
    ]
    report = by_name(parse_events(events))
    loading = report["loading test/cart_test.dart"].attempts[0]
    assert (loading.status, loading.censored) == ("error", False)
    assert loading.message.startswith("Failed to load")
    running = report["checks out"].attempts[0]
    assert (running.status, running.censored, running.duration_ms) == ("error", True, 40)
    assert running.stdout == "paying"


# --- RSpec ---------------------------------------------------------------------------------


def test_rspec_fixture_details() -> None:
    report = by_name(parse_file(FIXTURES / "rspec-json.json"))
    failed = report["fails in assertion"]
    assert failed.file == "spec/config/check_env_vars_spec.rb"
    assert failed.suite == (
        "CheckEnvVars#call when all env vars are defined behaves like success load"
    )
    attempt = failed.attempts[0]
    assert attempt.error_type == "RSpec::Mocks::MockExpectationError"
    assert attempt.message.startswith("(#ActiveSupport::BroadcastLogger:0x00007f1007fedf58)")
    assert attempt.stack.splitlines()[1] == "./config/check_env_vars.rb:11:in `call'"
    skipped = report["skips the test"].attempts[0]
    assert (skipped.status, skipped.message) == ("skipped", "Temporarily skipped with xit")
    assert report["logs success message"].attempts[0].duration_ms == pytest.approx(79.159625)


def test_rspec_error_outside_examples_is_an_errored_test() -> None:
    """Shaped like ``rspec --format json`` when a spec file fails to load."""
    load_error = (
        "\nAn error occurred while loading ./spec/cart_spec.rb.\n"
        'Failure/Error: require "cart"\n\n'
        "LoadError:\n  cannot load such file -- cart\n"
    )
    document = {
        "version": "3.13.0",
        "messages": [load_error, "No examples found."],
        "examples": [],
        "summary": {
            "duration": 0.0001,
            "example_count": 0,
            "failure_count": 0,
            "pending_count": 0,
            "errors_outside_of_examples_count": 1,
        },
        "summary_line": "0 examples, 0 failures, 1 error occurred outside of examples",
    }
    [test] = parse_json(document).tests
    assert (test.name, statuses(test)) == ("(errors outside of examples)", ["error"])
    assert "cannot load such file -- cart" in test.attempts[0].message


# --- pytest-json-report --------------------------------------------------------------------


def _pytest_raw() -> dict[str, dict[str, Any]]:
    return {entry["nodeid"]: entry for entry in json.loads(PYTEST_JSON.read_text())["tests"]}


def test_pytest_json_generated_report() -> None:
    report = parse_file(PYTEST_JSON)
    got = {(t.file, t.classname, t.name): statuses(t) for t in report.tests}
    assert got == {
        ("tests/test_sample.py", "", "test_passes"): ["passed"],
        ("tests/test_sample.py", "", "test_fails"): ["failed"],
        ("tests/test_sample.py", "", "test_setup_error"): ["error"],
        ("tests/test_sample.py", "", "test_teardown_error"): ["error"],
        ("tests/test_sample.py", "", "test_skipped"): ["skipped"],
        ("tests/test_sample.py", "", "test_xfail"): ["passed"],
        ("tests/test_sample.py", "", "test_xpass"): ["passed"],
        ("tests/test_sample.py", "", "test_param[1-2]"): ["passed"],
        ("tests/test_sample.py", "", "test_param[3-4]"): ["passed"],
        ("tests/test_sample.py", "TestNetwork", "test_flaky"): ["failed", "passed"],
        ("tests/test_sample.py", "TestNetwork", "test_always_fails"): ["failed"],
        ("tests/test_broken.py", "", "tests/test_broken.py"): ["error"],
    }
    tests = by_name(report)
    assert tests["test_flaky"].status == "flaky"
    assert all(t.suite == "" for t in report.tests)


def test_pytest_json_duration_is_the_sum_of_phases() -> None:
    raw = _pytest_raw()
    for test in parse_file(PYTEST_JSON).tests:
        entry = raw.get("::".join(part for part in (test.file, test.classname, test.name) if part))
        if entry is None:  # the collection error
            assert test.duration_ms == 0
            continue
        seconds = sum(
            entry[when]["duration"] for when in ("setup", "call", "teardown") if when in entry
        )
        assert test.attempts[-1].duration_ms == pytest.approx(seconds * 1000)


def test_pytest_json_failure_details() -> None:
    tests = by_name(parse_file(PYTEST_JSON))
    failed = tests["test_fails"].attempts[0]
    assert failed.message == "AssertionError: arithmetic is broken\nassert (1 + 1) == 3"
    assert failed.error_type == "AssertionError"
    assert failed.stack.endswith("tests/test_sample.py:28: AssertionError")
    setup = tests["test_setup_error"].attempts[0]
    assert (setup.message, setup.error_type) == (
        "RuntimeError: database unavailable",
        "RuntimeError",
    )
    teardown = tests["test_teardown_error"].attempts[0]
    assert teardown.message == "RuntimeError: cleanup failed"
    skipped = tests["test_skipped"].attempts[0]
    assert (skipped.message, skipped.stack) == ("Skipped: not on this platform", None)
    passed = tests["test_passes"].attempts[0]
    assert (passed.stdout, passed.stderr) == ("hello from stdout\n", "warning on stderr\n")
    broken = tests["tests/test_broken.py"].attempts[0]
    assert broken.message == (
        "ImportError while importing test module '/tmp/pyjr-sample/tests/test_broken.py'."
    )
    assert "No module named 'missing_dependency'" in broken.stack


def test_pytest_json_counts_agree_with_the_report_summary() -> None:
    """The report's own summary, read with our mapping: xfailed and xpassed are passes, a
    ``rerun`` test (failed, then passed) is flaky. Pinned difference: the collection error
    is one more errored test; pytest-json-report's summary does not count it (pytest's own
    summary line does: "3 errors")."""
    raw_summary = json.loads(PYTEST_JSON.read_text())["summary"]
    summary = parse_file(PYTEST_JSON).summary()
    assert summary.passed == raw_summary["passed"] + raw_summary["xfailed"] + raw_summary["xpassed"]
    assert summary.flaky == raw_summary["rerun"]
    assert summary.failed == raw_summary["failed"]
    assert summary.errors == raw_summary["error"] + 1
    assert summary.skipped == raw_summary["skipped"]
    assert summary.tests == raw_summary["total"] + 1


def test_pytest_json_reruns_lose_their_details() -> None:
    """Pinned limit of the format (see tests/data/pytest_json/README.md): test_flaky failed
    twice before passing and test_always_fails failed twice, but the report keeps only the
    final run. testlens shows one detail-less failed attempt before test_flaky's pass and
    cannot see test_always_fails' rerun at all."""
    tests = by_name(parse_file(PYTEST_JSON))
    unrecorded, final = tests["test_flaky"].attempts
    assert (unrecorded.duration_ms, unrecorded.stack) == (0, None)
    assert "rerun" in unrecorded.message
    assert final.message is None
    assert len(tests["test_always_fails"].attempts) == 1


def test_pytest_json_rerun_entries_of_one_node_are_attempts() -> None:
    """Reports merged from several runs (or written by a plugin that emits one entry per run)
    hold the same node id more than once; a ``rerun`` entry whose call failed is that failed
    run."""

    def entry(outcome: str, call: str, seconds: float) -> dict[str, Any]:
        phase = {"duration": seconds, "outcome": call}
        if call == "failed":
            phase["crash"] = {
                "path": "/src/tests/test_api.py",
                "lineno": 9,
                "message": "TimeoutError: upstream",
            }
        return {
            "nodeid": "tests/test_api.py::test_login",
            "lineno": 7,
            "outcome": outcome,
            "setup": {"duration": 0.001, "outcome": "passed"},
            "call": phase,
            "teardown": {"duration": 0.001, "outcome": "passed"},
        }

    document = {
        "created": 1.0,
        "duration": 1.0,
        "exitcode": 0,
        "root": "/src",
        "summary": {"passed": 1, "rerun": 1, "total": 2, "collected": 1},
        "tests": [entry("rerun", "failed", 0.5), entry("passed", "passed", 0.25)],
    }
    [test] = parse_json(document).tests
    assert statuses(test) == ["failed", "passed"]
    assert test.attempts[0].message == "TimeoutError: upstream"
    assert [a.duration_ms for a in test.attempts] == pytest.approx([502, 252])


def test_pytest_json_summary_only_report_is_rejected() -> None:
    document = {
        "created": 1.0,
        "duration": 1.0,
        "exitcode": 0,
        "root": "/src",
        "summary": {"passed": 3, "total": 3, "collected": 3},
    }
    with pytest.raises(ReportError, match="json-report-summary"):
        parse_json(document)


# --- CTRF ----------------------------------------------------------------------------------

CTRF_EXAMPLES = sorted((CTRF / "examples").glob("*.json"))
CTRF_TO_OURS = {
    "passed": "passed",
    "failed": "failed",
    "skipped": "skipped",
    "pending": "skipped",
    "other": "skipped",
}


@pytest.mark.parametrize("path", CTRF_EXAMPLES, ids=lambda path: path.stem)
def test_ctrf_example_counts_match_its_summary(path: Path) -> None:
    """``summary`` counts each test by its final status, so compare final attempts; the
    examples hold no ``other`` (which can also map to error) and no ``pending``."""
    document = json.loads(path.read_text())
    summary = document["results"]["summary"]
    report = parse_file(path)
    assert report.format == "ctrf"
    final = Counter(test.attempts[-1].status for test in report.tests)
    assert len(report.tests) == summary["tests"]
    assert final["passed"] == summary["passed"]
    assert final["failed"] + final["error"] == summary["failed"] + summary["other"]
    assert final["skipped"] == summary["skipped"] + summary["pending"]
    assert report.summary().flaky == summary.get("flaky", 0)


@pytest.mark.parametrize("path", CTRF_EXAMPLES, ids=lambda path: path.stem)
def test_ctrf_example_attempts_follow_retry_attempts(path: Path) -> None:
    raw_tests = json.loads(path.read_text())["results"]["tests"]
    report = parse_file(path)
    for raw, test in zip(raw_tests, report.tests, strict=True):
        assert test.name == raw["name"]
        assert test.file == raw.get("filePath", "")
        assert test.suite == " > ".join(raw.get("suite", []))
        retry_attempts = raw.get("retryAttempts")
        if not retry_attempts:
            [attempt] = test.attempts
            assert (attempt.status, attempt.duration_ms) == (
                CTRF_TO_OURS[raw["status"]],
                raw["duration"],
            )
            assert (attempt.message, attempt.stack) == (raw.get("message"), raw.get("trace"))
            continue
        # The examples list every run, the final one included, and set retries one lower.
        assert len(test.attempts) == len(retry_attempts) == raw["retries"] + 1
        for attempt, entry in zip(test.attempts, retry_attempts, strict=True):
            assert attempt.status == CTRF_TO_OURS[entry["status"]]
            assert attempt.duration_ms == entry["duration"]
            assert attempt.message == entry.get("message", raw.get("message"))
        assert test.attempts[-1].status == CTRF_TO_OURS[raw["status"]]
        assert test.status == ("flaky" if raw.get("flaky") else test.attempts[-1].status)


def test_ctrf_test_duration_is_the_sum_of_its_attempts() -> None:
    """Pinned difference: with-retries.json gives the flaky test ``duration: 300`` while its
    three listed runs took 120 + 130 + 140 ms; testlens keeps each run's own duration."""
    report = by_name(parse_file(CTRF / "examples" / "with-retries.json"))
    assert report["flaky test"].duration_ms == 390


def _ctrf_cases() -> list[tuple[str, dict[str, Any]]]:
    normative = sorted((CTRF / "tests" / "normative").glob("*.json"))
    files = [CTRF / "tests" / "ctrf.test.json", *normative]
    cases = []
    for path in files:
        for case in json.loads(path.read_text())["tests"]:
            if "dataPath" in case:
                case = {**case, "data": json.loads((path.parent / case["dataPath"]).read_text())}
            cases.append((path.name.removesuffix(".test.json"), case))
    return cases


CTRF_CASES = _ctrf_cases()

# Schema violations testlens reads through, by reason. Each entry is (suite file, description).
ACCEPTED_DESPITE_INVALID: dict[str, list[tuple[str, str]]] = {
    # The spec requires rejecting unknown properties, but producers add their own fields and a
    # strict reader would turn a field it does not use into a lost report.
    "unknown properties": [
        ("ctrf", "Unknown property at top level - invalid"),
        ("ctrf", "Unknown property in test object - invalid"),
        ("additional-properties", "Document with unknown property at root level"),
        ("additional-properties", "Test object with unknown property"),
        ("additional-properties", "Tool object with unknown property"),
        ("additional-properties", "Summary object with unknown property"),
        ("additional-properties", "Results object with unknown property"),
        ("additional-properties", "Environment object with unknown property"),
        ("additional-properties", "Attachment object with unknown property"),
        ("additional-properties", "Step object with unknown property"),
        ("additional-properties", "RetryAttempt object with unknown property"),
        ("additional-properties", "Test insights object with unknown property"),
        ("additional-properties", "Root-level insights object with unknown property"),
        ("additional-properties", "Baseline object with unknown property"),
        ("additional-properties", "MetricDelta object with unknown property"),
        ("additional-properties", "RetryAttempt attachment object with unknown property"),
    ],
    # Document metadata that is not read: older reporters wrote only {"results": ...}, and the
    # version or ids do not change what a test result means.
    "document metadata": [
        ("ctrf", "Missing reportFormat - invalid"),
        ("ctrf", "Missing specVersion - invalid"),
        ("ctrf", "Invalid specVersion format - invalid"),
        ("required-properties", "Document missing required reportFormat property"),
        ("required-properties", "Document missing required specVersion property"),
        ("string-constraints", "Document with specVersion violating pattern constraint"),
        ("string-constraints", "Document with empty reportId violating minLength constraint"),
        ("string-constraints", "Document with empty runId violating minLength constraint"),
        ("type-validation", "Document with specVersion as number instead of string"),
        ("type-validation", "Document with reportId as number instead of string"),
        ("type-validation", "Document with runId as number instead of string"),
        ("type-validation", "Document with timestamp as number instead of string"),
        ("type-validation", "Document with generatedBy as number instead of string"),
        ("type-validation", "Document with extra as array instead of object"),
    ],
    # tool and summary are not read: tests are counted from tests[], never from summary.
    "tool and summary": [
        ("ctrf", "Missing tool name - invalid"),
        ("ctrf", "Empty tool name - invalid"),
        ("required-properties", "Results object missing required tool property"),
        ("required-properties", "Results object missing required summary property"),
        ("required-properties", "Tool object missing required name property"),
        *(
            ("required-properties", f"Summary object missing required {key} property")
            for key in ("tests", "passed", "failed", "skipped", "pending", "other", "start", "stop")
        ),
        ("string-constraints", "Tool with name violating minLength constraint"),
        ("type-validation", "Results with tool as array instead of object"),
        ("type-validation", "Tool with name as number instead of string"),
        ("type-validation", "Tool with version as number instead of string"),
        ("type-validation", "Results with summary as array instead of object"),
        *(
            ("type-validation", f"Summary with {key} as string instead of integer")
            for key in (
                "tests",
                "passed",
                "failed",
                "skipped",
                "pending",
                "other",
                "flaky",
                "suites",
                "start",
                "stop",
                "duration",
            )
        ),
    ],
    # Test fields that are not read: ids, timestamps, tags, labels, attachments, steps,
    # parameters, insights, environment, baseline, and the producer's own ``flaky`` verdict
    # (flakiness is computed from the attempts).
    "fields not read": [
        ("enum-constraints", "Step with invalid status enumeration value"),
        *(
            ("required-properties", f"{obj} object missing required {key} property")
            for obj in ("Attachment", "RetryAttempt attachment")
            for key in ("name", "contentType", "path")
        ),
        ("required-properties", "Step object missing required name property"),
        ("required-properties", "Step object missing required status property"),
        ("required-properties", "Baseline object missing required reportId property"),
        ("string-constraints", "Test with empty legacy id violating minLength constraint"),
        ("string-constraints", "Test with empty testId violating minLength constraint"),
        ("string-constraints", "Test with empty executionId violating minLength constraint"),
        ("string-constraints", "RetryAttempt with empty attemptId violating minLength constraint"),
        ("string-constraints", "Attachment with empty attachmentId violating minLength constraint"),
        ("string-constraints", "Environment with empty shardId violating minLength constraint"),
        ("string-constraints", "Baseline with empty reportId violating minLength constraint"),
        ("type-validation", "Test with testId as number instead of string"),
        ("type-validation", "Test with executionId as number instead of string"),
        ("type-validation", "Test with start as string instead of integer"),
        ("type-validation", "Test with stop as string instead of integer"),
        ("type-validation", "Test with line as string instead of integer"),
        ("type-validation", "Test with tags as string instead of array"),
        ("type-validation", "Test with tags array containing non-string item"),
        ("type-validation", "Test with labels as array instead of object"),
        ("type-validation", "Test with labels as string instead of object"),
        ("type-validation", "Test with labels containing an empty array value"),
        ("type-validation", "Test with labels containing an object in an array value"),
        ("type-validation", "Test with labels containing null in an array value"),
        ("type-validation", "Test with labels containing invalid value type (object)"),
        ("type-validation", "Test with labels containing invalid value type (null)"),
        ("type-validation", "RetryAttempt with attemptId as number instead of string"),
        ("type-validation", "Test with flaky as string instead of boolean"),
        ("type-validation", "Test with attachments as object instead of array"),
        ("type-validation", "Test with attachments array containing non-object item"),
        ("type-validation", "Attachment with attachmentId as number instead of string"),
        ("type-validation", "Test with parameters as array instead of object"),
        ("type-validation", "Test with steps as object instead of array"),
        ("type-validation", "Test with steps array containing non-object item"),
        ("type-validation", "Test with insights as array instead of object"),
        ("type-validation", "Test insights with executedInRuns as string instead of integer"),
        ("type-validation", "Results with environment as array instead of object"),
        ("type-validation", "Environment with buildNumber as string instead of integer"),
        ("type-validation", "Environment with shardId as number instead of string"),
        ("type-validation", "Environment with healthy as string instead of boolean"),
        ("type-validation", "Document with insights as array instead of object"),
        ("type-validation", "Root insights with runsAnalyzed as string instead of integer"),
        ("type-validation", "Document with baseline as array instead of object"),
        ("type-validation", "Baseline with buildNumber as string instead of integer"),
        *(
            ("type-validation", f"MetricDelta with {key} as string instead of number")
            for key in ("current", "baseline", "change")
        ),
    ],
    # ``suite`` as one string is what jest-ctrf-json-reporter writes ("file > describe"); an
    # empty suite list reads as no suite.
    "suite shapes": [
        ("type-validation", "Test with suite as string instead of array"),
        ("string-constraints", "Test with suite violating minItems constraint"),
    ],
}


def _case_id(case: tuple[str, dict[str, Any]]) -> str:
    return f"{case[0]}: {case[1]['description']}"


@pytest.mark.parametrize("case", CTRF_CASES, ids=_case_id)
def test_ctrf_validation_suite(case: tuple[str, dict[str, Any]]) -> None:
    suite, spec = case
    accepted = {entry for entries in ACCEPTED_DESPITE_INVALID.values() for entry in entries}
    if spec["valid"] or (suite, spec["description"]) in accepted:
        parse_json(spec["data"], "ctrf")
    else:
        with pytest.raises(ReportError):
            parse_json(spec["data"], "ctrf")


def test_ctrf_accepted_list_names_real_invalid_cases() -> None:
    invalid = {(suite, spec["description"]) for suite, spec in CTRF_CASES if not spec["valid"]}
    listed = [entry for entries in ACCEPTED_DESPITE_INVALID.values() for entry in entries]
    assert len(listed) == len(set(listed))
    assert set(listed) <= invalid
    # What remains rejected (36 cases) is what breaks reading: results, tests, name, status,
    # duration, retry attempts, stdout/stderr, or a reportFormat other than "CTRF".
    assert (len(CTRF_CASES), len(invalid), len(listed)) == (168, 149, 113)


def _ctrf(*tests: dict[str, Any]) -> dict[str, Any]:
    return {
        "reportFormat": "CTRF",
        "specVersion": "0.0.0",
        "results": {
            "tool": {"name": "runner"},
            "tests": list(tests),
            "summary": {
                "tests": len(tests),
                "passed": 0,
                "failed": 0,
                "skipped": 0,
                "pending": 0,
                "other": 0,
                "start": 0,
                "stop": 0,
            },
        },
    }


# Excerpt of a real report: jest 30.5.2 + jest-ctrf-json-reporter 0.0.11, jest.retryTimes(2),
# messages and traces shortened. The reporter writes ``retries`` but no ``retryAttempts``, a
# string ``suite``, ``pending`` for test.skip and ``other`` for test.todo.
JEST_CTRF = {
    "reportFormat": "CTRF",
    "specVersion": "0.0.0",
    "reportId": "6c0cc0a0-b1a8-4b8f-9a63-29c1d3a4b0f2",
    "timestamp": "2026-11-22T10:13:11.346Z",
    "generatedBy": "jest-ctrf-json-reporter",
    "results": {
        "tool": {"name": "jest"},
        "summary": {
            "tests": 5,
            "passed": 2,
            "failed": 1,
            "pending": 1,
            "skipped": 0,
            "other": 1,
            "start": 1795362391346,
            "stop": 1795362392125,
        },
        "tests": [
            {
                "name": "network flaky",
                "duration": 1,
                "status": "passed",
                "rawStatus": "passed",
                "type": "unit",
                "filePath": "/tmp/jest-ctrf/sample.test.js",
                "retries": 2,
                "flaky": True,
                "suite": "sample.test.js > network",
            },
            {
                "name": "network always fails",
                "duration": 1,
                "status": "failed",
                "message": "Error: expect(received).toBe(expected) // Object.is equality",
                "trace": "at Object.toBe (sample.test.js:9:15)",
                "rawStatus": "failed",
                "type": "unit",
                "filePath": "/tmp/jest-ctrf/sample.test.js",
                "retries": 2,
                "flaky": False,
                "suite": "sample.test.js > network",
            },
            {
                "name": "network passes",
                "duration": 0,
                "status": "passed",
                "rawStatus": "passed",
                "type": "unit",
                "filePath": "/tmp/jest-ctrf/sample.test.js",
                "retries": 0,
                "flaky": False,
                "suite": "sample.test.js > network",
            },
            {
                "name": "network skipped",
                "duration": 0,
                "status": "pending",
                "rawStatus": "pending",
                "type": "unit",
                "filePath": "/tmp/jest-ctrf/sample.test.js",
                "retries": 0,
                "flaky": False,
                "suite": "sample.test.js > network",
            },
            {
                "name": "network todo later",
                "duration": 0,
                "status": "other",
                "rawStatus": "todo",
                "type": "unit",
                "filePath": "/tmp/jest-ctrf/sample.test.js",
                "retries": 0,
                "flaky": False,
                "suite": "sample.test.js > network",
            },
        ],
    },
}


def test_ctrf_retry_count_without_attempts_still_shows_the_retries() -> None:
    report = by_name(parse_json(JEST_CTRF))
    assert statuses(report["network flaky"]) == ["failed", "failed", "passed"]
    assert report["network flaky"].status == "flaky"
    always = report["network always fails"]
    assert statuses(always) == ["failed", "failed", "failed"]
    assert always.attempts[-1].message.startswith("Error: expect(received)")
    assert always.attempts[0].message != always.attempts[-1].message
    assert report["network passes"].suite == "sample.test.js > network"
    assert statuses(report["network skipped"]) == ["skipped"]  # pending
    assert statuses(report["network todo later"]) == ["skipped"]  # other, nothing ran


def test_ctrf_retry_attempts_without_the_final_run() -> None:
    """playwright-ctrf-json-reporter lists the earlier runs in ``retryAttempts`` and sets
    ``retries`` to their count; the test-level fields are the final run."""
    report = parse_json(
        _ctrf(
            {
                "name": "checkout",
                "status": "passed",
                "duration": 900,
                "browser": "chromium 120",
                "retries": 2,
                "flaky": True,
                "suite": ["shop", "cart"],
                "retryAttempts": [
                    {"attempt": 2, "status": "failed", "duration": 700, "message": "second"},
                    {"attempt": 1, "status": "failed", "duration": 600, "message": "first"},
                ],
            }
        )
    )
    [test] = report.tests
    assert [(a.status, a.duration_ms, a.message) for a in test.attempts] == [
        ("failed", 600, "first"),
        ("failed", 700, "second"),
        ("passed", 900, None),
    ]
    assert {a.environment for a in test.attempts} == {"chromium 120"}
    assert test.suite == "shop > cart"


def test_ctrf_other_with_failure_details_is_an_error() -> None:
    report = parse_json(
        _ctrf(
            {"name": "crashed", "status": "other", "duration": 5, "message": "worker exited"},
            {"name": "todo", "status": "other", "duration": 0},
        )
    )
    assert [statuses(t) for t in report.tests] == [["error"], ["skipped"]]


@pytest.mark.parametrize(
    ("test", "error"),
    [
        ({"name": "t", "status": "passed", "duration": -1}, "negative"),
        ({"name": "t", "status": "passed", "duration": True}, "'duration' must be"),
        ({"name": "t", "status": "passed", "duration": 1, "retries": -1}, "negative"),
        ({"name": "t", "status": "passed", "duration": 1, "filePath": 3}, "'filePath' must be"),
    ],
)
def test_ctrf_rejects_what_it_cannot_read(test: dict[str, Any], error: str) -> None:
    with pytest.raises(ReportError, match=error):
        parse_json(_ctrf(test))


# --- Flakiness -----------------------------------------------------------------------------


def test_flakiness_example_every_test_and_attempt() -> None:
    report = parse_file(FLAKINESS_EXAMPLE)
    assert report.format == "flakiness"
    got = {
        (t.file, t.suite, t.classname, t.name): [
            (a.status, a.duration_ms, a.environment, a.censored, a.message) for a in t.attempts
        ]
        for t in report.tests
    }
    assert got == {
        ("tests/test_api.py", "TestLogin", "", "test_ok"): [
            ("passed", 120, "linux", False, None),
            ("passed", 135, "macos", False, None),
        ],
        ("tests/test_api.py", "TestLogin", "", "test_retry"): [
            ("failed", 800, "linux", False, "AssertionError: assert 500 == 200"),
            ("passed", 700, "linux", False, None),
        ],
        ("tests/test_api.py", "", "", "test_skip_windows"): [("skipped", 0, "linux", False, None)],
        ("tests/test_api.py", "", "", "test_known_bug"): [
            ("passed", 15, "linux", False, "ZeroDivisionError: division by zero")
        ],
        ("tests/test_api.py", "", "", "test_slow"): [
            ("failed", 3000, "linux", True, "Timeout >3.0s")
        ],
    }
    retry = by_name(report)["test_retry"].attempts[0]
    assert retry.stack == "tests/test_api.py:22: AssertionError"
    assert (retry.stdout, retry.stderr) == ("GET /login -> 500\n", "warning: slow\n")


def test_flakiness_example_rollup_per_test_and_environment() -> None:
    """The format document's expected reading: 6 (test, environment) pairs, 3 passed
    (test_ok twice, test_known_bug), 1 flaky, 1 failed, 1 skipped; 5 tests, 7 attempts."""
    report = parse_file(FLAKINESS_EXAMPLE)
    pairs = Counter()
    for test in report.tests:
        for environment in dict.fromkeys(a.environment for a in test.attempts):
            one_env = TestCase(
                test.name, attempts=[a for a in test.attempts if a.environment == environment]
            )
            pairs[one_env.status] += 1
    assert pairs == {"passed": 3, "flaky": 1, "failed": 1, "skipped": 1}
    summary = report.summary()
    assert (summary.tests, summary.attempts) == (5, 7)


def test_flakiness_unattributed_errors_are_not_tests() -> None:
    """Pinned: the example's one ``unattributedErrors`` entry has no test to attach to, and
    a made-up test would contradict the report's own count of 5 tests."""
    document = json.loads(FLAKINESS_EXAMPLE.read_text())
    assert len(document["unattributedErrors"]) == 1
    assert len(parse_json(document).tests) == 5


def _flakiness(**fields: Any) -> dict[str, Any]:
    return {
        "category": "playwright",
        "commitId": "0" * 40,
        "startTimestamp": 0,
        "duration": 0,
        "environments": [{"name": "chromium"}, {"name": "firefox"}],
        **fields,
    }


def test_flakiness_defaults_and_statuses() -> None:
    stdout = base64.b64encode(b"bytes out\n").decode()
    document = _flakiness(
        suites=[
            {
                "type": "file",
                "title": "e2e/cart.spec.ts",
                "suites": [
                    {
                        "type": "anonymous suite",
                        "title": "",
                        "suites": [
                            {
                                "type": "suite",
                                "title": "cart",
                                "tests": [
                                    {
                                        "title": "adds",
                                        "attempts": [
                                            {},
                                            {
                                                "environmentIdx": 1,
                                                "status": "interrupted",
                                                "duration": 50,
                                                "errors": [{"value": "worker killed"}],
                                                "stdio": [
                                                    {"buffer": stdout},
                                                    {"stream": 2, "text": "err\n"},
                                                ],
                                            },
                                            {"status": "failed", "expectedStatus": "failed"},
                                            {"status": "passed", "expectedStatus": "failed"},
                                            {"status": "skipped", "expectedStatus": "passed"},
                                        ],
                                    },
                                ],
                            },
                        ],
                    },
                ],
            }
        ],
        tests=[
            {
                "title": "root test",
                "location": {"file": "e2e/root.spec.ts", "line": 3, "column": 1},
                "attempts": [{"stdout": [{"text": "legacy\n"}]}],
            },
            {"title": "never ran", "attempts": []},
        ],
    )
    report = by_name(parse_json(document))
    adds = report["adds"]
    assert (adds.file, adds.suite) == ("e2e/cart.spec.ts", "cart")
    assert [(a.status, a.environment, a.censored, a.duration_ms) for a in adds.attempts] == [
        ("passed", "chromium", False, 0),
        ("error", "firefox", True, 50),
        ("passed", "chromium", False, 0),
        ("failed", "chromium", False, 0),
        ("skipped", "chromium", False, 0),
    ]
    interrupted = adds.attempts[1]
    assert (interrupted.message, interrupted.stdout, interrupted.stderr) == (
        "worker killed",
        "bytes out\n",
        "err\n",
    )
    root = report["root test"]
    assert (root.file, root.suite, root.attempts[0].stdout) == ("e2e/root.spec.ts", "", "legacy\n")
    assert report["never ran"].attempts == []


@pytest.mark.parametrize(
    ("attempt", "error"),
    [
        ({"environmentIdx": 2}, "environmentIdx 2"),
        ({"status": "broken"}, "unknown status"),
        ({"expectedStatus": "ok"}, "unknown expectedStatus"),
        ({"duration": "5"}, "'duration' must be"),
    ],
)
def test_flakiness_rejects_unreadable_attempts(attempt: dict[str, Any], error: str) -> None:
    document = _flakiness(tests=[{"title": "t", "attempts": [attempt]}])
    with pytest.raises(ReportError, match=error):
        parse_json(document)


def test_flakiness_rejects_tests_without_attempts_field() -> None:
    with pytest.raises(ReportError, match="'attempts'"):
        parse_json(_flakiness(tests=[{"title": "t"}]))

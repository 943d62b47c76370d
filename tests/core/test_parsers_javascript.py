"""Jest, Playwright and Mocha JSON reports, read against what the tools themselves said.

The Jest, Playwright and Mocha samples in ``data/javascript`` were written by the real tools
(see its README); each report states its own totals (Jest's ``num*Tests``, Playwright's
``stats`` and per-test ``status``, Mocha's ``stats``), and those are the expectations here.
The Mocha corpus files are checked against dorny/test-reporter's reading of them.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from corpus import CORPUS, REPORTS

from testlens.core.identity import relative_to_root
from testlens.core.model import Report, ReportError, TestCase
from testlens.core.parsers import parse_report
from testlens.core.parsers.javascript import (
    FORMATS,
    MAX_RETRIES,
    RETRIED,
    RUN_ERROR,
    UNEXPECTED_PASS,
)

DATA = Path(__file__).parents[1] / "data" / "javascript"
# Where data/javascript/sources/generate.sh ran each tool: the reports' absolute paths.
JEST_ROOT = "/tmp/testlens-js-reports/jest/"
MOCHA_ROOT = "/tmp/testlens-js-reports/mocha/"
DORNY = REPORTS / "test-reporter"
# dorny has one word for our failed and error; "success" is passed.
DORNY_RESULT = {"passed": "success", "failed": "failed", "error": "failed", "skipped": "skipped"}
TOO_MANY = MAX_RETRIES + 1


def sample(name: str) -> tuple[dict[str, Any], Report]:
    raw = (DATA / name).read_bytes()
    return json.loads(raw), parse_report(raw)


def parse(document: dict[str, Any], format: str | None = None) -> Report:
    return parse_report(json.dumps(document).encode(), format=format)


def by_name(report: Report) -> dict[str, TestCase]:
    tests = {t.name: t for t in report.tests}
    assert len(tests) == len(report.tests), "test names in these samples are unique"
    return tests


def statuses(test: TestCase, environment: str | None = None) -> list[str]:
    return [a.status for a in test.attempts if a.environment == environment]


# --- detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format"),
    [
        ("jest.json", "jest"),
        ("jest-color.json", "jest"),
        ("playwright.json", "playwright"),
        ("playwright-load-error.json", "playwright"),
        ("mocha.json", "mocha"),
    ],
)
def test_real_reports_are_detected(name, format):
    assert sample(name)[1].format == format


@pytest.mark.parametrize(
    "path",
    [
        DORNY / "__tests__" / "fixtures" / "rspec-json.json",
        REPORTS / "ctrf" / "examples" / "with-retries.json",
        CORPUS / "flakiness-report-example.json",
        Path(__file__).parents[1] / "data" / "pytest_json" / "report.json",
    ],
    ids=lambda p: p.name,
)
def test_other_json_formats_are_not_claimed(path):
    document = json.loads(path.read_text(encoding="utf-8"))
    assert [f.name for f in FORMATS if f.matches(document)] == []


def test_each_sample_matches_only_its_own_format():
    for name in ("jest.json", "playwright.json", "mocha.json"):
        document, report = sample(name)
        assert [f.name for f in FORMATS if f.matches(document)] == [report.format]


# --- Mocha corpus vs dorny/test-reporter -----------------------------------------------


def dorny_cases(fixture: str) -> list[dict[str, Any]]:
    lines = (DORNY / "_derived" / "snapshot-cases.jsonl").read_text(encoding="utf-8")
    return [c for c in map(json.loads, lines.splitlines()) if c["fixture"] == fixture]


def dorny_summary(fixture: str) -> dict[str, str]:
    with (DORNY / "_derived" / "snapshot-summary.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["fixture"] == f"__tests__/{fixture}"]
    assert len(rows) == 1
    return rows[0]


def dorny_view(report: Report) -> dict[tuple[str, str | None, str], list[tuple]]:
    """Our attempts keyed like dorny's cases: (file, describe titles or None, title).

    Each attempt is one dorny case (no retries in these files), so identical titles that we
    fold into one test still compare one by one.
    """
    view: dict[tuple[str, str | None, str], list[tuple]] = {}
    for test in report.tests:
        key = (test.file, test.suite or None, test.name)
        view[key] = sorted(
            (DORNY_RESULT[a.status], a.duration_ms, a.message) for a in test.attempts
        )
    return view


def dorny_expected(fixture: str) -> dict[tuple[str, str | None, str], list[tuple]]:
    expected: dict[tuple[str, str | None, str], list[tuple]] = {}
    for case in dorny_cases(fixture):
        key = (case["suite"], case["group"], case["test"])
        expected.setdefault(key, []).append(
            (case["result"], case["time_ms"], case["error_message"])
        )
    return {key: sorted(cases) for key, cases in expected.items()}


@pytest.mark.parametrize(
    ("fixture", "root"),
    [
        (
            "fixtures/mocha-json.json",
            "C:\\Users\\Michal\\Workspace\\dorny\\test-reporter\\reports\\mocha",
        ),
        (
            "fixtures/external/mocha/mocha-test-results.json",
            "C:\\Users\\Michal\\Workspace\\dorny\\mocha",
        ),
    ],
)
def test_mocha_corpus_matches_dorny_case_by_case(fixture, root):
    report = parse_report((DORNY / "__tests__" / fixture).read_bytes())
    assert report.format == "mocha"
    # file (relative to the directory mocha ran in, as an upload's root makes it), describe
    # titles, title, status, duration and message all agree.
    assert dorny_view(relative_to_root(report, root)) == dorny_expected(fixture)
    summary = dorny_summary(fixture)
    counted = Counter(DORNY_RESULT[a.status] for t in report.tests for a in t.attempts)
    assert sum(counted.values()) == int(summary["tests"])
    assert counted["success"] == int(summary["passed"])
    assert counted["failed"] == int(summary["failed"])
    assert counted["skipped"] == int(summary["skipped"])


def test_mocha_corpus_sample_test_level_counts():
    report = parse_report((DORNY / "__tests__" / "fixtures" / "mocha-json.json").read_bytes())
    summary = dorny_summary("fixtures/mocha-json.json")
    s = report.summary()
    assert (s.tests, s.passed, s.failed + s.errors, s.skipped) == (
        int(summary["tests"]),
        int(summary["passed"]),
        int(summary["failed"]),
        int(summary["skipped"]),
    )
    timeout = by_name(report)["Timeout test"].attempts[-1]
    # The report marks it ERR_MOCHA_TIMEOUT: stopped from outside, so its 8 ms is censored.
    assert timeout.censored and timeout.error_type == "Error"
    assert by_name(report)["Failing test"].attempts[-1].error_type == "AssertionError"


def test_mocha_corpus_pinned_difference_duplicate_titles():
    """dorny lists 839 tests; we have 837 tests with 839 attempts.

    Mocha's own suite has two pairs of tests with the same file and full title (the same
    ``it`` title under identically named describe blocks). The JSON reporter gives nothing
    else to tell them apart, so they share an identity and ``merge_tests`` folds each pair
    into one test with two passed attempts. Statuses still agree (both passed in each pair).
    """
    fixture = "fixtures/external/mocha/mocha-test-results.json"
    report = parse_report((DORNY / "__tests__" / fixture).read_bytes())
    summary = dorny_summary(fixture)
    folded = {t.name: len(t.attempts) for t in report.tests if len(t.attempts) > 1}
    assert folded == {'should emit "fail"': 2, "should cleanly terminate the thread pool": 2}
    s = report.summary()
    assert s.tests == int(summary["tests"]) - 2 == 837
    assert s.attempts == int(summary["tests"]) == 839
    assert s.passed == int(summary["passed"]) - 2
    assert s.skipped == int(summary["skipped"]) == 6
    assert s.failed == s.errors == s.flaky == 0


def test_mocha_corpus_empty_report():
    inline = json.loads((DORNY / "_derived" / "inline-expectations.json").read_text())
    (expect,) = [
        e["expect"] for e in inline if e["fixture"] == "__tests__/fixtures/empty/mocha-json.json"
    ]
    report = parse_report(
        (DORNY / "__tests__" / "fixtures" / "empty" / "mocha-json.json").read_bytes()
    )
    assert report.format == "mocha"
    assert len(report.tests) == expect["tests"] == 0


# --- Jest ------------------------------------------------------------------------------


def failed_files(document: dict[str, Any]) -> int:
    """Files Jest marked failed although none of their tests failed."""
    return sum(
        1
        for f in document["testResults"]
        if f["status"] == "failed"
        and not any(a["status"] == "failed" for a in f["assertionResults"])
    )


@pytest.mark.parametrize("name", ["jest.json", "jest-color.json"])
def test_jest_counts_match_jest_totals(name):
    document, report = sample(name)
    s = report.summary()
    assert s.passed + s.flaky == document["numPassedTests"] == 3
    assert s.flaky == 1
    assert s.failed == document["numFailedTests"] == 1
    assert s.skipped == document["numPendingTests"] + document["numTodoTests"] == 2
    # The two files that failed outside any test: one errored entry each.
    assert s.errors == failed_files(document) == document["numRuntimeErrorTestSuites"] == 2
    assert s.tests == document["numTotalTests"] + s.errors
    invocations = sum(
        a["invocations"] for f in document["testResults"] for a in f["assertionResults"]
    )
    assert s.attempts == invocations + s.errors == 12


def test_jest_one_attempt_per_invocation():
    document, report = sample("jest.json")
    tests = by_name(report)
    for test_file in document["testResults"]:
        for result in test_file["assertionResults"]:
            test = tests[result["title"]]
            assert test.suite == " > ".join(result["ancestorTitles"])
            assert len(test.attempts) == result["invocations"]
            assert test.attempts[-1].duration_ms == (result["duration"] or 0)
            assert all(a.status == "failed" and a.duration_ms == 0 for a in test.attempts[:-1])


def test_jest_retried_test_keeps_the_errors_of_earlier_runs():
    document, report = sample("jest.json")
    flaky = by_name(report)["passes on the third run"]
    assert flaky.status == "flaky"
    assert flaky.suite == "math > flaky"
    assert statuses(flaky) == ["failed", "failed", "passed"]
    first, second, final = flaky.attempts
    assert (
        first.message == "expect(received).toBe(expected) // Object.is equality\n\n"
        "Expected: 3\nReceived: 1"
    )
    assert second.message.endswith("Received: 2")
    assert first.error_type == "Error" and "math.test.js:16:38" in first.stack
    assert final.message is None and final.stack is None

    always = by_name(report)["fails every time"]
    assert statuses(always) == ["failed"] * 3
    (result,) = [
        a
        for f in document["testResults"]
        for a in f["assertionResults"]
        if a["title"] == "fails every time"
    ]
    # Jest's own structured reading of the final failure.
    assert always.attempts[-1].message == result["failureDetails"][0]["matcherResult"]["message"]
    assert always.attempts[-1].error_type == "Error"


def test_jest_skipped_and_todo():
    _, report = sample("jest.json")
    tests = by_name(report)
    for name in ("skipped", "todo"):
        assert statuses(tests[name]) == ["skipped"]
        assert tests[name].duration_ms == 0  # Jest writes duration null for them


def test_jest_files_that_fail_outside_tests_become_errors():
    _, report = sample("jest.json")
    tests = by_name(report)
    broken = tests[JEST_ROOT + "__tests__/broken.test.js"]
    assert (broken.file, broken.suite, broken.status) == (
        JEST_ROOT + "__tests__/broken.test.js",
        "",
        "error",
    )
    assert broken.attempts[0].message == (
        "Cannot find module './does-not-exist' from '__tests__/broken.test.js'"
    )
    assert "Test suite failed to run" not in broken.attempts[0].stack
    teardown = tests[JEST_ROOT + "__tests__/hook.test.js"]
    assert teardown.status == "error"
    assert teardown.attempts[0].message == "teardown failed"
    # The test that passed before the teardown failed keeps its own result.
    assert tests["passes before a failing teardown"].status == "passed"


def test_jest_paths_are_kept_as_written_until_the_upload_root_makes_them_relative():
    document, report = sample("jest.json")
    assert {t.file for t in report.tests} == {f["name"] for f in document["testResults"]}
    files = {"__tests__/math.test.js", "__tests__/hook.test.js", "__tests__/broken.test.js"}
    assert {t.file for t in report.tests} == {JEST_ROOT + file for file in files}
    relative = relative_to_root(report, JEST_ROOT)
    assert {t.file for t in relative.tests} == files
    # The files that failed outside any test are errors named after them: renamed along.
    assert {t.name for t in relative.tests if t.status == "error"} == files - {
        "__tests__/math.test.js"
    }


def test_jest_colored_report_reads_like_the_plain_one():
    def readable(report: Report) -> list[tuple]:
        return [
            (t.identity, [(a.status, a.message, a.error_type) for a in t.attempts])
            for t in report.tests
        ]

    _, plain = sample("jest.json")
    _, colored = sample("jest-color.json")
    escape = "\\u001b["  # how JSON.stringify writes the ESC of a colour code
    assert escape not in (DATA / "jest.json").read_text(encoding="utf-8")
    assert escape in (DATA / "jest-color.json").read_text(encoding="utf-8")
    assert readable(colored) == readable(plain)
    texts = [x for t in colored.tests for a in t.attempts for x in (a.message, a.stack) if x]
    assert texts and not any("\x1b" in x for x in texts)


# --- Playwright ------------------------------------------------------------------------


def outcome(attempts: list[str]) -> str:
    """Playwright's word for one test in one project, from our attempts."""
    if all(s == "skipped" for s in attempts):
        return "skipped"
    if attempts[-1] != "passed":
        return "unexpected"
    return "flaky" if any(s in ("failed", "error") for s in attempts) else "expected"


def raw_tests(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(spec title, test) for every test of the report, one per spec and project."""
    found, suites = [], list(document["suites"])
    while suites:
        suite = suites.pop()
        found += [
            (spec["title"], test) for spec in suite.get("specs", []) for test in spec["tests"]
        ]
        suites += suite.get("suites", [])
    return found


def test_playwright_outcomes_match_playwright():
    document, report = sample("playwright.json")
    tests = by_name(report)
    ours = {
        (t.name, env): outcome(statuses(t, env)) for t in report.tests for env in ("alpha", "beta")
    }
    # Per test and project, the same outcome Playwright wrote on that test ...
    assert ours == {
        (title, test["projectName"]): test["status"] for title, test in raw_tests(document)
    }
    # ... and so the same totals as its stats (unexpected 6, flaky 2, expected 4, skipped 2).
    stats = {k: document["stats"][k] for k in ("expected", "unexpected", "flaky", "skipped")}
    assert dict(Counter(ours.values())) == stats
    assert (
        sum(len(t.attempts) for t in tests.values())
        == sum(len(test["results"]) for _, test in raw_tests(document))
        == 22
    )


def test_playwright_attempts_per_project():
    document, report = sample("playwright.json")
    tests = by_name(report)
    assert len(report.tests) == 7  # one test per spec: projects are environments
    assert {a.environment for t in report.tests for a in t.attempts} == {"alpha", "beta"}
    for env in ("alpha", "beta"):
        assert statuses(tests["flaky: passes on the second attempt"], env) == ["failed", "passed"]
        assert statuses(tests["fails every time"], env) == ["failed", "failed"]
        assert statuses(tests["skipped"], env) == ["skipped"]
        assert statuses(tests["expected to fail and fails"], env) == ["passed"]
        assert statuses(tests["expected to fail but passes"], env) == ["failed", "failed"]
    durations = [
        r["duration"]
        for title, test in raw_tests(document)
        if title == "passes"
        for r in test["results"]
    ]
    assert sorted(a.duration_ms for a in tests["passes"].attempts) == sorted(durations)


def test_playwright_timeouts_are_censored_failures():
    _, report = sample("playwright.json")
    timed_out = by_name(report)["times out"]
    assert timed_out.status == "failed"
    assert [(a.status, a.censored) for a in timed_out.attempts] == [("failed", True)] * 4
    assert {a.message for a in timed_out.attempts} == {"Test timeout of 500ms exceeded."}
    assert all(a.duration_ms >= 500 for a in timed_out.attempts)
    others = [a for t in report.tests if t is not timed_out for a in t.attempts]
    assert not any(a.censored for a in others)


def test_playwright_messages_output_and_suites():
    _, report = sample("playwright.json")
    tests = by_name(report)
    failure = tests["fails every time"].attempts[0]
    assert failure.message == (
        "expect(received).toBe(expected) // Object.is equality\n\nExpected: 5\nReceived: 4"
    )
    assert failure.error_type == "Error"
    assert failure.stack.endswith("basic.spec.js:19:19")
    assert failure.stderr == "about to fail\n"
    assert tests["passes"].attempts[0].stdout == "hello from stdout\n"
    assert tests["expected to fail but passes"].attempts[0].message == UNEXPECTED_PASS
    assert tests["expected to fail and fails"].attempts[0].message is None
    assert {t.name: t.suite for t in report.tests} == {
        "passes": "",
        "fails every time": "outer",
        "skipped": "outer",
        "times out": "outer",
        "expected to fail and fails": "outer",
        "expected to fail but passes": "outer",
        "flaky: passes on the second attempt": "outer > inner",
    }
    assert {t.file for t in report.tests} == {"basic.spec.js"}


def test_playwright_spec_that_cannot_load_is_an_error():
    document, report = sample("playwright-load-error.json")
    assert document["suites"] == [] and not any(
        document["stats"][k] for k in ("expected", "unexpected", "flaky", "skipped")
    )
    (test,) = report.tests
    assert (test.file, test.name, test.status) == ("broken.spec.js", "broken.spec.js", "error")
    assert test.attempts[0].message.startswith("Cannot find module './does-not-exist'")
    assert test.attempts[0].error_type == "Error"


def test_playwright_run_error_without_location():
    document, _ = sample("playwright-load-error.json")
    del document["errors"][0]["location"]
    (test,) = parse(document).tests
    assert (test.file, test.name, test.status) == ("", RUN_ERROR, "error")


def test_playwright_test_that_never_started_is_skipped():
    document, _ = sample("playwright.json")
    for _, test in raw_tests(document):
        if test["projectName"] == "beta":
            test["results"] = []
    report = parse(document)
    assert all(statuses(t, "beta") == ["skipped"] for t in report.tests)


# --- Mocha -----------------------------------------------------------------------------


def test_mocha_counts_match_mocha_stats():
    document, report = sample("mocha.json")
    stats, s = document["stats"], report.summary()
    assert s.passed + s.flaky == stats["passes"] == 2
    assert s.failed + s.errors == stats["failures"] == 3
    assert s.skipped == stats["pending"] == 1
    # stats.tests leaves out the failed hook, which is an errored entry here.
    assert s.tests == stats["tests"] + s.errors == 6


def test_mocha_current_retry_adds_earlier_failed_attempts():
    document, report = sample("mocha.json")
    tests = by_name(report)
    for entry in document["tests"]:
        test = tests[entry["title"]]
        assert len(test.attempts) == entry["currentRetry"] + 1
        assert all(a.message == RETRIED for a in test.attempts[:-1])
    assert statuses(tests["passes on the third attempt"]) == ["failed", "failed", "passed"]
    assert tests["passes on the third attempt"].status == "flaky"
    assert tests["passes on the third attempt"].suite == "retry flaky"
    assert statuses(tests["fails every time"]) == ["failed"] * 3
    assert tests["fails every time"].attempts[-1].message == (
        "Expected values to be strictly equal:\n\n4 !== 5\n"
    )
    timed_out = tests["times out"].attempts
    assert [a.censored for a in timed_out] == [False, False, True]
    assert statuses(tests["skipped"]) == ["skipped"]


def test_mocha_failed_hook_is_an_error():
    _, report = sample("mocha.json")
    hook = by_name(report)['"before all" hook for "never runs"']
    file = MOCHA_ROOT + "test/retry.spec.js"
    assert (hook.suite, hook.file, hook.status) == ("broken hook", file, "error")
    assert hook.attempts[0].message == "setup failed"
    assert hook.attempts[0].error_type == "Error"
    assert {t.file for t in report.tests} == {file}
    assert {t.file for t in relative_to_root(report, MOCHA_ROOT).tests} == {"test/retry.spec.js"}


def mocha_doc(*tests: dict[str, Any]) -> dict[str, Any]:
    """A Mocha JSON report whose ``tests`` are also sorted into the status lists."""
    entries = [
        {
            "title": f"t{i}",
            "fullTitle": f"s t{i}",
            "file": "/ci/shop/test/a.spec.js",
            "duration": 5,
            "currentRetry": 0,
            "err": {},
            **t,
        }
        for i, t in enumerate(tests)
    ]
    return {
        "stats": {},
        "tests": entries,
        "pending": [],
        "failures": [e for e in entries if e["err"]],
        "passes": [e for e in entries if not e["err"]],
    }


def test_mocha_current_retry_unit():
    failed_err = {"message": "boom", "stack": "TypeError: boom\n    at x (a.js:1:1)"}
    report = parse(mocha_doc({"currentRetry": 3}, {"currentRetry": 1, "err": failed_err}))
    passed, failed = report.tests
    assert statuses(passed) == ["failed", "failed", "failed", "passed"]
    assert [a.duration_ms for a in passed.attempts] == [0, 0, 0, 5]
    assert statuses(failed) == ["failed", "failed"]
    assert failed.attempts[-1].error_type == "TypeError"
    assert (failed.file, failed.suite) == ("/ci/shop/test/a.spec.js", "s")
    with pytest.raises(ReportError, match="currentRetry"):
        parse(mocha_doc({"currentRetry": TOO_MANY}))


def test_mocha_timeout_without_error_code():
    # Mocha before 8 wrote timeouts with no ``code``; the message still says what happened.
    err = {
        "message": "Timeout of 2000ms exceeded. Ensure the done() callback is being called",
        "stack": "Error: Timeout of 2000ms exceeded.",
    }
    (test,) = parse(mocha_doc({"err": err, "duration": 2001})).tests
    assert [(a.status, a.censored, a.duration_ms) for a in test.attempts] == [
        ("failed", True, 2001)
    ]


# --- Jest units --------------------------------------------------------------------------


def jest_doc(*files: str, **result: Any) -> dict[str, Any]:
    assertion = {
        "ancestorTitles": ["a", "b"],
        "title": "t",
        "status": "passed",
        "duration": 4,
        "failureMessages": [],
        "invocations": 1,
        **result,
    }
    return {
        "numTotalTests": len(files),
        "testResults": [
            {"name": f, "status": "passed", "assertionResults": [assertion]} for f in files
        ],
    }


def test_jest_invocations_unit():
    (test,) = parse(jest_doc("/ci/shop/test/a.test.js", invocations=3)).tests
    assert statuses(test) == ["failed", "failed", "passed"]
    assert [(a.message, a.duration_ms) for a in test.attempts] == [
        (RETRIED, 0),
        (RETRIED, 0),
        (None, 4),
    ]
    assert test.suite == "a > b" and test.classname == ""
    (test,) = parse(jest_doc("/ci/shop/test/a.test.js", invocations=None, duration=None)).tests
    assert [(a.status, a.duration_ms) for a in test.attempts] == [("passed", 0)]
    with pytest.raises(ReportError, match="invocations"):
        parse(jest_doc("/ci/shop/test/a.test.js", invocations=TOO_MANY + 1))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("passed", "passed"),
        ("focused", "passed"),
        ("failed", "failed"),
        ("pending", "skipped"),
        ("skipped", "skipped"),
        ("todo", "skipped"),
        ("disabled", "skipped"),
    ],
)
def test_jest_statuses(status, expected):
    (test,) = parse(jest_doc("a.test.js", status=status)).tests
    assert statuses(test) == [expected]


def test_jest_unknown_status_is_refused():
    with pytest.raises(ReportError, match="unknown jest test status 'retried'"):
        parse(jest_doc("a.test.js", status="retried"))


@pytest.mark.parametrize(
    "paths",
    [
        # Files of one shard share more directories than the run's; the paths say nothing of
        # where the repository begins, so each is kept as the runner wrote it. The upload's
        # root makes them relative (tests/core/test_identity_paths.py).
        ["/home/ci/shop/packages/a/src/x.test.js", "/home/ci/shop/packages/a/test/y.test.js"],
        ["/home/ci/shop/test/a.test.js"],
        ["C:\\work\\shop\\test\\unit\\a.test.js", "C:\\work\\shop\\test\\b.test.js"],
        ["src/x.test.js"],
    ],
)
def test_paths_are_kept_as_written(paths):
    assert [t.file for t in parse(jest_doc(*paths)).tests] == paths
    mocha = mocha_doc(*({"file": path} for path in paths))
    assert [t.file for t in parse(mocha).tests] == paths

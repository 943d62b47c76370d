"""Root-cause classification: text rules per category, the threshold, and each behavioural
signal both when it is significant and when it is not."""

from __future__ import annotations

import pytest

from testlens.core.rootcause import (
    CATEGORIES,
    CONFIDENCE_THRESHOLD,
    Evidence,
    Failure,
    Verdict,
    classify,
    fisher_greater,
    holm,
)


def text(error_type: str = "", message: str = "", stack: str = "") -> Verdict:
    """How the labelled benchmark calls the classifier: one failure, text only."""
    return classify(
        Evidence(failures=[Failure(error_type=error_type, message=message, stack=stack)])
    )


PLAIN = Failure(error_type="AssertionError", message="assert 2 == 3")

# One or more real-looking failures per category; every category but unknown is reachable
# from text alone.
TEXT_CASES = [
    (
        "timing_issue",
        "",
        'Error: Timeout of 2000ms exceeded. For async tests and hooks, ensure "done()" is called',
        "",
    ),
    ("timing_issue", "", 'thrown: "Exceeded timeout of 5000 ms for a test.', ""),
    (
        "timing_issue",
        "org.junit.runners.model.TestTimedOutException",
        "test timed out after 1000 milliseconds",
        "",
    ),
    ("timing_issue", "Failed", "Timeout >5.0s", ""),
    ("timing_issue", "", "panic: test timed out after 10m0s", ""),
    (
        "network_dependency",
        "requests.exceptions.ConnectionError",
        "HTTPSConnectionPool(host='api.github.com', port=443): Max retries exceeded (Caused by "
        "NewConnectionError('Failed to establish a new connection: [Errno -3] Temporary failure "
        "in name resolution'))",
        "",
    ),
    ("network_dependency", "java.net.SocketTimeoutException", "Read timed out", ""),
    ("network_dependency", "", "Error: connect ECONNREFUSED 127.0.0.1:5432", ""),
    ("network_dependency", "", "AxiosError: Request failed with status code 503", ""),
    ("network_dependency", "", 'Get "http://svc:80/x": dial tcp 10.0.0.1:80: i/o timeout', ""),
    (
        "race_condition",
        "java.util.ConcurrentModificationException",
        "",
        "\tat java.util.ArrayList$Itr.checkForComodification(ArrayList.java:1013)",
    ),
    ("race_condition", "", "WARNING: DATA RACE\nWrite at 0x00c0000a4018 by goroutine 8:", ""),
    ("race_condition", "RuntimeError", "dictionary changed size during iteration", ""),
    ("environment_specific", "", "Error: spawn git ENOENT", ""),
    (
        "environment_specific",
        "UnicodeEncodeError",
        "'charmap' codec can't encode character '\\u2713' in position 0",
        "",
    ),
    (
        "environment_specific",
        "java.lang.UnsatisfiedLinkError",
        "no jniortools in java.library.path",
        "",
    ),
    (
        "order_dependency",
        "org.mockito.exceptions.misusing.UnfinishedStubbingException",
        "Unfinished stubbing detected here:",
        "",
    ),
    ("resource_leak", "OSError", "[Errno 24] Too many open files: '/proc/self/fd'", ""),
    ("resource_leak", "java.lang.OutOfMemoryError", "Java heap space", ""),
    (
        "resource_leak",
        "sqlalchemy.exc.TimeoutError",
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00",
        "",
    ),
    ("time_dependency", "ValueError", "day is out of range for month", ""),
    (
        "time_dependency",
        "org.junit.ComparisonFailure",
        "expected:<2021-03-14T0[2]:30> but was:<2021-03-14T0[3]:30>",
        "",
    ),
    ("time_dependency", "pytz.exceptions.NonExistentTimeError", "2021-03-28 02:30:00", ""),
    ("time_dependency", "AssertionError", "expected 'tomorrow' to equal 'today'", ""),
    ("time_dependency", "", "Expected: Fri, 3 Mar 2023\nActual: Sat, 4 Mar 2023", ""),
    (
        "time_dependency",
        "java.lang.AssertionError",
        'Expected: is "2024-03-31T01:30:00Z"\n     but: was "2024-03-31T02:30:00Z"',
        "",
    ),
    ("time_dependency", "", "expected:<1.70000012E12> but was:<1.70000036E12>", ""),
    ("environment_specific", "", 'Expected: "12.5 %"\n     but: was "12,5 %"', ""),
    ("environment_specific", "", "expected:<1[.]25> but was:<1[,]25>", ""),
    ("environment_specific", "", "Expected: 'line one\\r\\n'\nReceived: 'line one\\n'", ""),
    ("environment_specific", "OSError", "[Errno 30] Read-only file system: 'out.txt'", ""),
    (
        "environment_specific",
        "java.io.FileNotFoundException",
        "/var/cache/report.bin (Permission denied)",
        "",
    ),
    ("network_dependency", "", "listen EADDRINUSE: address already in use :::3000", ""),
    ("network_dependency", "", "Error: ESOCKETTIMEDOUT while fetching the package", ""),
    ("timing_issue", "panic", "called `Result::unwrap()` on an `Err` value: TimedOut", ""),
    ("infrastructure", "", "Process exited with error code 137", ""),
    ("io", "zipfile.BadZipFile", "Truncated file header", ""),
    ("randomness", "", "all 500 generated tokens should be unique, found 499", ""),
    ("floating_point", "AssertionError", "assert 10.000000000000014 <= 10", ""),
    ("floating_point", "", "At index 2 diff: 0.1234567890123 != 0.1234567890124", ""),
    ("floating_point", "", "Assert.Equal() Failure\nExpected: 0.3333333\nActual:   0.3333333", ""),
    (
        "floating_point",
        "",
        "Expected equality of these values:\n  a\n    Which is: 1.2500001\n  b\n"
        "    Which is: 1.2500003",
        "",
    ),
    (
        "unordered_collection",
        "FailTest",
        "not equal:\na = ['x', 'y', 'z']\nb = ['z', 'x', 'y']",
        "",
    ),
    ("too_restrictive_range", "AssertionError", "expected 1.06 to be below 1", ""),
    (  # a runner's own timing line is not a time limit
        "too_restrictive_range",
        "",
        "Expecting actual:\n  0.31\nto be less than:\n  0.3",
        "Tests run: 1, Time elapsed: 0.2 s <<< FAILURE!",
    ),
    ("randomness", "hypothesis.errors.Falsified", "Falsifying example: test_sort(xs=[0, -1])", ""),
    ("randomness", "", 'Property failed after 12 tests\n{ seed: -1810418126, path: "11:0" }', ""),
    (
        "unordered_collection",
        "org.junit.ComparisonFailure",
        'expected:<[{"a":1,"b":2]}> but was:<[{"b":2,"a":1]}>',
        "",
    ),
    (
        "unordered_collection",
        "AssertionError",
        "Lists differ: ['x', 'y', 'z'] != ['y', 'x', 'z']",
        "",
    ),
    (
        "unordered_collection",
        "",
        'Error:      \tNot equal: \n\t            \texpected: []string{"a", "b"}\n'
        '\t            \tactual  : []string{"b", "a"}',
        "",
    ),
    (
        "unordered_collection",
        "java.lang.AssertionError",
        "Actual and expected have the same elements but not in the same order, at index 0 "
        'actual element was:\n  "b"',
        "",
    ),
    ("floating_point", "AssertionError", "assert 0.30000000000000004 == 0.3", ""),
    ("floating_point", "", "Expected: 0.3\nReceived: 0.30000000000000004", ""),
    ("too_restrictive_range", "AssertionError", "0.1 != 0.2 within 7 places (0.1 difference)", ""),
    ("floating_point", "AssertionError", "assert 0.30000000000000004 == 0.3", ""),
    (
        "resource_leak",
        "PermissionError",
        "[WinError 32] The process cannot access the file because it is being used by another"
        " process",
        "",
    ),
    ("too_restrictive_range", "AssertionError", "assert 1050 < 1000", ""),
    (
        "too_restrictive_range",
        "",
        "expect(received).toBeLessThan(expected)\n\nExpected: < 100\nReceived:   104",
        "",
    ),
    ("too_restrictive_range", "AssertionError", "0.5 != 0.3 within 0.1 delta (0.2 difference)", ""),
    (
        "io",
        "FileNotFoundError",
        "[Errno 2] No such file or directory: '/tmp/pytest-of-runner/pytest-3/out.csv'",
        "",
    ),
    ("io", "java.nio.file.FileAlreadyExistsException", "/tmp/junit123/data", ""),
    ("infrastructure", "OSError", "[Errno 28] No space left on device", ""),
    (
        "async_wait",
        "TimeoutError",
        "locator.click: Timeout 30000ms exceeded.\nCall log:\n"
        "  - waiting for getByRole('button', { name: 'Save' })",
        "",
    ),
    (
        "async_wait",
        "org.awaitility.core.ConditionTimeoutException",
        "Condition with lambda expression was not fulfilled within 10 seconds.",
        "",
    ),
    (
        "async_wait",
        "org.openqa.selenium.StaleElementReferenceException",
        "stale element reference: element is not attached to the page document",
        "",
    ),
    (
        "infrastructure",
        "",
        "The forked VM terminated without properly saying goodbye. VM crash or System.exit called?",
        "",
    ),
    (
        "infrastructure",
        "",
        "[gw3] node down: Not properly terminated\nreplacing crashed worker gw3",
        "",
    ),
]


@pytest.mark.parametrize(("category", "error_type", "message", "stack"), TEXT_CASES)
def test_text_alone_names_the_category(
    category: str, error_type: str, message: str, stack: str
) -> None:
    verdict = text(error_type, message, stack)
    assert verdict.category == category, verdict
    assert verdict.confidence >= CONFIDENCE_THRESHOLD
    assert verdict.explanation.endswith(".") and verdict.explanation.count(". ") == 0


def test_every_category_is_reachable() -> None:
    reached = {case[0] for case in TEXT_CASES} | {text("AssertionError", "assert 2 == 3").category}
    assert reached == set(CATEGORIES)


@pytest.mark.parametrize(
    ("error_type", "message", "stack"),
    [
        ("AssertionError", "assert 2 == 3", ""),
        ("java.lang.NullPointerException", "", "\tat com.acme.Foo.bar(Foo.java:10)"),
        ("", "expected:<1> but was:<2>", ""),
        ("", "Expected: true\nReceived: false", ""),
        ("AssertionError", "assert 0 > 0", ""),
        ("AssertionError", "assert 1 > 1", ""),
        ("AssertionError", "assert 9000 < 1000", ""),  # far outside: a wrong value
        ("", "expected:<Order{id=1, on=2024-01-01}> but was:<Order{id=2, on=2024-01-01}>", ""),
        ("", "expected:<1000001> but was:<1000000>", ""),
        # weak hints alone: the word timeout in a name, a random generator, existing state
        (
            "TypeError",
            "Cannot read properties of undefined",
            "    at test_timeout_path (/w/src/a.js:1:2)",
        ),
        (
            "AssertionError",
            "assert 3 == 4",
            '  File "/usr/lib/python3.11/random.py", line 1, in randint',
        ),
        ("IntegrityError", "UNIQUE constraint failed: users.email", ""),
        ("", "", ""),
        # float noise in values far apart; trailing zeros; integers too far apart for a clock
        ("AssertionError", "assert 634.4005240000001 < 500.0", ""),
        ("", "Expected: 0.4000000000000000\nActual: 0.9", ""),
        ("", "expected:<1700000000000> but was:<1700900000000>", ""),
        # words that begin like a weekday or a month are neither
        ("", "Expected: 'Monitor'\nReceived: 'Satellite'", ""),
        ("", "expected:<Market 5> but was:<Decimal 3>", ""),
    ],
)
def test_no_specific_evidence_answers_unknown(error_type: str, message: str, stack: str) -> None:
    verdict = text(error_type, message, stack)
    assert verdict.category == "unknown", verdict
    assert verdict.confidence < CONFIDENCE_THRESHOLD


def test_below_the_threshold_the_answer_is_unknown_with_the_hint_named() -> None:
    failure = "Error: Timeout of 2000ms exceeded."
    assert text(message=failure).category == "timing_issue"
    verdict = classify(Evidence(failures=[Failure(message=failure)]), threshold=0.95)
    assert verdict.category == "unknown"
    assert 0.6 < verdict.confidence < 0.95
    assert "timing issue" in verdict.explanation and "0.95" in verdict.explanation


def test_a_more_specific_rule_overrides_a_generic_one() -> None:
    # a socket read timeout is a network failure, not a test timeout
    assert text("java.net.SocketTimeoutException", "Read timed out").category == (
        "network_dependency"
    )
    # a missing executable is the environment, not a missing file
    assert text(message="Error: spawn docker ENOENT").category == "environment_specific"


def test_conflicting_evidence_lowers_confidence() -> None:
    clear = text(message="Too many open files")
    mixed = text(message="Too many open files\nday is out of range for month")
    assert mixed.confidence < clear.confidence


def test_the_share_of_failures_showing_the_evidence_counts() -> None:
    network = Failure(message="Connection refused")
    all_network = classify(Evidence(failures=[network] * 4))
    some_network = classify(Evidence(failures=[network, PLAIN, PLAIN, PLAIN]))
    assert all_network.category == some_network.category == "network_dependency"
    assert some_network.confidence < all_network.confidence
    assert "1 of 4 failures" in some_network.explanation


def test_the_verdict_is_deterministic() -> None:
    evidence = Evidence(failures=[Failure(message="Connection refused"), PLAIN])
    assert classify(evidence) == classify(evidence)


# --- statistics ----------------------------------------------------------------------------


def test_fisher_matches_the_textbook_values() -> None:
    # Fisher's tea-tasting table: 3 of 4 cups right, one-sided p = 17/70
    assert fisher_greater(3, 1, 1, 3) == pytest.approx(17 / 70)
    assert fisher_greater(4, 0, 0, 4) == pytest.approx(1 / 70)
    assert fisher_greater(0, 4, 4, 0) == pytest.approx(1.0)
    assert fisher_greater(0, 0, 0, 0) == 1.0


def test_holm_adjusts_in_order_and_keeps_monotone() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([]) == []


# --- environment ---------------------------------------------------------------------------


def runs(n: int, failure: Failure = PLAIN) -> list[Failure]:
    return [
        Failure(error_type=failure.error_type, message=failure.message, run_id=f"r{i}")
        for i in range(n)
    ]


def test_failures_on_one_os_are_environment_specific() -> None:
    groups = {"os": {"windows": (6, 8), "linux": (0, 20), "macos": (0, 10)}}
    verdict = classify(Evidence(failures=runs(6), groups=groups))
    assert verdict.category == "environment_specific"
    assert "os windows" in verdict.explanation and "Holm" in verdict.explanation


def test_failures_spread_over_environments_are_not() -> None:
    groups = {"os": {"windows": (2, 10), "linux": (3, 14)}, "runner": {"a": (3, 12), "b": (2, 12)}}
    assert classify(Evidence(failures=runs(5), groups=groups)).category == "unknown"


def test_the_correction_counts_every_value_tested() -> None:
    # One shard failing 3 of 3 against 0 of 7 elsewhere: p = 1/120 alone, significant with
    # one other value tested, not once the rest are spread over seven values (8 x 1/120).
    assert fisher_greater(3, 0, 0, 7) == pytest.approx(1 / 120)
    two = {"shard": {"1": (3, 3), "2": (0, 7)}}
    many = {"shard": {"1": (3, 3), **{str(i): (0, 1) for i in range(2, 9)}}}
    assert classify(Evidence(failures=runs(3), groups=two)).category == "environment_specific"
    assert classify(Evidence(failures=runs(3), groups=many)).category == "unknown"


def test_behaviour_outranks_a_text_hint() -> None:
    groups = {"os": {"windows": (8, 8), "linux": (0, 30)}}
    missing = Failure(message="FileNotFoundError: [Errno 2] No such file or directory: 'a\\b.txt'")
    verdict = classify(Evidence(failures=runs(8, missing), groups=groups))
    assert verdict.category == "environment_specific"


# --- order ---------------------------------------------------------------------------------


def ordered(preceding: tuple[str, ...], n: int) -> list[Failure]:
    return [Failure(message="assert 2 == 3", run_id=f"r{i}", preceding=preceding) for i in range(n)]


def test_failing_only_after_another_test_is_an_order_dependency() -> None:
    evidence = Evidence(
        failures=ordered(("test_a", "test_pollute", "test_b"), 5),
        preceding_when_passed=[("test_a", "test_b")] * 12,
    )
    verdict = classify(evidence)
    assert verdict.category == "order_dependency"
    assert "test_pollute ran before it" in verdict.explanation


def test_failing_only_without_another_test_is_an_order_dependency() -> None:
    evidence = Evidence(
        failures=ordered(("test_a",), 5),
        preceding_when_passed=[("test_setup", "test_a")] * 10,
    )
    verdict = classify(evidence)
    assert verdict.category == "order_dependency"
    assert "test_setup did not run before it" in verdict.explanation


def test_an_order_seen_by_chance_is_not_significant() -> None:
    evidence = Evidence(
        failures=ordered(("test_a", "test_x"), 2),
        preceding_when_passed=[("test_a",), ("test_a", "test_x"), ("test_b",)],
    )
    assert classify(evidence).category == "unknown"


def test_retries_of_one_run_count_once() -> None:
    retries = [Failure(message="x", run_id="r1", preceding=("test_p",))] * 6
    evidence = Evidence(failures=retries, preceding_when_passed=[("test_a",)] * 6)
    assert classify(evidence).category == "unknown"


# --- timeout -------------------------------------------------------------------------------


def test_failing_at_the_timeout_is_a_timing_issue() -> None:
    failures = [Failure(message="Killed", duration_ms=d) for d in (29_500.0, 30_000.0, 5.0)]
    verdict = classify(Evidence(failures=failures, timeout_ms=30_000.0))
    assert verdict.category == "timing_issue"
    assert "2 of 3 failing attempts" in verdict.explanation


def test_failing_far_from_the_timeout_is_not() -> None:
    failures = [Failure(message="x", duration_ms=d) for d in (1_000.0, 26_000.0)]
    assert classify(Evidence(failures=failures, timeout_ms=30_000.0)).category == "unknown"


def test_slow_failures_support_a_timeout_message() -> None:
    failures = [Failure(message="Request timeout", duration_ms=d) for d in (9_000.0, 8_000.0)]
    alone = classify(Evidence(failures=failures))
    slow = classify(Evidence(failures=failures, passing_durations_ms=[900.0, 1_000.0, 1_100.0]))
    quick = classify(Evidence(failures=failures, passing_durations_ms=[8_000.0, 9_500.0, 9_000.0]))
    assert (alone.category, quick.category) == ("unknown", "unknown")
    assert slow.category == "timing_issue"


# --- clusters and history ------------------------------------------------------------------


def test_many_tests_failing_together_are_one_infrastructure_cause() -> None:
    co = [("test_b", 6), ("test_c", 6), ("test_d", 5), ("test_rare", 1)]
    verdict = classify(Evidence(failures=runs(6), co_failing=co, failed_runs=6))
    assert verdict.category == "infrastructure"
    assert verdict.cluster == ("test_b", "test_c", "test_d")


def test_a_cluster_keeps_a_specific_shared_cause() -> None:
    refused = Failure(message="Connection refused")
    co = [("test_b", 4), ("test_c", 4), ("test_d", 4)]
    verdict = classify(Evidence(failures=runs(4, refused), co_failing=co, failed_runs=4))
    assert verdict.category == "network_dependency"
    assert verdict.cluster == ("test_b", "test_c", "test_d")
    assert "3 other test(s) failed in the same runs" in verdict.explanation


def test_occasional_co_failures_are_no_cluster() -> None:
    co = [("test_b", 2), ("test_c", 1), ("test_d", 2)]
    verdict = classify(Evidence(failures=runs(6), co_failing=co, failed_runs=6))
    assert verdict == Verdict("unknown", 0.0, verdict.explanation, ())


def test_a_small_cluster_is_reported_without_a_verdict() -> None:
    verdict = classify(Evidence(failures=runs(4), co_failing=[("test_b", 4)], failed_runs=4))
    assert (verdict.category, verdict.cluster) == ("unknown", ("test_b",))


def test_a_regression_weakens_intermittent_causes() -> None:
    failure = [Failure(message="Connection refused")]
    flaky = classify(Evidence(failures=failure, outcomes=["passed", "failed", "passed", "flaky"]))
    broken = classify(Evidence(failures=failure, outcomes=["passed"] * 5 + ["failed"] * 4))
    assert flaky.category == broken.category == "network_dependency"
    assert broken.confidence < flaky.confidence
    assert "regression" in broken.explanation

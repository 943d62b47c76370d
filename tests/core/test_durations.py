"""Duration estimates: recency, outliers, censoring, fallbacks, calibration, duration files."""

from __future__ import annotations

import json

import pytest
from corpus import DURATIONS

from testlens.core.durations import (
    DEFAULT_MS,
    Calibration,
    Sample,
    calibrate,
    estimate,
    format_test_durations,
    parse_durations,
    predict,
)
from testlens.core.identity import TestKey
from testlens.core.model import ReportError

PYTEST_SPLIT_FILE = DURATIONS / "pgmpy__pgmpy" / "snapshots" / "2024-09-23_ea1dfe8bd3.json"
PARAMS_WITH_COLONS_FILE = (
    DURATIONS / "localstack__localstack" / "snapshots" / "2025-10-08_495604d537.json"
)
KNAPSACK_FILE = (
    DURATIONS / "dfe-digital__npq-registration" / "snapshots" / "2026-08-10_d65ae37b32.json"
)

# Fixed calibration for the unit tests, so that they do not depend on what calibrate learns.
PLAIN = Calibration(half_life=1.5, p90_ratio=1.0)


def runs(*durations: float, censored: tuple[int, ...] = ()) -> list[Sample]:
    """Samples newest first: the first duration has age 0, the next age 1, and so on."""
    return [
        Sample(duration, age=age, censored=age in censored)
        for age, duration in enumerate(durations)
    ]


def key(nodeid: str) -> TestKey:
    return TestKey.from_nodeid(nodeid)


# estimate ------------------------------------------------------------------------------


def test_no_runs_no_estimate():
    assert estimate([]) is None


def test_one_run_is_the_estimate():
    found = estimate(runs(1234.0))
    assert (found.p50_ms, found.p90_ms, found.samples) == (1234.0, 1234.0, 1)
    assert found.source == "history"


def test_recent_runs_outweigh_older_ones():
    history = runs(200, 200, 100, 100, 100, 100, 100)
    assert estimate(history, half_life=1.5).p50_ms == 200
    # With a long half-life the five older runs are the majority again.
    assert estimate(history, half_life=8.0).p50_ms == 100


def test_a_single_outlier_is_outvoted_and_clipped():
    found = estimate(runs(50_000, 100, 102, 98, 101, 99), half_life=1.5)
    assert 98 <= found.p50_ms <= 102
    # The p90 reaches into the outlier's weight, but only up to the MAD bound.
    assert found.p90_ms < 120


def test_two_agreeing_new_runs_are_a_change_not_an_outlier():
    found = estimate(runs(300, 300, 100, 100, 100, 100), half_life=1.5)
    assert found.p50_ms == 300


def test_a_censored_run_raises_the_estimate_but_is_no_sample():
    found = estimate(runs(1000, 100, 100, 100, censored=(0,)), half_life=1.5)
    assert found.samples == 3
    assert found.p50_ms == 100
    assert found.p90_ms == 1000  # at least this long in 44% of the weight


def test_mostly_censored_recent_runs_raise_the_median_to_the_lower_bound():
    found = estimate(runs(1000, 900, 100, 100, censored=(0, 1)), half_life=1.5)
    assert found.samples == 2
    assert found.p50_ms == 1000


def test_a_timeout_shorter_than_usual_changes_nothing():
    usual = runs(100, 110, 90, 105)
    with_timeout = [*usual, Sample(20, age=0.5, censored=True)]
    assert estimate(with_timeout) == estimate(usual)


def test_only_censored_runs_give_their_lower_bound():
    found = estimate([Sample(500, censored=True), Sample(700, age=3, censored=True)])
    assert (found.p50_ms, found.p90_ms, found.samples) == (700, 700, 0)


def test_invalid_samples_are_rejected():
    with pytest.raises(ValueError):
        Sample(-1.0)
    with pytest.raises(ValueError):
        Sample(float("nan"))
    with pytest.raises(ValueError):
        Sample(1.0, age=-1)
    with pytest.raises(ValueError):
        estimate(runs(1.0), half_life=0)


# predict: fallbacks ------------------------------------------------------------------------


HISTORY = {
    key("tests/test_a.py::test_one"): runs(100),
    key("tests/test_a.py::test_two"): runs(300),
    key("tests/test_a.py::test_three"): runs(200),
    key("tests/test_b.py::test_slow"): runs(9000),
    key("tests/test_b.py::test_slower"): runs(11000),
}


def test_a_known_test_uses_its_own_history():
    found = predict([key("tests/test_b.py::test_slow")], HISTORY, calibration=PLAIN)
    assert found[key("tests/test_b.py::test_slow")].source == "history"
    assert found[key("tests/test_b.py::test_slow")].p50_ms == 9000


def test_a_new_test_is_estimated_from_its_file():
    new = key("tests/test_a.py::test_new")
    found = predict([new], HISTORY, calibration=PLAIN)[new]
    assert (found.p50_ms, found.samples, found.source) == (200, 0, "file")
    assert found.p90_ms >= found.p50_ms


def test_a_new_file_is_estimated_from_its_suite_then_the_repo():
    history = {
        TestKey("", "integration", "ApiTest", "get"): runs(4000),
        TestKey("", "integration", "ApiTest", "put"): runs(6000),
        TestKey("", "unit", "MathTest", "add"): runs(10),
    }
    in_suite = TestKey("", "integration", "NewTest", "post")
    elsewhere = TestKey("", "smoke", "PingTest", "ping")
    found = predict([in_suite, elsewhere], history, calibration=PLAIN)
    assert (found[in_suite].source, found[in_suite].p50_ms) == ("suite", 5000)
    assert (found[elsewhere].source, found[elsewhere].p50_ms) == ("repo", 4000)


def test_without_any_history_every_test_gets_the_same_positive_default():
    tests = [key("a.py::x"), key("b.py::y")]
    found = predict(tests, {}, calibration=PLAIN)
    assert {estimate.source for estimate in found.values()} == {"default"}
    assert {estimate.p50_ms for estimate in found.values()} == {DEFAULT_MS}


def test_a_fallback_is_never_zero():
    history = {
        key("zero.py::a"): runs(0),
        key("zero.py::b"): runs(0),
        key("other.py::c"): runs(40),
        key("other.py::d"): runs(0),
    }
    found = predict([key("zero.py::new"), key("new.py::new")], history, calibration=PLAIN)
    # Siblings that took no time are left out: the file has none left, the repo has one.
    assert {(found[test].source, found[test].p50_ms) for test in found} == {("repo", 40)}
    all_zero = predict([key("new.py::new")], {key("zero.py::a"): runs(0)}, calibration=PLAIN)
    assert all_zero[key("new.py::new")].p50_ms == DEFAULT_MS


def test_a_moved_test_keeps_its_history():
    history = {
        key("tests/old/test_x.py::TestX::test_a"): runs(7000),
        key("tests/old/test_x.py::TestX::test_b"): runs(10),
    }
    moved = key("tests/new/test_x.py::TestX::test_a")
    found = predict([moved, key("tests/new/test_x.py::TestX::test_b")], history, calibration=PLAIN)
    assert (found[moved].source, found[moved].p50_ms) == ("history", 7000)


def test_an_ambiguous_move_falls_back_to_siblings():
    history = {
        key("a/test_x.py::test_a"): runs(7000),
        key("b/test_x.py::test_a"): runs(9000),
        key("c/test_x.py::test_b"): runs(10),
    }
    moved = key("c/test_x.py::test_a")
    found = predict([moved, key("c/test_x.py::test_b")], history, calibration=PLAIN)
    assert found[moved].source == "file"


def test_only_the_requested_tests_are_estimated():
    tests = [key("tests/test_a.py::test_one")]
    assert list(predict(tests, HISTORY, calibration=PLAIN)) == tests


def test_the_calibrated_p90_ratio_widens_the_p90():
    found = predict(
        [key("tests/test_a.py::test_one")],
        HISTORY,
        calibration=Calibration(half_life=1.5, p90_ratio=1.25),
    )
    assert found[key("tests/test_a.py::test_one")].p90_ms == 125


# calibrate ------------------------------------------------------------------------------


def _history(pattern) -> dict[TestKey, list[Sample]]:
    """30 tests of different lengths, each following ``pattern(base, age)``."""
    return {
        key(f"tests/test_{index}.py::test"): [
            Sample(pattern(base, age), age=age) for age in range(10)
        ]
        for index, base in enumerate(range(1000, 31000, 1000))
    }


def test_too_short_a_history_keeps_the_defaults():
    assert calibrate(HISTORY) == Calibration()


def test_a_drifting_history_is_predicted_by_its_last_value():
    # Every test gets 15% slower on every run: anything but the newest run lags behind.
    assert calibrate(_history(lambda base, age: base * 0.87**age)).half_life == 1.0


def test_a_noisy_steady_history_is_averaged():
    noise = (1.0, 1.3, 0.8, 1.1, 0.7, 1.2, 0.9, 1.25, 0.85, 1.05)
    calibration = calibrate(_history(lambda base, age: base * noise[(age + base // 1000) % 10]))
    assert calibration.half_life >= 4.0
    assert calibration.p90_ratio > 1.1


# test ids and duration files ---------------------------------------------------------------


def test_node_ids_keep_colons_inside_parameters():
    nodeid = "tests/test_a.py::TestX::Inner::test_y[HOOK-A::B-x.zip]"
    parsed = key(nodeid)
    assert parsed == TestKey("tests/test_a.py", "", "TestX::Inner", "test_y[HOOK-A::B-x.zip]")
    assert parsed.nodeid == nodeid
    assert key("spec/models/user_spec.rb") == TestKey("spec/models/user_spec.rb", "", "", "")


def test_every_corpus_node_id_round_trips():
    ids = json.loads(PARAMS_WITH_COLONS_FILE.read_text())
    assert [key(nodeid).nodeid for nodeid in ids] == list(ids)


def test_a_junit_test_without_file_is_located_by_its_class():
    assert TestKey("", "suite", "com.acme.FooTest", "bar").location == "com.acme.FooTest"


def test_parse_pytest_split_durations_from_the_corpus():
    raw = json.loads(PYTEST_SPLIT_FILE.read_text())
    parsed = parse_durations(PYTEST_SPLIT_FILE.read_bytes())
    assert len(parsed) == len(raw) == 1196
    nodeid = "pgmpy/tests/test_base/test_DAG.py::TestDAGCreation::test_add_edge_string"
    test = TestKey(
        "pgmpy/tests/test_base/test_DAG.py", "", "TestDAGCreation", "test_add_edge_string"
    )
    assert parsed[test] == pytest.approx(raw[nodeid] * 1000)


def test_parse_knapsack_report_from_the_corpus():
    raw = json.loads(KNAPSACK_FILE.read_text())
    parsed = parse_durations(KNAPSACK_FILE.read_text())
    assert len(parsed) == len(raw) == 488
    assert all(test.classname == test.name == "" for test in parsed)
    path = "spec/models/financial_change_log_spec.rb"
    assert parsed[TestKey(path, "", "", "")] == pytest.approx(raw[path] * 1000)


def test_written_test_durations_read_back_as_pytest_split_reads_them():
    parsed = parse_durations(PYTEST_SPLIT_FILE.read_bytes())
    text = format_test_durations(parsed)
    raw = json.loads(PYTEST_SPLIT_FILE.read_text())
    assert json.loads(text) == pytest.approx(raw)
    assert list(json.loads(text)) == sorted(raw)
    assert text.startswith('{\n    "pgmpy/')


def test_parse_the_early_list_form_of_pytest_split():
    assert parse_durations('[["a.py::test_x", 1.5]]') == {key("a.py::test_x"): 1500.0}


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        b"\xff\xfe",
        "42",
        '{"a.py::x": -1}',
        '{"a.py::x": true}',
        '{"a.py::x": "1.0"}',
        '{"": 1.0}',
        '[["a.py::x"]]',
    ],
)
def test_unreadable_duration_files_are_rejected(data):
    with pytest.raises(ReportError):
        parse_durations(data)

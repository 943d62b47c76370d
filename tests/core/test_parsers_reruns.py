"""pytest-rerunfailures' reruns in pytest's JUnit XML, as the real plugin writes them.

Since 16.6.1 the plugin leaves each rerun in the report as a bare ``<testcase>`` before the
final attempt's entry; the JUnit parser reads those as failed attempts (see its module
docstring for when, and when not). The reports come from ``tests/data/rerunfailures``: the
checked-in ones pin what known versions wrote, and one test runs the generator with the
installed versions, so a plugin release that changes its output fails here.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from testlens.core.model import Report, TestCase
from testlens.core.parsers import parse_report
from testlens.core.parsers.junit import RERUN_NOT_RECORDED

DATA = Path(__file__).resolve().parents[1] / "data" / "rerunfailures"
GENERATOR = DATA / "generate.py"
MODULE = "test_reruns"  # the classname pytest gives the generated module's tests
# What each checked-in report holds: bare rerun entries, or only each test's final attempt.
REPORTS = {
    "rerun-16.7.xml": "bare reruns",
    "rerun-16.7-xunit1.xml": "bare reruns",
    "rerun-16.6.xml": "final attempt only",
    "rerun-16.6-xunit1.xml": "final attempt only",
}


def parse_text(xml: str) -> list[TestCase]:
    return parse_report(xml.encode(), format="junit").tests


def by_name(report: Report) -> dict[str, TestCase]:
    """Tests keyed by ``name``, or ``Class::name`` for the generated project's class."""
    tests = {}
    for test in report.tests:
        cls = test.classname.removeprefix(MODULE).lstrip(".")
        tests[f"{cls}::{test.name}" if cls else test.name] = test
    assert len(tests) == len(report.tests)
    return tests


def statuses(test: TestCase) -> list[str]:
    return [attempt.status for attempt in test.attempts]


def check_bare_reruns(report: Report, xunit1: bool) -> None:
    """The generated project's outcomes, read from a report with bare rerun entries."""
    tests = by_name(report)
    flaky = tests["test_fails_once"]
    assert statuses(flaky) == ["failed", "passed"]
    assert flaky.status == "flaky"
    assert [a.message for a in flaky.attempts] == [RERUN_NOT_RECORDED, None]

    always = tests["test_always_fails"]
    assert statuses(always) == ["failed"] * 4  # the first run and 3 reruns
    assert always.status == "failed"
    assert [a.message for a in always.attempts[:3]] == [RERUN_NOT_RECORDED] * 3
    assert always.attempts[3].message == "AssertionError: fails on every run\nassert False"
    assert "fails on every run" in (always.attempts[3].stack or "")
    assert not any(a.stack for a in always.attempts[:3])  # nothing is made up

    setup = tests["test_setup_fails_once"]  # a failing fixture is rerun the same way
    assert (statuses(setup), setup.status) == (["failed", "passed"], "flaky")

    assert statuses(tests["test_passes"]) == ["passed"]
    assert tests["test_passes"].attempts[0].message is None
    assert statuses(tests["test_skipped"]) == ["skipped"]
    # Same name as the flaky test, another class: another test, never one of its attempts.
    assert statuses(tests["TestOther::test_fails_once"]) == ["passed"]

    summary = report.summary()
    assert (summary.tests, summary.attempts) == (6, 11)
    assert (summary.passed, summary.failed, summary.flaky, summary.skipped) == (2, 1, 2, 1)
    if xunit1:
        # junit_family=xunit1 adds file; junit_logging=all gives reruns output of their own.
        assert {t.file for t in report.tests} == {"test_reruns.py"}
        assert "fails_once stdout" in (flaky.attempts[0].stdout or "")
    else:
        assert {t.file for t in report.tests} == {""}


def check_final_attempt_only(report: Report) -> None:
    """Before 16.6.1 a rerun test has one entry, for its last attempt; nothing to reread."""
    tests = by_name(report)
    assert all(len(test.attempts) == 1 for test in report.tests)
    assert not any(a.message == RERUN_NOT_RECORDED for t in report.tests for a in t.attempts)
    assert tests["test_fails_once"].status == "passed"  # its failed run left no trace
    assert tests["test_always_fails"].status == "failed"
    assert report.summary().attempts == 6


def check(report: Report, form: str, xunit1: bool) -> None:
    assert report.format == "junit"
    if form == "bare reruns":
        check_bare_reruns(report, xunit1)
    else:
        check_final_attempt_only(report)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_checked_in_reports(name: str) -> None:
    report = parse_report((DATA / name).read_bytes())
    check(report, REPORTS[name], xunit1=name.endswith("-xunit1.xml"))


def test_every_checked_in_report_is_tested() -> None:
    assert sorted(p.name for p in DATA.glob("*.xml")) == sorted(REPORTS)


def test_reports_written_by_the_installed_plugin(tmp_path: Path) -> None:
    """Run the generator now, with this interpreter's pytest and pytest-rerunfailures."""
    done = subprocess.run(
        [sys.executable, str(GENERATOR), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = sorted(tmp_path.glob("rerun-*.xml"))
    assert [Path(line).name for line in done.stdout.split()] == [
        f"rerun-{version('pytest-rerunfailures')}.xml",
        f"rerun-{version('pytest-rerunfailures')}-xunit1.xml",
    ]
    assert len(written) == 2
    installed = Version(version("pytest-rerunfailures"))
    form = "bare reruns" if installed >= Version("16.6.1") else "final attempt only"
    for path in written:
        check(parse_report(path.read_bytes()), form, xunit1=path.name.endswith("-xunit1.xml"))


# --- where bare repeats are not reruns -------------------------------------------------------


def test_repeats_the_writer_counted_are_passes() -> None:
    """jest's same-titled tests, TestNG data providers, go test -count: counted, so real."""
    for suite in ('<testsuite name="s" tests="3">', '<testsuite name="s">'):
        tests = parse_text(f"""{suite}<testcase name="t"/><testcase name="t"/>
            <testcase name="t"><failure message="boom"/></testcase></testsuite>""")
        assert [statuses(t) for t in tests] == [["passed", "passed", "failed"]]


def test_a_count_below_the_distinct_tests_is_no_evidence() -> None:
    """``tests="0"`` (writers that do not count) cannot be telling reruns apart."""
    tests = parse_text("""<testsuite name="s" tests="0"><testcase name="t"/>
        <testcase name="t"/></testsuite>""")
    assert [statuses(t) for t in tests] == [["passed", "passed"]]


def test_too_small_a_shortfall_rereads_nothing() -> None:
    """One entry left uncounted (a hand-edited total) does not make two entries reruns."""
    tests = parse_text("""<testsuite name="s" tests="3"><testcase name="t"/>
        <testcase name="t"/><testcase name="t"/><testcase name="u"/></testsuite>""")
    assert [statuses(t) for t in tests] == [["passed"] * 3, ["passed"]]


def test_reruns_are_counted_per_suite_element() -> None:
    """Two runs merged into one file: reruns are looked for within each suite element, so
    the first run's pass stays a pass while the second run's bare rerun is reread."""
    tests = parse_text("""<testsuites>
        <testsuite name="pytest" tests="1"><testcase classname="m" name="t"/></testsuite>
        <testsuite name="pytest" tests="1"><testcase classname="m" name="t"/>
          <testcase classname="m" name="t"><failure message="boom"/></testcase></testsuite>
      </testsuites>""")
    test = tests[0]
    assert len(tests) == 1
    assert statuses(test) == ["passed", "failed", "failed"]
    assert [a.message for a in test.attempts] == [None, RERUN_NOT_RECORDED, "boom"]


def test_identity_includes_classname_and_file() -> None:
    tests = parse_text("""<testsuite name="pytest" tests="3">
        <testcase classname="A" name="t"/><testcase classname="B" name="t"/>
        <testcase classname="A" name="t" file="a.py"/>
        <testcase classname="A" name="t"><failure message="boom"/></testcase>
        <testcase classname="A" name="t" file="a.py"/>
      </testsuite>""")
    got = {(t.file, t.classname): statuses(t) for t in tests}
    assert got == {
        ("", "A"): ["failed", "failed"],
        ("", "B"): ["passed"],
        ("a.py", "A"): ["failed", "passed"],
    }


def test_interleaved_reruns_are_found() -> None:
    """With pytest-xdist, other tests' entries can come between a test's attempts."""
    tests = parse_text("""<testsuite name="pytest" tests="2">
        <testcase name="a"/><testcase name="b"/>
        <testcase name="a"><failure message="boom"/></testcase><testcase name="b"/>
      </testsuite>""")
    assert {t.name: statuses(t) for t in tests} == {
        "a": ["failed", "failed"],
        "b": ["failed", "passed"],
    }


def test_entries_with_results_keep_them_beside_bare_reruns() -> None:
    """A rerun whose teardown failed carries its own ``<error>``; skips and never-run
    markers are not passes; the last entry is the final attempt, bare or not."""
    tests = parse_text("""<testsuite name="pytest" tests="3">
        <testcase name="t" time="0.5"/>
        <testcase name="t"><error message="teardown broke"/></testcase>
        <testcase name="t"><system-out>rerun output</system-out></testcase>
        <testcase name="t"/>
        <testcase name="s"><skipped/></testcase><testcase name="s" status="notrun"/>
        <testcase name="s"/>
        <testcase name="n"/>
      </testsuite>""")
    got = {t.name: t for t in tests}
    t = got["t"]
    assert statuses(t) == ["failed", "error", "failed", "passed"]
    assert [a.message for a in t.attempts] == [
        RERUN_NOT_RECORDED,
        "teardown broke",
        RERUN_NOT_RECORDED,
        None,
    ]
    assert (t.attempts[0].duration_ms, t.attempts[2].stdout) == (500.0, "rerun output")
    assert statuses(got["s"]) == ["skipped", "skipped", "passed"]
    assert statuses(got["n"]) == ["passed"]


def test_per_attempt_results_and_surefire_reruns_where_the_count_falls_short() -> None:
    """Entries that record their own results (older per-attempt form, Surefire's rerun
    children) read as they always did, even in a suite whose count leaves some out."""
    tests = parse_text("""<testsuite name="s" tests="2">
        <testcase classname="C" name="t"><failure message="first"/></testcase>
        <testcase classname="C" name="t"><error message="second"/></testcase>
        <testcase classname="C" name="t"/>
        <testcase classname="C" name="f"><flakyFailure message="flaky"/></testcase>
        <testcase classname="C" name="f"><rerunFailure message="again"/><failure/></testcase>
      </testsuite>""")
    got = {t.name: t for t in tests}
    assert statuses(got["t"]) == ["failed", "error", "passed"]
    assert [a.message for a in got["t"].attempts] == ["first", "second", None]
    assert statuses(got["f"]) == ["failed", "passed", "failed", "failed"]
    assert RERUN_NOT_RECORDED not in [a.message for t in tests for a in t.attempts]

"""Parse throughput: testlens vs junitparser vs bare lxml (the floor), side by side.

    python benchmarks/parse.py [--repeat N]

Prints test cases per second on a generated 100k-testcase JUnit file and on the largest
real JUnit reports of the corpus. "floor" is ``lxml.etree.fromstring`` of the same bytes:
no parser built on lxml can beat it, so testlens is scored as a multiple of it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import junitparser
from lxml import etree

from testlens.core.parsers import parse_report

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("TESTLENS_CORPUS", ROOT.parent / "shared" / "corpus")) / "reports"
REAL_REPORTS = [
    "test-reporter/__tests__/fixtures/external/jest/jest-test-results.xml",
    "test-reporter/__tests__/fixtures/external/java/pulsar-test-report.xml",
    "action-junit-report/test_results/tests/utils/target/surefire-reports/"
    "TEST-action.surefire.report.calc.StringUtilsTest.xml",
]


def generated_junit(cases: int = 100_000, per_suite: int = 500) -> bytes:
    """A realistic JUnit file: suites of ``per_suite`` cases, 5% failures, 2% skips."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n']
    for s in range(cases // per_suite):
        parts.append(f'<testsuite name="pkg.module{s}.TestSuite" tests="{per_suite}">\n')
        for c in range(per_suite):
            n = s * per_suite + c
            attrs = (
                f'classname="pkg.module{s}.TestSuite" name="test_case_{c}[param-{n % 7}]" '
                f'file="tests/module{s}/test_suite.py" time="{(n % 97) / 100:.3f}"'
            )
            if n % 20 == 0:
                parts.append(
                    f'<testcase {attrs}><failure message="assert {n} == {n + 1}" '
                    f'type="AssertionError">Traceback line {n}\nAssertionError</failure>'
                    "<system-out>some output</system-out></testcase>\n"
                )
            elif n % 50 == 1:
                parts.append(f'<testcase {attrs}><skipped message="not on linux"/></testcase>\n')
            else:
                parts.append(f"<testcase {attrs}/>\n")
        parts.append("</testsuite>\n")
    parts.append("</testsuites>\n")
    return "".join(parts).encode()


def floor(data: bytes) -> int:
    root = etree.fromstring(data)
    return sum(1 for _ in root.iter("testcase"))


def testlens(data: bytes) -> int:
    return sum(len(t.attempts) for t in parse_report(data).tests)


def junitparser_read(data: bytes) -> int:
    """Read with junitparser the same facts testlens extracts from every case."""
    xml = junitparser.JUnitXml.fromstring(data)
    suites = [xml] if isinstance(xml, junitparser.TestSuite) else list(xml)
    count = 0
    while suites:
        suite = suites.pop()
        suites.extend(suite.iterchildren(junitparser.TestSuite))
        for case in suite:
            _ = (
                case.name,
                case.classname,
                case.time,
                case._elem.get("file"),
                case.system_out,
                case.system_err,
            )
            for result in case.result:
                _ = (result.message, result.type, result.text)
            count += 1
    return count


def best_time(fn: Callable[[bytes], int], data: bytes, repeat: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn(data)
        times.append(time.perf_counter() - start)
    return min(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    inputs = [("generated 100k testcases", generated_junit())]
    for rel in REAL_REPORTS:
        path = CORPUS / rel
        if not path.is_file():
            sys.exit(f"corpus report missing: {path}")
        inputs.append((path.name, path.read_bytes()))
    header = (
        f"{'input':<52} {'cases':>7} {'floor c/s':>11} {'testlens c/s':>13} "
        f"{'junitparser c/s':>16} {'tl/floor':>9} {'tl vs jp':>9}"
    )
    print(header)
    print("-" * len(header))
    ratios, speedups = [], []
    for name, data in inputs:
        repeat = args.repeat if len(data) > 1_000_000 else args.repeat * 20
        t_floor, cases = best_time(floor, data, repeat)
        t_tl, _ = best_time(testlens, data, repeat)
        t_jp, _ = best_time(junitparser_read, data, repeat)
        ratios.append(t_tl / t_floor)
        speedups.append(t_jp / t_tl)
        print(
            f"{name[:52]:<52} {cases:>7} {cases / t_floor:>11,.0f} {cases / t_tl:>13,.0f} "
            f"{cases / t_jp:>16,.0f} {t_tl / t_floor:>8.2f}x {t_jp / t_tl:>8.1f}x"
        )
    print(
        f"\ntestlens time / floor: worst {max(ratios):.2f}x (target <= 2x); "
        f"speed-up over junitparser: worst {min(speedups):.1f}x, "
        f"median {statistics.median(speedups):.1f}x (target >= 5x)"
    )


if __name__ == "__main__":
    main()
